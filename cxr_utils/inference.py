"""A model's outputs for a stack of images, a batch at a time: what training's callbacks, the
feature cache, the test predictions and the extended set all call. NumPy in, NumPy out; it
imports no deep-learning framework, so the light modules that use it stay light."""

from __future__ import annotations

import numpy as np


def predict_in_batches(model, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Run a Keras ``model`` over ``inputs`` with ``predict_on_batch`` (steadier than ``predict`` on CPU).

    A last, shorter batch is padded with zeros to ``batch_size`` and the padding's outputs are
    dropped: in inference each image's output depends on that image alone, and one batch shape
    means one traced graph. A new shape would trace ResNet50 again (about a second on a CPU;
    an XLA compilation of several seconds on JAX).
    """
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        n = len(batch)
        if n < batch_size and len(inputs) > batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
        # Keras 3 returns NumPy from predict_on_batch on every backend.
        outputs.append(np.asarray(model.predict_on_batch(batch))[:n])
    return np.concatenate(outputs).astype(np.float32)


def predict_probabilities(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """P(COVID) for each image, as a flat float array."""
    return predict_in_batches(model, images, batch_size).reshape(-1)
