"""The two Keras callbacks of the training protocol: keep the best epoch's weights, and score
training images in inference mode after every epoch.

Backend-agnostic Keras 3 (no TensorFlow calls). Explained in notebooks/03_resnet50.
"""

from __future__ import annotations

import keras
import numpy as np


class KeepBestEpoch(keras.callbacks.Callback):
    """Remember the weights of the best epoch and restore them when training ends.

    Best = highest val_accuracy, ties broken by lower val_loss. With 100 validation images
    accuracy moves in steps of 0.01, so ties are common and the loss decides.
    """

    def __init__(self, restore: bool = True):
        super().__init__()
        self.restore = restore
        self.best_key = None
        self.best_epoch = None
        self.best_weights = None
        self.last_weights = None

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
    accuracy as ``train_inference_loss`` and ``train_inference_accuracy``.

    Keras' own ``loss`` and ``accuracy`` are averages over the epoch in training mode; when
    they part from these, the model is not what training reports. Explained in
    notebooks/03_resnet50.
    """

    def __init__(self, inputs: np.ndarray, labels: np.ndarray, batch_size: int):
        super().__init__()
        self.inputs, self.labels, self.batch_size = inputs, np.asarray(labels), batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        from cxr_utils.training import predict_in_batches

        probabilities = predict_in_batches(self.model, self.inputs, self.batch_size).reshape(-1)
        from cxr_utils.metrics import binary_cross_entropy

        logs["train_inference_loss"] = float(binary_cross_entropy(self.labels, probabilities).mean())
        logs["train_inference_accuracy"] = float(np.mean((probabilities >= 0.5) == (self.labels == 1)))
