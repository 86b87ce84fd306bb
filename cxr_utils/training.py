"""The paper's training protocol: Adam 1e-3, binary cross-entropy, 15 epochs, batch 32.

``train_model`` keeps the epoch with the best validation accuracy (ties: lower validation
loss), the paper's model selection (section 3.1). A model whose ResNet50 backbone is frozen
is trained on the fast path: the backbone's features are computed once per image and the
head is fitted on them. That is the same model, with the same weights and the same
predictions as running the frozen backbone on every image in every epoch
(tests/test_training.py checks it), at a fraction of the cost.

``run_experiment`` goes from a split DataFrame to a results folder holding history.csv,
predictions.csv, metrics.json, model.keras and run.json. Explained in notebooks/03_resnet50.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from cxr_utils import models, runtime

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "is_best"]


@dataclasses.dataclass
class TrainingConfig:
    """Paper section 3.1 defaults."""

    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 42
    mixed_precision: bool | str = "auto"  # "auto": on when a GPU is present
    progress: bool = True

    def __post_init__(self):
        for field in ("epochs", "batch_size"):
            value = getattr(self, field)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{field} must be a positive integer, not {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, not {self.learning_rate!r}")


@dataclasses.dataclass
class TrainingResult:
    model: keras.Model
    history: pd.DataFrame
    best_epoch: int
    fast_path: bool
    wall_time_s: float
    features_s: float = 0.0  # of wall_time_s, the backbone's one pass (fast path only)

    @property
    def best_row(self) -> pd.Series:
        """The best epoch's losses and accuracies: this run's row of the paper's Table 2."""
        return self.history.loc[self.history["is_best"]].iloc[0]


class KeepBestEpoch(keras.callbacks.Callback):
    """Remember the weights of the best epoch and restore them when training ends.

    Best = highest val_accuracy, ties broken by lower val_loss. With 100 validation images
    accuracy moves in steps of 0.01, so ties are common and the loss decides.
    """

    def __init__(self):
        super().__init__()
        self.best_key = None
        self.best_epoch = None
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        key = (logs["val_accuracy"], -logs["val_loss"])
        if self.best_key is None or key > self.best_key:
            self.best_key, self.best_epoch = key, epoch + 1
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def compile_for_training(model: keras.Model, learning_rate: float = 1e-3, **compile_options) -> keras.Model:
    """Compile with the paper's optimiser and loss; ``compile_options`` go to ``model.compile``
    (``jit_compile``, ``steps_per_execution``: the benchmarks try them)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
        **compile_options,
    )
    return model


def predict_in_batches(model: keras.Model, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Run ``model`` over ``inputs`` with ``predict_on_batch`` (steadier than ``predict`` on CPU).

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
        outputs.append(keras.ops.convert_to_numpy(model.predict_on_batch(batch))[:n])
    return np.concatenate(outputs).astype(np.float32)


def _check_arrays(images, labels, name):
    if len(images) != len(labels):
        raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError(f"{name}: no images; check the split has a '{name}' part")


def _callbacks(config: TrainingConfig, keep_best: KeepBestEpoch):
    callbacks = [keep_best]
    if config.progress:
        from tqdm.keras import TqdmCallback

        callbacks.append(TqdmCallback(verbose=0))
    return callbacks


def train_model(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    config: TrainingConfig | None = None,
) -> TrainingResult:
    """Fit ``model`` with the paper's protocol and leave it at its best validation epoch.

    ``train`` and ``val`` are (images, labels) pairs from ``cxr_utils.data.load_images``.
    Seeds Keras with ``config.seed`` before fitting, so the same seed gives the same run.
    """
    config = config or TrainingConfig()
    (train_x, train_y), (val_x, val_y) = train, val
    _check_arrays(train_x, train_y, "train")
    _check_arrays(val_x, val_y, "val")
    train_y = np.asarray(train_y, dtype=np.float32)
    val_y = np.asarray(val_y, dtype=np.float32)

    start = time.perf_counter()
    backbone = models.frozen_backbone(model)
    fitted = model
    features_s = 0.0
    if backbone is not None:
        # Fast path: the frozen backbone maps each image to the same features in every epoch,
        # so compute them once and fit the head on them.
        train_x = predict_in_batches(backbone, train_x, config.batch_size)
        val_x = predict_in_batches(backbone, val_x, config.batch_size)
        fitted = model.get_layer("head")
        features_s = time.perf_counter() - start

    runtime.set_seed(config.seed)
    compile_for_training(fitted, config.learning_rate)
    keep_best = KeepBestEpoch()
    keras_history = fitted.fit(
        train_x,
        train_y,
        validation_data=(val_x, val_y),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=_callbacks(config, keep_best),
    )
    if fitted is not model:
        # The head's weights live inside ``model`` too; compile the whole model so it can be
        # evaluated or trained further as one.
        compile_for_training(model, config.learning_rate)

    history = pd.DataFrame(keras_history.history)
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    history["is_best"] = history["epoch"] == keep_best.best_epoch
    return TrainingResult(
        model=model,
        history=history[HISTORY_COLUMNS],
        best_epoch=keep_best.best_epoch,
        fast_path=backbone is not None,
        wall_time_s=time.perf_counter() - start,
        features_s=features_s,
    )


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """P(COVID) for each image, as a flat float array."""
    return predict_in_batches(model, images, batch_size).reshape(-1)


def _replace_dir(staging: Path, final: Path) -> None:
    # The previous results stay in place until the new ones are complete.
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old)
    else:
        staging.rename(final)


def run_experiment(
    model_name: str,
    split: pd.DataFrame,
    results_dir: str | Path,
    config: TrainingConfig | None = None,
    model_options: dict | None = None,
    cache_dir: str | Path | None = None,
    save_model: bool = True,
    image_size: int = 224,
) -> dict:
    """Build, train and test one model on a split, and save everything next to the results.

    ``split`` is ``cxr_utils.data.split_dataset``'s output (columns path, label, sha256,
    split, ...). Writes ``results_dir/model_name/``: history.csv, predictions.csv (path, label,
    probability, predicted), metrics.json, model.keras and run.json (settings, versions,
    hardware, wall time). Files appear only when the whole run succeeded; an earlier run's
    folder is replaced only then.
    """
    from cxr_utils import data, metrics

    config = config or TrainingConfig()
    model_options = dict(model_options or {})
    final_dir = Path(results_dir) / model_name
    for column in ("path", "label", "split"):
        if column not in split.columns:
            raise ValueError(f"split has no '{column}' column; build it with cxr_utils.data.split_dataset")

    start = time.perf_counter()
    parts = {}
    for part in ("train", "val", "test"):
        rows = split[split["split"] == part]
        images = data.load_images(rows, image_size=image_size, cache_dir=cache_dir, progress=config.progress)
        parts[part] = (rows, images, rows["label"].to_numpy())

    mixed = runtime.use_mixed_precision(config.mixed_precision)
    runtime.set_seed(config.seed)  # initial weights depend on the seed too
    model = models.build_model(model_name, input_shape=(image_size, image_size, 3), **model_options)
    result = train_model(model, parts["train"][1:], parts["val"][1:], config)

    test_rows, test_x, test_y = parts["test"]
    probabilities = predict_probabilities(result.model, test_x, config.batch_size)
    predicted = metrics.labels_from_probabilities(probabilities)
    predictions = pd.DataFrame(
        {"path": test_rows["path"].to_numpy(), "label": test_y, "probability": probabilities,
         "predicted": predicted}
    )
    test_metrics = metrics.classification_metrics(test_y, predicted)
    wall_time = time.perf_counter() - start

    final_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = final_dir.with_name(f".{model_name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        result.history.to_csv(staging / "history.csv", index=False)
        predictions.to_csv(staging / "predictions.csv", index=False)
        best = result.best_row
        runtime.write_json(
            {
                "model": model_name,
                "best_epoch": int(result.best_epoch),
                "best_epoch_row": {k: float(best[k]) for k in HISTORY_COLUMNS[1:5]},
                "test": {k: (float(v) if isinstance(v, float) else int(v)) for k, v in test_metrics.items()},
            },
            staging / "metrics.json",
        )
        if save_model:
            result.model.save(staging / "model.keras")
        settings = {
            "model": model_name,
            "model_options": {k: (str(v) if isinstance(v, Path) else v) for k, v in model_options.items()},
            "training": dataclasses.asdict(config),
            "mixed_precision": mixed,
            "fast_path": result.fast_path,
            "images": {part: int(len(parts[part][0])) for part in parts},
            "image_size": int(image_size),
            "parameters": int(result.model.count_params()),
        }
        runtime.write_json(
            runtime.run_record(settings, wall_time, training_wall_time_s=round(result.wall_time_s, 2)),
            staging / "run.json",
        )
        _replace_dir(staging, final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"results_dir": final_dir, "result": result, "predictions": predictions,
            "metrics": test_metrics}


def _parse_weights(text: str) -> str | None:
    return None if text.lower() in ("none", "scratch") else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cxr_utils.training",
        description="Train and test one of the paper's models on a seeded, balanced sample.",
    )
    parser.add_argument("--data-dir", help="dataset folder (default: download from Kaggle)")
    parser.add_argument("--model", choices=models.MODEL_NAMES, default="resnet50_lstm")
    parser.add_argument("--n-per-class", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--weights", default="imagenet", help="imagenet | none | path to weights file")
    parser.add_argument("--results-dir", default="results/training")
    parser.add_argument("--cache-dir", default=".cache/images")
    args = parser.parse_args(argv)

    from cxr_utils import data

    try:
        layout = data.resolve_dataset(args.data_dir)
        manifest = data.add_duplicate_groups(data.build_manifest(layout))
        sample = data.sample_balanced(manifest, args.n_per_class, seed=args.seed)
        split = data.split_dataset(sample, seed=args.seed)
        config = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
        outcome = run_experiment(
            args.model, split, args.results_dir, config,
            model_options={"weights": _parse_weights(args.weights)}, cache_dir=args.cache_dir,
        )
    except (data.DatasetError, models.WeightsUnavailableError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    test = outcome["metrics"]
    print(
        f"{args.model}: best epoch {outcome['result'].best_epoch}, test accuracy "
        f"{test['accuracy']:.3f} on {test['n']} images; results in {outcome['results_dir']}"
    )
    print("A teaching and replication project, not a medical device: do not use for diagnosis.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
