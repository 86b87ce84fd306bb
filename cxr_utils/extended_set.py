"""The extended test set: every image of the database a run did not use, minus copies of its
training and validation images, scored by the trained models in bounded memory.

Reads the run's manifest, split and each model's predictions on these images, which its chapter
saved while the weights were in memory (``PREDICTIONS_CSV``; the saved model otherwise); writes
``results_dir/extended/evaluation/``. Explained in notebooks/06_evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import config, data, features, metrics
from cxr_utils.evaluation import EXTENDED_PREDICTIONS as PREDICTIONS_CSV  # each model's, written by its chapter
from cxr_utils.inference import predict_probabilities
from cxr_utils.evaluation import (
    EVALUATION_DIR, EXTENDED_DIR, confusion_matrices, mcnemar_table, metrics_table, model_dir, model_options,
    probability_table, save,
)


def description(extended_test_size: int | None) -> str:
    """What the extended test set is, in the words every page uses (``extended_test_size``: the run's parameter)."""
    eligible = "the images outside the run's sample, minus copies of its training and validation images"
    if extended_test_size is None:
        return f"all of {eligible}"
    return f"a seeded, class-balanced subset of {int(extended_test_size)} of {eligible}"


def extended_test_set(manifest: pd.DataFrame, split: pd.DataFrame, max_images: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The images a run never touched, as a larger second test set.

    Every image of ``manifest`` outside the run's sample, minus any image whose duplicate group reaches
    the run's training or validation images (a copy of a training image would be remembered, not
    diagnosed); ``attrs["excluded_as_duplicates"]`` counts those. ``max_images`` keeps a seeded,
    class-balanced subset (for quick runs). Explained in notebooks/06_evaluation.
    """
    for table, name in ((manifest, "manifest"), (split, "split")):
        if "duplicate_group" not in table.columns or "sha256" not in table.columns:
            raise ValueError(f"{name} needs the sha256 and duplicate_group columns (cxr_utils.data.add_duplicate_groups)")
    seen_groups = set(split.loc[split["split"].isin(["train", "val"]), "duplicate_group"])
    seen_hashes = set(split["sha256"])
    unused = manifest[~manifest["path"].isin(split["path"])]
    clean = unused[~unused["duplicate_group"].isin(seen_groups) & ~unused["sha256"].isin(seen_hashes)]
    excluded = len(unused) - len(clean)
    if max_images is not None and len(clean) > max_images:
        clean = pd.concat(
            rows.sample(n=min(max_images // 2, len(rows)), random_state=seed) for _, rows in clean.groupby("label")
        )
    clean = clean.sort_values(["label", "path"]).reset_index(drop=True)
    clean.attrs["excluded_as_duplicates"] = excluded
    return clean


def run_rows(results_dir, max_images: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The run's ``extended_test_set``, from its manifest.csv and split.csv. Explained in notebooks/06_evaluation."""
    results_dir = Path(results_dir)
    return extended_test_set(data.read_manifest(results_dir / "manifest.csv"),
                             data.read_manifest(results_dir / "split.csv"), max_images=max_images, seed=seed)


def predict_rows(model, rows: pd.DataFrame, model_options: dict, image_size: int = config.PROTOCOL.image_size,
                 cache_dir=None, batch_size: int = config.PROTOCOL.batch_size, progress: bool = False) -> pd.DataFrame:
    """One model (in memory) on ``rows``: path, label, probability, predicted. Images stream
    through it a chunk at a time, so memory stays bounded whatever the number of rows; a frozen
    backbone's feature maps come from the shared cache (``cxr_utils.features``), so both ResNet50
    models use one backbone pass. ``model_options``: what the model was built with (its weights)."""
    from cxr_utils import models  # Keras: imported only when a model is scored

    backbone = models.frozen_backbone(model)
    if backbone is not None:
        identity = features.backbone_identity(model_options.get("weights", config.PROTOCOL.weights),
                                              model_options.get("input_scaling", "paper"))
        predictor = model.get_layer("head")
        chunks = features.iter_features(backbone, rows, identity, image_size, cache_dir, batch_size, progress)
    else:
        predictor = model
        chunks = data.image_chunks(rows, image_size=image_size, cache_dir=cache_dir, progress=progress)
    probabilities = np.empty(len(rows), dtype=np.float32)
    for positions, inputs in chunks:
        probabilities[positions] = predict_probabilities(predictor, inputs, batch_size)
    return pd.DataFrame({
        "path": rows["path"].to_numpy(), "label": rows["label"].to_numpy(),
        "probability": probabilities, "predicted": metrics.labels_from_probabilities(probabilities),
    })


def _saved_predictions(folder: Path, rows: pd.DataFrame) -> pd.DataFrame | None:
    """The model chapter's predictions on these very rows (``PREDICTIONS_CSV``), or None when it
    saved none or scored other images (another extended_test_size or seed)."""
    path = folder / PREDICTIONS_CSV
    if not path.is_file():
        return None
    saved = pd.read_csv(path)
    if data.file_names(saved["path"]) != data.file_names(rows["path"]):  # the same images, wherever they lie
        return None
    return saved.assign(path=rows["path"].to_numpy())


def predict_saved_models(results_dir, rows: pd.DataFrame, image_size: int = config.PROTOCOL.image_size,
                         cache_dir=None, batch_size: int = config.PROTOCOL.batch_size,
                         progress: bool = False) -> dict[str, pd.DataFrame]:
    """Each model of the run on ``rows``, keyed by paper name: its chapter's ``PREDICTIONS_CSV`` if that holds
    these rows, else its model.keras scored here (loaded in Keras' safe mode: no code from the run folder runs)."""
    import keras

    from cxr_utils import models  # noqa: F401  (registers the project's custom layers)

    predictions = {}
    for model_id, spec in config.REGISTRY.items():
        folder = model_dir(results_dir, model_id)
        saved = _saved_predictions(folder, rows)
        if saved is None:
            path = folder / "model.keras"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing and {folder / PREDICTIONS_CSV} does not hold these images; "
                                        f"re-run notebooks/{spec.chapter}.ipynb")
            model = keras.saving.load_model(path, safe_mode=True)
            saved = predict_rows(model, rows, model_options(results_dir, model_id), image_size, cache_dir,
                                 batch_size, progress)
        predictions[spec.paper_name] = saved
    return predictions


def intervals_side_by_side(small: pd.DataFrame, large: pd.DataFrame) -> pd.DataFrame:
    """Metrics on the run's test set beside the extended test set: for each, n, value, low, high and the
    interval's width (rounded to 3 decimals), suffixed " (test)" and " (extended)"."""
    merged = small.assign(width=small["high"] - small["low"]).merge(
        large.assign(width=large["high"] - large["low"]),
        on=["model", "metric"], suffixes=(" (test)", " (extended)"),
    )
    sides = [f"{name} ({side})" for side in ("test", "extended") for name in ("n", "value", "low", "high", "width")]
    widths = {f"width ({side})": merged[f"width ({side})"].round(3) for side in ("test", "extended")}
    return merged[["model", "metric", *sides]].assign(**widths)


def evaluate_extended(results_dir, max_images: int | None = None, seed: int = 0,
                      image_size: int = config.PROTOCOL.image_size, cache_dir=None) -> dict:
    """The trained models on the extended test set: confusion matrices, metrics with intervals, AUC and
    Brier score, and McNemar, written under ``results_dir/extended/``. Returns rows (the images),
    predictions, metrics, mcnemar, probability and side_by_side (beside the split's test set).
    Explained in notebooks/06_evaluation.
    """
    results_dir = Path(results_dir)
    rows = run_rows(results_dir, max_images=max_images, seed=seed)
    # Progress with the time left where it takes minutes (the full database: about 12,800 images).
    predictions = predict_saved_models(results_dir, rows, image_size=image_size, cache_dir=cache_dir,
                                       progress=len(rows) > 2000)
    metrics_long, mcnemar = metrics_table(predictions, seed=seed), mcnemar_table(predictions)
    probability = probability_table(predictions, seed=seed)
    save(results_dir / Path(EXTENDED_DIR).parent, confusion_matrices(predictions), metrics_long, mcnemar, probability)
    test_metrics = pd.read_csv(results_dir / EVALUATION_DIR / "metrics.csv")
    return {"rows": rows, "predictions": predictions, "metrics": metrics_long, "mcnemar": mcnemar,
            "probability": probability, "side_by_side": intervals_side_by_side(test_metrics, metrics_long)}
