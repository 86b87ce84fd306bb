"""The paper's training protocol (``config.PROTOCOL``): Adam, binary cross-entropy, best epoch kept.

``train_model`` fits a model with the optimiser, loss and metrics it was compiled with (the
paper's, ``compile_for_training``, when it comes uncompiled) and keeps the epoch with the best
validation accuracy (ties: lower validation loss), the paper's model selection (section 3.1). A
model whose ResNet50 backbone is frozen is trained on the fast path: the backbone's features are
computed once per image and the head is fitted on them. That is the same model, with the same
weights and the same predictions as running the frozen backbone on every image in every epoch
(tests/test_training.py checks it), at a fraction of the cost.

A model chapter takes the steps one cell at a time: build, ``compile``,
``experiment.prepare_inputs``, ``train_model``, ``predict_probabilities``, ``save_experiment``;
``run_experiment`` takes them in one call, from a split DataFrame to a results folder holding
history.csv, predictions.csv, metrics.json, model.keras and run.json. Explained in
notebooks/03_resnet50.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from cxr_utils import config as facts
from cxr_utils import experiment, extended_set, gradcam, models, runtime
from cxr_utils.callbacks import (
    InferenceModeCheck, KeepBestEpoch, PairedBatchNormCheck, RecomputeBatchNorm, batchnorm_layers,
    recompute_batchnorm_statistics,
)
from cxr_utils.claims import NO_BATCHNORM, RECOMPUTED
from cxr_utils.config import PROTOCOL
from cxr_utils.inference import predict_in_batches, predict_probabilities  # noqa: F401  (chapters call training.predict_probabilities)

HISTORY_COLUMNS = [*facts.HISTORY_COLUMNS, "is_best"]
INFERENCE_COLUMNS = ("train_inference_loss", "train_inference_accuracy")  # InferenceModeCheck
BATCHNORM_CHECK_COLUMNS = PairedBatchNormCheck.LOGS


@dataclasses.dataclass
class TrainingConfig:
    """The paper's protocol (``config.PROTOCOL``) unless overridden."""

    epochs: int = PROTOCOL.epochs
    batch_size: int = PROTOCOL.batch_size
    learning_rate: float = PROTOCOL.learning_rate  # for a model train_model gets uncompiled
    seed: int = PROTOCOL.seed
    mixed_precision: bool | str = "auto"  # "auto": on when a GPU is present
    progress: bool = True
    # The project's choice, not the paper's: section 3.1 reports the best epoch's figures but
    # does not say the test used that epoch's weights. True restores them before testing; the
    # last epoch's test predictions are kept beside (predictions.csv) either way.
    restore_best: bool = facts.CHOICES.restore_best
    # How many training images (a seeded subset) are scored in inference mode after every epoch
    # (callbacks.InferenceModeCheck), beside Keras' training-mode figures (dropout on, BatchNorm
    # on batch statistics): where the two part, the test does not see what training reports.
    inference_check_images: int = facts.CHOICES.inference_check_images
    # This project's remedy for unsteady validation (book/remedy.md); 0, the default, is the paper's protocol.
    # N > 0: before every validation, BatchNorm's moving statistics are recomputed from N seeded
    # training images (callbacks.RecomputeBatchNorm, "precise BN"); the weights are untouched. A
    # no-op for models with no trainable BatchNorm: the LSTM, and a frozen backbone's head.
    recompute_batchnorm_images: int = facts.CHOICES.recompute_batchnorm_images
    # This project's diagnosis (callbacks.PairedBatchNormCheck): after every epoch, the same weights
    # scored again with BatchNorm statistics recomputed from CHOICES.fit_batchnorm_images training
    # images; training is unchanged. Skipped with the remedy on (its statistics are recomputed already).
    batchnorm_check: bool = facts.CHOICES.batchnorm_check

    def __post_init__(self):
        facts.check_parameters({name: getattr(self, name) for name in
                                ("epochs", "batch_size", "inference_check_images", "recompute_batchnorm_images")})
        if not self.learning_rate > 0:
            raise facts.ParameterError(f"learning_rate must be positive, not {self.learning_rate!r}")


@dataclasses.dataclass
class TrainingResult:
    model: keras.Model
    history: pd.DataFrame
    best_epoch: int
    fast_path: bool
    wall_time_s: float
    features_s: float = 0.0  # of wall_time_s, the backbone's one pass (fast path only)
    fitted: keras.Model | None = None  # what fit trained: the model, or its head on the fast path
    last_epoch_weights: list | None = None  # ``fitted``'s weights after the last epoch
    compiled: dict | None = None  # what fit trained with (``compiled_with``)

    @property
    def best_row(self) -> pd.Series:
        """The best epoch's losses and accuracies: this run's row of the paper's Table 2."""
        return self.history.loc[self.history["is_best"]].iloc[0]

    @contextlib.contextmanager
    def last_epoch(self):
        """Inside the block the model holds its last epoch's weights; afterwards, what it held."""
        kept = self.fitted.get_weights()
        self.fitted.set_weights(self.last_epoch_weights)
        try:
            yield self.model
        finally:
            self.fitted.set_weights(kept)


def compile_for_training(model: keras.Model, learning_rate: float = PROTOCOL.learning_rate,
                         **compile_options) -> keras.Model:
    """Compile with the paper's optimiser and loss; ``compile_options`` go to ``model.compile``
    (``jit_compile``, ``steps_per_execution``: the benchmarks try them). The chapters write the
    same call out in their compile cell."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
        **compile_options,
    )
    return model


def compiled_with(model: keras.Model) -> dict:
    """The optimiser (its class), its learning rate and the loss ``model`` is compiled with, as
    run.json records them (the learning rate as float32 holds it, written shortest: 0.001)."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # mixed precision wraps it
    rate = float(str(np.float32(keras.ops.convert_to_numpy(optimizer.learning_rate))))
    loss = model.loss
    if not isinstance(loss, str):  # a Loss object, or a function
        loss = getattr(loss, "name", None) or getattr(loss, "__name__", type(loss).__name__)
    return {"optimizer": type(optimizer).__name__, "learning_rate": rate, "loss": loss}


def _compile(fitted: keras.Model, model: keras.Model, config: TrainingConfig) -> None:
    # The chapter's compile, when there is one; on the fast path the head gets a fresh optimiser of
    # the same configuration (its variables are the head's), with XLA decided for the head itself.
    if not model.compiled:
        compile_for_training(fitted, config.learning_rate)
    elif fitted is not model:
        fitted.compile_from_config({**model.get_compile_config(), "jit_compile": "auto"})


def _check_arrays(images, labels, name):
    if len(images) != len(labels):
        raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError(f"{name}: no images; check the split has a '{name}' part")


def seeded_subset(n_images: int, n: int, seed: int, stream: int | None = None) -> np.ndarray:
    """Indices of ``n`` of ``n_images`` images (all of them when ``n`` is larger), drawn with
    NumPy's own generator from ``seed`` (and ``stream``): Keras' random state is untouched."""
    rng = np.random.default_rng(seed if stream is None else [seed, stream])
    return np.sort(rng.permutation(n_images)[:n])


BATCHNORM_STREAM = 1  # the BatchNorm images are drawn apart from the inference check's


def _callbacks(config: TrainingConfig, keep_best: KeepBestEpoch, train_x, train_y, val):
    callbacks = [keep_best]
    if config.recompute_batchnorm_images:
        chosen = seeded_subset(len(train_x), config.recompute_batchnorm_images, config.seed, BATCHNORM_STREAM)
        callbacks.insert(0, RecomputeBatchNorm(train_x[chosen], config.batch_size))
    checked = seeded_subset(len(train_x), config.inference_check_images, config.seed)
    if config.inference_check_images:
        callbacks.append(InferenceModeCheck(train_x[checked], train_y[checked], config.batch_size))
    if config.batchnorm_check and not config.recompute_batchnorm_images:
        # The statistics images are claim 3's (the same seeded draw), the scored ones the check's.
        statistics = seeded_subset(len(train_x), facts.CHOICES.fit_batchnorm_images, config.seed, BATCHNORM_STREAM)
        callbacks.append(PairedBatchNormCheck(train_x[statistics], (train_x[checked], train_y[checked]), val,
                                              config.batch_size))
    if config.progress:
        from tqdm.keras import TqdmCallback

        callbacks.append(TqdmCallback(verbose=0))
    return callbacks


def train_model(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    config: TrainingConfig | None = None,
    fast_path: bool = True,
    features_given: bool | None = None,
) -> TrainingResult:
    """Fit ``model`` with the paper's protocol and leave it at its best validation epoch.

    ``train`` and ``val`` are (images, labels) pairs (``experiment.prepare_inputs``). The
    optimiser, loss and metrics are the model's own when it is compiled (the chapters' compile
    cell); an uncompiled model gets the paper's (``compile_for_training``, ``config.learning_rate``).
    Seeds Keras with ``config.seed`` before fitting, so the same seed gives the same run.
    ``fast_path=False`` trains the paper's way even when the backbone is frozen: the whole
    model inside ``fit``, the backbone run on every image in every epoch (the benchmark and
    tests/test_training.py compare the two). ``features_given``: ``train`` and ``val`` hold the
    frozen backbone's feature maps (``cxr_utils.features``), so only the head is fitted; None
    (the default) tells them from images by their shape. Explained in notebooks/03_resnet50.
    """
    config = config or TrainingConfig()
    (train_x, train_y), (val_x, val_y) = train, val
    _check_arrays(train_x, train_y, "train")
    _check_arrays(val_x, val_y, "val")
    train_y = np.asarray(train_y, dtype=np.float32)
    val_y = np.asarray(val_y, dtype=np.float32)

    start = time.perf_counter()
    backbone = models.frozen_backbone(model) if fast_path else None
    if features_given is None:
        features_given = backbone is not None and tuple(train_x.shape[1:]) == tuple(backbone.output_shape[1:])
    fitted = model
    features_s = 0.0
    if features_given:
        if backbone is None:
            raise ValueError("features_given needs a model whose backbone is frozen, and fast_path=True")
        fitted = model.get_layer("head")
    elif backbone is not None:
        # Fast path: the frozen backbone maps each image to the same features in every epoch,
        # so compute them once and fit the head on them.
        train_x = predict_in_batches(backbone, train_x, config.batch_size)
        val_x = predict_in_batches(backbone, val_x, config.batch_size)
        fitted = model.get_layer("head")
        features_s = time.perf_counter() - start

    was_compiled = model.compiled
    runtime.set_seed(config.seed)
    _compile(fitted, model, config)
    keep_best = KeepBestEpoch(restore=config.restore_best)
    compiled = compiled_with(fitted)
    keras_history = fitted.fit(
        train_x,
        train_y,
        validation_data=(val_x, val_y),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=_callbacks(config, keep_best, train_x, train_y, (val_x, val_y)),
    )
    if fitted is not model and not was_compiled:
        # The head's weights live inside ``model`` too; compile the whole model so it can be
        # evaluated or trained further as one.
        compile_for_training(model, config.learning_rate)

    history = pd.DataFrame(keras_history.history)
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    history["is_best"] = history["epoch"] == keep_best.best_epoch
    columns = [*HISTORY_COLUMNS, *(c for c in (*INFERENCE_COLUMNS, *BATCHNORM_CHECK_COLUMNS) if c in history)]
    return TrainingResult(
        model=model,
        history=history[columns],
        best_epoch=keep_best.best_epoch,
        fast_path=backbone is not None,
        wall_time_s=time.perf_counter() - start,
        features_s=features_s,
        fitted=fitted,
        last_epoch_weights=keep_best.last_weights,
        compiled=compiled,
    )


def save_experiment(results_dir, model_name: str, result: TrainingResult, inputs: experiment.Inputs,
                    config: TrainingConfig | None = None, model_options: dict | None = None,
                    probabilities: np.ndarray | None = None, save_model: bool = True,
                    started: float | None = None, extended_rows: pd.DataFrame | None = None,
                    cache_dir=None) -> dict:
    """Save a trained model's run as ``results_dir/model_name/``, the files chapters 6 to 8 read
    (``experiment.write_experiment`` lists them), and return its folder, ``result``, the test
    predictions and metrics.

    Computes what the chapter did not show: the test predictions of the last epoch's weights
    beside the kept ones (``probabilities``, the chapter's, are computed when not given), and the
    kept model's P(COVID) on its own training and validation images for the paper's claim 3.
    And, while the weights are in memory, what later chapters need from them, as numbers only (a
    run can go on in another session without the model files): the kept model on
    ``extended_rows`` (chapter 6's extended test set, ``extended_set.run_rows``; images from
    ``cache_dir``) and, for an intact model with a ResNet50 backbone, its Grad-CAM cells on the
    test images (chapter 8). ``model_options``: what the model was built with, for the record.
    ``started``: the run's ``time.perf_counter()`` at its start (default: the time the inputs,
    training and saving took). Explained in notebooks/03_resnet50, 04_lstm and 05_resnet50_lstm.
    """
    config = config or TrainingConfig()
    start = time.perf_counter()
    predictor = inputs.predictor(result.model)

    def predict(part):
        return predict_probabilities(predictor, getattr(inputs, part)[0], config.batch_size)

    if probabilities is None:
        probabilities = predict("test")
    with result.last_epoch():
        last_probabilities = predict("test")
    fit_probabilities, fit_batchnorm = _fit_probabilities(result, predict, inputs.train[0], config)
    # The kept weights on the test images with recomputed BatchNorm statistics, beside the moving
    # ones' (``probabilities``): the test-set half of the paired check (batchnorm_check). Only
    # where the two can differ: trainable BatchNorm, the remedy off.
    recomputed_test = fit_probabilities.pop("test")
    if fit_batchnorm != RECOMPUTED or config.recompute_batchnorm_images or not config.batchnorm_check:
        recomputed_test = None
    extended = None
    if extended_rows is not None:
        extended = extended_set.predict_rows(result.model, extended_rows, dict(model_options or {}),
                                             inputs.image_size, cache_dir, config.batch_size)
    cells = None
    if models.has_backbone(result.model) and inputs.blank is None:  # chapter 8 maps the intact models only
        test_inputs = inputs.test[0]
        cells = gradcam.grad_cam_cells(result.model, **{"features" if inputs.features else "images": test_inputs})
    now = time.perf_counter()
    wall_time = now - started if started is not None else inputs.seconds + result.wall_time_s + now - start
    return experiment.write_experiment(
        results_dir, model_name, result, inputs, config, probabilities=probabilities,
        last_probabilities=last_probabilities, fit_probabilities=fit_probabilities, fit_batchnorm=fit_batchnorm,
        recomputed_probabilities=recomputed_test, extended_predictions=extended, gradcam_cells=cells,
        model_options=model_options, save_model=save_model, wall_time_s=wall_time)


def run_experiment(
    model_name: str,
    split: pd.DataFrame,
    results_dir: str | Path,
    config: TrainingConfig | None = None,
    model_options: dict | None = None,
    cache_dir: str | Path | None = None,
    save_model: bool = True,
    image_size: int = PROTOCOL.image_size,
    blank=None,
    extended_rows: pd.DataFrame | None = None,
) -> dict:
    """Build, train and test one model on a split, and save everything next to the results: the
    steps of a model chapter in one call (study runs, the command line, the tests).

    ``split`` is ``cxr_utils.data.split_dataset``'s output (columns path, label, sha256,
    split, ...). Writes ``results_dir/model_name/``: history.csv, predictions.csv (path, label,
    probability, predicted), metrics.json, model.keras and run.json (settings, versions,
    hardware, wall time), and fit_predictions.csv (path, split, label, probability: the tested
    model on its own training and validation images, in inference mode, for the loss gap of
    the paper's claim 3). predictions.csv also holds ``probability_last_epoch`` and
    ``predicted_last_epoch``: the last epoch's weights on the same test images. Files appear
    only when the whole run succeeded; an earlier run's folder is replaced only then.
    With ``config.recompute_batchnorm_images`` the kept and the last epoch's weights hold the
    BatchNorm statistics recomputed before that epoch's validation, so the test and fit
    predictions use them too (run.json: ``batchnorm_layers_recomputed``, 0 when a no-op).
    ``blank`` (a ``shortcuts.LungBox``): every image, training and test alike, has that
    rectangle replaced by a constant before the model sees it (chapter 8's lungs-blanked runs).
    ``extended_rows``: chapter 6's extended test set, scored and saved with the rest
    (``save_experiment``).
    """
    config = config or TrainingConfig()
    model_options = dict(model_options or {})
    experiment.check_split(split)
    start = time.perf_counter()
    runtime.use_mixed_precision(config.mixed_precision)
    runtime.set_seed(config.seed)  # initial weights depend on the seed too
    model = models.build_model(model_name, input_shape=(image_size, image_size, 3), **model_options)
    inputs = experiment.prepare_inputs(model, split, cache_dir, config.batch_size, config.progress, blank)
    result = train_model(model, inputs.train, inputs.val, config, features_given=inputs.features)
    return save_experiment(results_dir, model_name, result, inputs, config, model_options, save_model=save_model,
                           started=start, extended_rows=extended_rows, cache_dir=cache_dir)


def _fit_probabilities(result: TrainingResult, predict, train_inputs: np.ndarray, config: TrainingConfig):
    """The kept model's P(COVID) on its own training and validation images (``predict(part)``),
    for claim 3's loss gap, and on the test images (the paired BatchNorm check), all computed the
    same way: inference mode, with BatchNorm's
    statistics recomputed from ``config.CHOICES.fit_batchnorm_images`` seeded training images
    (drawn as the remedy's) where the model has trainable BatchNorm layers
    (``callbacks.recompute_batchnorm_statistics``), so that a stale moving statistic cannot
    inflate one loss more than the other. The model is left as it was (weights and statistics
    put back). Returns ({"train", "val", "test"} -> probabilities, how: ``claims.RECOMPUTED`` or
    ``claims.NO_BATCHNORM``)."""
    def probabilities():
        return {part: predict(part) for part in ("train", "val", "test")}

    if not batchnorm_layers(result.fitted):
        return probabilities(), NO_BATCHNORM
    if config.recompute_batchnorm_images:  # the kept weights already hold recomputed statistics
        return probabilities(), RECOMPUTED
    kept = result.fitted.get_weights()
    try:
        chosen = seeded_subset(len(train_inputs), facts.CHOICES.fit_batchnorm_images, config.seed, BATCHNORM_STREAM)
        recompute_batchnorm_statistics(result.fitted, train_inputs[chosen], config.batch_size)
        return probabilities(), RECOMPUTED
    finally:
        result.fitted.set_weights(kept)
