"""A model chapter's plumbing around the steps a student should read (the model, ``compile``,
``training.train_model``, the test predictions and their metrics): ``prepare_inputs`` (the split's
images, or a frozen backbone's feature maps cached on disk by ``cxr_utils.features``, so that
chapters 3 and 5 share one backbone pass) and ``write_experiment`` (the run's files, which chapters
6 to 8 read, written together or not at all; ``training.save_experiment`` computes what it
writes). ``training.run_experiment`` takes all the steps in one call. Explained in
notebooks/03_resnet50.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import config as facts
from cxr_utils import data, evaluation, features, metrics, models, runtime
from cxr_utils.atomic import replace_folder
from cxr_utils.callbacks import batchnorm_layers, batchnorm_momentum
from cxr_utils.config import PROTOCOL

REQUIRED_COLUMNS = ("path", "label", "split")
# predictions.csv: the kept weights on the test images with recomputed BatchNorm statistics.
RECOMPUTED_COLUMNS = ("probability_recomputed_batchnorm", "predicted_recomputed_batchnorm")
# Written while the weights are in memory, for chapters 6 and 8 (numbers only: no model file needed).
EXTENDED_PREDICTIONS = evaluation.EXTENDED_PREDICTIONS  # the kept model on chapter 6's extended test set
GRADCAM_CELLS = "gradcam_cells.npz"  # Grad-CAM at the feature map's resolution on the test images


@dataclasses.dataclass
class Inputs:
    """What a model reads from each part of a split: ``train``, ``val`` and ``test``, each an
    (inputs, labels) pair, and the split's rows of each part (``rows``). ``features`` True: the
    inputs are the frozen backbone's feature maps (the fast path), so the model's head alone is
    fitted and predicts (``predictor``); False: images in [0, 1]."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    rows: dict[str, pd.DataFrame]
    features: bool
    image_size: int
    blank: object = None  # the shortcuts.LungBox blanked in every image, if any
    seconds: float = 0.0  # spent loading the images (and computing the feature maps)

    def predictor(self, model):
        """What maps these inputs to P(COVID): the model's ``head`` on feature maps, else the model."""
        return model.get_layer("head") if self.features else model


def check_split(split: pd.DataFrame) -> None:
    """Refuse a table that is not ``cxr_utils.data.split_dataset``'s output, naming the missing column."""
    for column in REQUIRED_COLUMNS:
        if column not in split.columns:
            raise ValueError(f"split has no '{column}' column; build it with cxr_utils.data.split_dataset")


def prepare_inputs(model, split: pd.DataFrame, cache_dir=None, batch_size: int = PROTOCOL.batch_size,
                   progress: bool = False, blank=None) -> Inputs:
    """The inputs ``model`` trains and is tested on, for each part of ``split``: images at the
    model's input size (decoded images cached in ``cache_dir``) or, when the model's backbone is
    frozen, its feature maps, computed once, ``batch_size`` images at a time, and cached in
    ``cache_dir`` under a key of the weights and input scaling the backbone was built with
    (``models.backbone_source``; a backbone built elsewhere is not cached). Unfreeze a layer of the
    backbone and the images come back: the whole model trains. ``blank`` (a ``shortcuts.LungBox``):
    that rectangle of every image is blanked first. Explained in notebooks/03_resnet50.
    """
    check_split(split)
    height, width = model.input_shape[1:3]
    if height != width:
        raise ValueError(f"the chapters' images are square; {model.name} takes {height}x{width}")
    image_size = int(height)
    start = time.perf_counter()
    parts = {part: split[split["split"] == part] for part in data.SPLITS}
    backbone = models.frozen_backbone(model)
    if backbone is not None:
        source = models.backbone_source(backbone)
        identity = None if source is None else features.backbone_identity(*source, blank)
        arrays = {part: features.backbone_features(backbone, rows, identity, image_size, cache_dir, batch_size,
                                                   progress, blank)
                  for part, rows in parts.items()}
    else:
        arrays = {part: data.load_images(rows, image_size=image_size, cache_dir=cache_dir, progress=progress)
                  for part, rows in parts.items()}
        if blank is not None:
            arrays = {part: blank.blank(images) for part, images in arrays.items()}
    pairs = {part: (arrays[part], rows["label"].to_numpy()) for part, rows in parts.items()}
    return Inputs(**pairs, rows=parts, features=backbone is not None, image_size=image_size, blank=blank,
                  seconds=time.perf_counter() - start)


def _plain(values: dict) -> dict:
    return {k: (float(v) if isinstance(v, float) else int(v)) for k, v in values.items()}


def _settings(model_name, result, inputs: Inputs, config, model_options: dict, fit_batchnorm: str) -> dict:
    mixed = result.model.dtype_policy.name != "float32"
    weights = model_options.get("weights", PROTOCOL.weights)
    return {
        "model": model_name,
        "model_options": {k: (str(v) if isinstance(v, Path) else v) for k, v in model_options.items()},
        # The learning rate fit used: the model's own compile's, when the chapter compiled it.
        "training": {**dataclasses.asdict(config), "learning_rate": result.compiled["learning_rate"]},
        "mixed_precision": mixed,
        "fast_path": result.fast_path,
        "images": {part: int(len(rows)) for part, rows in inputs.rows.items()},
        "image_size": int(inputs.image_size),
        "blanked": None if inputs.blank is None else inputs.blank.key,
        "parameters": int(result.model.count_params()),
        "batchnorm_layers_recomputed": len(batchnorm_layers(result.fitted))
        if config.recompute_batchnorm_images else 0,
        # Every protocol choice this project makes where the paper is silent (method page), and
        # the momentum the model's BatchNorm layers hold (None: no BatchNorm).
        "protocol": facts.protocol_record(weights, inputs.image_size, config.seed, config.recompute_batchnorm_images,
                                          mixed),
        "batchnorm_momentum": batchnorm_momentum(result.model),
        "fit_predictions_batchnorm": fit_batchnorm,
        # What fit trained with (training.compiled_with): the paper's Adam and loss unless the chapter changed them.
        "compile": {k: v for k, v in result.compiled.items() if k != "learning_rate"},
    }


def write_experiment(results_dir, model_name: str, result, inputs: Inputs, config, *, probabilities,
                     last_probabilities, fit_probabilities: dict, fit_batchnorm: str,
                     recomputed_probabilities=None, extended_predictions: pd.DataFrame | None = None,
                     gradcam_cells: np.ndarray | None = None, model_options=None, save_model: bool = True,
                     wall_time_s: float = 0.0) -> dict:
    """Write ``results_dir/model_name/``, replacing an earlier run's folder only once every file
    is written (``atomic.replace_folder``); returns the folder, ``result``, the predictions table
    and the test metrics. The files: history.csv; predictions.csv (path, label, probability,
    predicted, probability_last_epoch, predicted_last_epoch: the kept and the last epoch's weights on
    the test images; with ``recomputed_probabilities``, also ``RECOMPUTED_COLUMNS``: the kept weights
    with BatchNorm statistics recomputed from training images); fit_predictions.csv (path, split,
    label, probability: the kept model on its training and validation images, for claim 3's loss
    gap); metrics.json (both epochs' test metrics; AUC and Brier score with 95% intervals seeded
    with the run's seed); model.keras (unless ``save_model`` is False); run.json (settings,
    protocol, versions, hardware, wall times); when given, extended_predictions.csv and
    gradcam_cells.npz (the test images' file names and their Grad-CAM cells).
    """
    model_options = dict(model_options or {})
    rows, test_y = inputs.rows, inputs.test[1]
    predictions = pd.DataFrame({
        "path": rows["test"]["path"].to_numpy(), "label": test_y, "probability": probabilities,
        "predicted": metrics.labels_from_probabilities(probabilities),
        "probability_last_epoch": last_probabilities,
        "predicted_last_epoch": metrics.labels_from_probabilities(last_probabilities),
    })
    if recomputed_probabilities is not None:
        predictions[RECOMPUTED_COLUMNS[0]] = recomputed_probabilities
        predictions[RECOMPUTED_COLUMNS[1]] = metrics.labels_from_probabilities(recomputed_probabilities)
    test_metrics = metrics.classification_metrics(test_y, predictions["predicted"])
    fit_predictions = pd.concat(
        pd.DataFrame({"path": rows[part]["path"].to_numpy(), "split": part, "label": getattr(inputs, part)[1],
                      "probability": fit_probabilities[part]})
        for part in ("train", "val")
    )
    best = result.best_row
    metrics_record = {
        "model": model_name,
        "best_epoch": int(result.best_epoch),
        "best_epoch_row": {k: float(best[k]) for k in facts.HISTORY_COLUMNS[1:]},  # losses, accuracies
        "test": _plain(test_metrics),
        # The weights tested above are the best epoch's when restore_best (the default).
        "test_last_epoch": _plain(metrics.classification_metrics(test_y, predictions["predicted_last_epoch"])),
        # Seeded with the run's seed, as every interval of the run (evaluation.run_seed).
        "test_probability": metrics.probability_metrics(test_y, probabilities, seed=config.seed)[
            ["value", "low", "high"]].to_dict(orient="index"),
    }
    settings = _settings(model_name, result, inputs, config, model_options, fit_batchnorm)

    final_dir = Path(results_dir) / model_name
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = final_dir.with_name(f".{model_name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        result.history.to_csv(staging / evaluation.HISTORY, index=False)
        predictions.to_csv(staging / "predictions.csv", index=False)
        fit_predictions.to_csv(staging / evaluation.FIT_PREDICTIONS, index=False)
        if extended_predictions is not None:
            extended_predictions.to_csv(staging / EXTENDED_PREDICTIONS, index=False)
        if gradcam_cells is not None:
            # Images by file name: no folder of this machine in the file.
            np.savez_compressed(staging / GRADCAM_CELLS, names=np.array(data.file_names(rows["test"]["path"]), dtype=str),
                                cells=np.asarray(gradcam_cells, dtype=np.float32))
        runtime.write_json(metrics_record, staging / "metrics.json")
        if save_model:
            result.model.save(staging / "model.keras")
        runtime.write_json(
            runtime.run_record(settings, wall_time_s, training_wall_time_s=round(result.wall_time_s, 2),
                               features_wall_time_s=round(inputs.seconds if inputs.features else 0.0, 2)),
            staging / "run.json",
        )
        replace_folder(staging, final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"results_dir": final_dir, "result": result, "predictions": predictions, "metrics": test_metrics}
