"""The Keras callbacks of the training protocol: keep the best epoch's weights, and score
training images in inference mode after every epoch. This project's diagnosis of unsteady
validation: the same weights scored again with recomputed BatchNorm statistics after every epoch
(``PairedBatchNormCheck``; training unchanged). And its remedy (book/remedy.md), off by default:
recompute the BatchNorm moving statistics before every evaluation. Backend-agnostic Keras 3 (no
TensorFlow calls). Explained in notebooks/03_resnet50.
"""

from __future__ import annotations

import keras
import numpy as np

from cxr_utils.config import PAIRED_CHECK_COLUMNS
from cxr_utils.inference import predict_in_batches
from cxr_utils.metrics import binary_cross_entropy


class KeepBestEpoch(keras.callbacks.Callback):
    """Remember the weights of the best epoch and restore them when training ends.

    Best = highest val_accuracy, ties broken by lower val_loss. With 100 validation images
    accuracy moves in steps of 0.01, so ties are common and the loss decides.
    """

    def __init__(self, restore: bool = True):
        super().__init__()
        self.restore = restore
        self.best_key = self.best_epoch = self.best_weights = self.last_weights = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        key = (logs["val_accuracy"], -logs["val_loss"])
        if self.best_key is None or key > self.best_key:
            self.best_key, self.best_epoch = key, epoch + 1
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        self.last_weights = self.model.get_weights()
        if self.restore and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class InferenceModeCheck(keras.callbacks.Callback):
    """After every epoch, score some training images in inference mode (dropout off, BatchNorm
    on its moving statistics: the model the validation and test sets see) and log the loss and
    accuracy as ``train_inference_loss`` and ``train_inference_accuracy``. Keras' own ``loss`` and
    ``accuracy`` are averages over the epoch in training mode; when they part from these, the
    model is not what training reports. Explained in notebooks/03_resnet50.
    """

    def __init__(self, inputs: np.ndarray, labels: np.ndarray, batch_size: int):
        super().__init__()
        self.inputs, self.labels, self.batch_size = inputs, np.asarray(labels), batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        probabilities = predict_in_batches(self.model, self.inputs, self.batch_size).reshape(-1)
        logs["train_inference_loss"] = float(binary_cross_entropy(self.labels, probabilities).mean())
        logs["train_inference_accuracy"] = float(np.mean((probabilities >= 0.5) == (self.labels == 1)))


# -- precise BatchNorm statistics (this project's remedy, not the paper's: book/remedy.md) -------


def _sublayers(model) -> list:
    found, seen, stack = [], set(), [model]
    while stack:
        for sub in getattr(stack.pop(), "layers", []):
            if id(sub) not in seen:
                seen.add(id(sub))
                found.append(sub)
                stack.append(sub)
    return found


def batchnorm_layers(model) -> list:
    """The BatchNormalization layers of ``model`` (nested models included) whose moving statistics
    training updates: the trainable ones. A frozen BatchNorm layer (a frozen backbone's) keeps its
    statistics in training as in inference, so there is nothing to recompute for it."""
    return [layer for layer in _sublayers(model)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def batchnorm_momentum(model) -> float | list[float] | None:
    """The momentum of ``model``'s BatchNormalization layers, as its run record states it: one
    number when they agree (0.9 from scratch, this project's choice; Keras' 0.99 otherwise), the
    sorted distinct values when they do not, None for a model without BatchNorm (the LSTM)."""
    momenta = sorted({float(layer.momentum) for layer in _sublayers(model)
                      if isinstance(layer, keras.layers.BatchNormalization)})
    return momenta[0] if len(momenta) == 1 else (momenta or None)


def recompute_batchnorm_statistics(model, images: np.ndarray, batch_size: int = 32) -> int:
    """Replace every trainable BatchNormalization layer's moving mean and variance by their
    average over ``images`` ("precise BN"); returns how many layers were recomputed (0: a model
    without such layers, e.g. the LSTM, or a frozen backbone's head: nothing changes).

    The images pass through ``model`` in training mode, ``batch_size`` at a time, so each layer
    sees what it sees in training (the batch's own mean and biased variance). Each layer's
    momentum is set so that after batch k its moving statistics are the average of the first k
    batches' statistics, each weighted by its number of images (momentum (k-1)/k when batches are
    equal), then restored. Dropout is off during these passes (rate 0, then restored): a BatchNorm
    after a Dropout gets the statistics it sees in inference; one before it (every model here: the
    Dropout sits in the head) is unaffected. Weights are untouched: trainable variables cannot
    change in a forward pass, and every other non-trainable variable (random seed states included)
    is put back bit for bit. Run eagerly. ``cxr_utils.remedy`` compares runs with and
    without it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    layers = batchnorm_layers(model)
    if not layers or len(images) == 0:
        return 0
    renorm = [layer.name for layer in layers if getattr(layer, "renorm", False)]
    if renorm:
        raise ValueError(f"BatchNormalization with renorm=True is not supported: {', '.join(renorm)}")
    statistics = {id(v) for layer in layers for v in (layer.moving_mean, layer.moving_variance)}
    others = [v for v in model.non_trainable_variables if id(v) not in statistics]
    kept_values = [keras.ops.convert_to_numpy(v.value).copy() for v in others]
    momenta = [layer.momentum for layer in layers]
    noise = [layer for layer in _sublayers(model) if isinstance(layer, keras.layers.Dropout)]
    rates = [layer.rate for layer in noise]
    try:
        for layer in noise:
            layer.rate = 0.0
        for layer in layers:  # a fresh start: momentum 0 at the first batch ignores these anyway
            layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, layer.moving_mean.dtype))
            layer.moving_variance.assign(np.ones(layer.moving_variance.shape, layer.moving_variance.dtype))
        seen = 0
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start : start + batch_size], dtype="float32")
            for layer in layers:
                layer.momentum = seen / (seen + len(batch))
            model(batch, training=True)
            seen += len(batch)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        for layer, rate in zip(noise, rates):
            layer.rate = rate
        for variable, value in zip(others, kept_values):
            if not np.array_equal(keras.ops.convert_to_numpy(variable.value), value):
                variable.assign(value)
    return len(layers)


class RecomputeBatchNorm(keras.callbacks.Callback):
    """Before every evaluation in ``fit`` (each epoch's validation: Keras 3's ``fit`` calls
    ``evaluate`` with its callbacks, which calls ``on_test_begin`` first), recompute the
    BatchNorm moving statistics from ``images`` (``recompute_batchnorm_statistics``).

    Training itself is unchanged: in training mode BatchNorm uses each batch's own statistics.
    ``KeepBestEpoch`` snapshots the weights at the epoch's end, after validation, so the kept (and
    the last) epoch's snapshot holds the recomputed statistics the validation used;
    ``InferenceModeCheck`` scores with them too. This project's option
    (``TrainingConfig.recompute_batchnorm_images``), not the paper's protocol.
    """

    def __init__(self, images: np.ndarray, batch_size: int):
        super().__init__()
        self.images, self.batch_size = images, batch_size
        self.layers_recomputed = 0

    def on_test_begin(self, logs=None):
        self.layers_recomputed = recompute_batchnorm_statistics(self.model, self.images, self.batch_size)


class PairedBatchNormCheck(keras.callbacks.Callback):
    """After every epoch, score the same weights a second way: BatchNorm statistics recomputed
    from ``statistics_images`` instead of the moving ones, on the validation images and on the
    training images of ``InferenceModeCheck``; log ``val_accuracy_recomputed`` and
    ``train_inference_accuracy_recomputed``. Then every weight and statistic is put back, so
    training goes on exactly as without this callback: the pair differs in the statistics alone,
    what a diagnosis of the moving statistics needs. A no-op without trainable BatchNorm. The
    paper's model selection (``KeepBestEpoch``) keeps using ``val_accuracy``, the moving
    statistics' figure. Explained in notebooks/03_resnet50.
    """

    LOGS = PAIRED_CHECK_COLUMNS

    def __init__(self, statistics_images: np.ndarray, train: tuple, val: tuple, batch_size: int):
        super().__init__()
        self.statistics_images, self.batch_size = statistics_images, batch_size
        self.parts = {"val_accuracy_recomputed": (val[0], np.asarray(val[1])),
                      "train_inference_accuracy_recomputed": (train[0], np.asarray(train[1]))}

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not batchnorm_layers(self.model):
            return
        kept = self.model.get_weights()
        try:
            recompute_batchnorm_statistics(self.model, self.statistics_images, self.batch_size)
            for name, (inputs, labels) in self.parts.items():
                if len(inputs) == 0:  # no training images checked (inference_check_images=0)
                    continue
                probabilities = predict_in_batches(self.model, inputs, self.batch_size).reshape(-1)
                logs[name] = float(np.mean((probabilities >= 0.5) == (labels == 1)))
        finally:
            self.model.set_weights(kept)
