"""Trivial baselines: how far a logistic regression gets on features that say nothing about the
lungs' disease.

Three feature sets, all from the images the models see (``cxr_utils.data.load_images``, with
its cache), shrunk to a grey ``thumbnail_size`` x ``thumbnail_size`` thumbnail with Pillow's
bilinear filter (antialiased, as training resizes):

- ``border``: only the outer ``border_width`` pixels of the thumbnail (at 2 of 32: 240 of 1,024
  pixels, 23% of the image). Even through the bilinear filter they draw on the outer 8% of the
  image only, never the lung box (``shortcuts.LungBox``; tests/test_baselines.py checks it).
- ``histogram``: the image's grey-level histogram in ``histogram_bins`` bins, normalised to sum
  to 1: exposure and contrast, no position at all.
- ``thumbnail``: the whole thumbnail, flattened: a coarse look at everything.

Each is a scikit-learn Pipeline (StandardScaler, then LogisticRegression), fitted on the run's
training images and scored on its test images and on the extended test set. A border baseline
far above chance means the collections differ outside the lungs (DeGrave et al. 2021; Maguolo
and Nanni 2021); it does not show that the paper's models use that difference. Explained in
notebooks/08_shortcuts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxr_utils import data, metrics
from cxr_utils.config import PROTOCOL
from cxr_utils.shortcuts import RESULTS_FOLDER
from cxr_utils.atomic import atomic_write

FEATURE_SETS = ("border", "histogram", "thumbnail")
TEST_SETS = ("test", "extended")
BASELINES_CSV = Path(RESULTS_FOLDER) / "baselines.csv"  # below a run's results folder
PREDICTIONS_CSV = Path(RESULTS_FOLDER) / "baseline_predictions.csv"  # each image's, beside it
MAX_ITER = 5000  # lbfgs on standardised features converges in far fewer; the table says if not
GREY_LEVELS = 256
# The extended set streams through in chunks of this many images (data.image_chunks' default, so
# chapter 6's cached chunks of the same rows are reused); a split part loads whole, as training does.
EXTENDED_CHUNK = 512


def _whole_number(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"from {low} to {high}"
        raise ValueError(f"{name} must be {bound}, not {value}")
    return int(value)


def check_parameters(thumbnail_size: int = 32, border_width: int = 2, histogram_bins: int = 32,
                     image_size: int | None = None) -> None:
    """ValueError naming the first bad parameter: sizes must be whole numbers, the border must
    leave an interior (``2 * border_width < thumbnail_size``), 2 to 256 histogram bins (8-bit
    grey levels), and the thumbnail no larger than the images it shrinks."""
    thumbnail_size = _whole_number(thumbnail_size, "thumbnail_size", 2)
    border_width = _whole_number(border_width, "border_width", 1)
    _whole_number(histogram_bins, "histogram_bins", 2, GREY_LEVELS)
    if 2 * border_width >= thumbnail_size:
        raise ValueError(f"border_width={border_width} leaves no interior in a {thumbnail_size} px thumbnail: "
                         f"2 * border_width must be less than thumbnail_size")
    if image_size is not None and _whole_number(image_size, "image_size", 1) < thumbnail_size:
        raise ValueError(f"thumbnail_size={thumbnail_size} is larger than image_size={image_size}: "
                         "a thumbnail shrinks the image, it never enlarges it")


def border_mask(thumbnail_size: int = 32, border_width: int = 2) -> np.ndarray:
    """Boolean (thumbnail_size, thumbnail_size) array, True on the outer ``border_width`` pixels."""
    check_parameters(thumbnail_size, border_width)
    inside = np.zeros((thumbnail_size, thumbnail_size), dtype=bool)
    inside[border_width:-border_width, border_width:-border_width] = True
    return ~inside


def describe(feature_set: str, thumbnail_size: int = 32, border_width: int = 2, histogram_bins: int = 32) -> str:
    """What a feature set holds, in words, with its sizes (for the table and the summary)."""
    pixels = thumbnail_size * thumbnail_size
    if feature_set == "border":
        n = int(border_mask(thumbnail_size, border_width).sum())
        return (f"the outer {border_width} px of a {thumbnail_size} x {thumbnail_size} grey thumbnail "
                f"({n} of {pixels} pixels, {n / pixels:.0%} of the image)")
    if feature_set == "histogram":
        return f"a {histogram_bins}-bin grey-level histogram of the whole image, without positions"
    if feature_set == "thumbnail":
        return f"the whole {thumbnail_size} x {thumbnail_size} grey thumbnail ({pixels} pixels)"
    raise ValueError(f"unknown feature set {feature_set!r}; use one of {', '.join(FEATURE_SETS)}")


def _grey_levels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) from load_images' float32 (N, H, W, 3) in [0, 1] or a grey (N, H, W) array."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]  # load_images repeats the grey channel three times
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected square images (N, H, W[, 3]), got shape {images.shape}")
    if images.dtype == np.uint8:
        return images
    # load_images stores level / 255 exactly, so rounding recovers the 8-bit level.
    return np.rint(np.clip(images, 0, 1) * (GREY_LEVELS - 1)).astype(np.uint8)


def image_features(images: np.ndarray, thumbnail_size: int = 32, border_width: int = 2,
                   histogram_bins: int = 32) -> dict[str, np.ndarray]:
    """The three feature sets of images already loaded (``load_images``' output, or grey uint8):
    {"border", "histogram", "thumbnail"} -> float arrays with one row per image."""
    grey = _grey_levels(images)
    check_parameters(thumbnail_size, border_width, histogram_bins, grey.shape[1])
    n = len(grey)
    thumbnails = np.empty((n, thumbnail_size, thumbnail_size), dtype=np.float32)
    for k, image in enumerate(grey):
        small = Image.fromarray(image).resize((thumbnail_size, thumbnail_size), Image.Resampling.BILINEAR)
        thumbnails[k] = np.asarray(small, dtype=np.float32) / (GREY_LEVELS - 1)
    # Bin of each pixel, offset per image, so one bincount counts every image's histogram.
    bins = grey.reshape(n, -1).astype(np.int64) * histogram_bins // GREY_LEVELS
    counts = np.bincount((bins + histogram_bins * np.arange(n)[:, None]).ravel(), minlength=n * histogram_bins)
    histogram = counts.reshape(n, histogram_bins) / bins.shape[1]
    return {
        "border": thumbnails[:, border_mask(thumbnail_size, border_width)],
        "histogram": histogram,
        "thumbnail": thumbnails.reshape(n, -1),
    }


def baseline_features(rows: pd.DataFrame, thumbnail_size: int = 32, border_width: int = 2,
                      histogram_bins: int = 32, image_size: int = PROTOCOL.image_size, cache_dir=None,
                      chunk_size: int | None = None) -> dict[str, np.ndarray]:
    """The three feature sets (``image_features``) of a table's images, decoded as for training
    (``data.load_images`` at ``image_size``, through ``cache_dir``). ``chunk_size``: None loads
    the rows at once (a split part: training's cache file serves it); a number streams them
    that many at a time in bounded memory (the extended test set). Explained in
    notebooks/08_shortcuts.
    """
    check_parameters(thumbnail_size, border_width, histogram_bins, image_size)
    if len(rows) == 0:
        raise ValueError("no rows: baseline features need at least one image")
    options = {"thumbnail_size": thumbnail_size, "border_width": border_width, "histogram_bins": histogram_bins}
    if chunk_size is None:
        return image_features(data.load_images(rows, image_size=image_size, cache_dir=cache_dir, progress=False),
                              **options)
    parts = [image_features(images, **options)
             for _, images in data.image_chunks(rows, chunk_size=chunk_size, image_size=image_size,
                                                cache_dir=cache_dir)]
    return {name: np.concatenate([part[name] for part in parts]) for name in FEATURE_SETS}


def _classifier(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Standardised, so that the L2 penalty treats every pixel and bin alike.
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER, random_state=seed))


def fit_baselines(split: pd.DataFrame, extended_rows: pd.DataFrame | None = None, thumbnail_size: int = 32,
                  border_width: int = 2, histogram_bins: int = 32, cache_dir=None, seed: int = 0,
                  image_size: int = PROTOCOL.image_size) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit each baseline on the split's training images; score it on the split's test images and
    on ``extended_rows`` (``extended_set.extended_test_set``; None or empty: the test set only).

    Returns a long table, one row per baseline and test set: baseline, description, features (how
    many), n_train (the training images it was fitted on), test_set ("test" or "extended"), n,
    accuracy with its 95% Wilson interval (accuracy_low, accuracy_high), AUC with its 95% percentile
    bootstrap interval (auc_low, auc_high, auc_method; ``cxr_utils.metrics``), and converged (the
    solver finished within MAX_ITER). Beside it, each image's prediction (baseline, test_set, path,
    label, probability, predicted), for paired comparisons with the models on the same images.
    Explained in notebooks/08_shortcuts.
    """
    check_parameters(thumbnail_size, border_width, histogram_bins, image_size)
    for column in ("path", "label", "split"):
        if column not in split.columns:
            raise ValueError(f"split has no {column!r} column; pass the run's split (split.csv)")
    parts = {"train": split[split["split"] == "train"], "test": split[split["split"] == "test"]}
    if extended_rows is not None and len(extended_rows):
        parts["extended"] = extended_rows
    for name, rows in parts.items():
        if len(rows) == 0:
            raise ValueError(f"the split has no {name} images")
    if parts["train"]["label"].nunique() < 2:
        raise ValueError("the split's training images hold one class only: a classifier needs both")
    options = {"thumbnail_size": thumbnail_size, "border_width": border_width, "histogram_bins": histogram_bins}
    features = {name: baseline_features(rows, image_size=image_size, cache_dir=cache_dir,
                                        chunk_size=EXTENDED_CHUNK if name == "extended" else None, **options)
                for name, rows in parts.items()}
    labels = {name: rows["label"].to_numpy().astype(int) for name, rows in parts.items()}
    table, predictions = [], []
    for baseline in FEATURE_SETS:
        model = _classifier(seed).fit(features["train"][baseline], labels["train"])
        converged = bool(np.all(model[-1].n_iter_ < MAX_ITER))
        for test_set in (name for name in TEST_SETS if name in parts):
            probabilities = model.predict_proba(features[test_set][baseline])[:, 1]
            predicted = metrics.labels_from_probabilities(probabilities)
            table.append({"baseline": baseline, "description": describe(baseline, **options),
                          "features": int(features["train"][baseline].shape[1]), "n_train": len(labels["train"]),
                          "test_set": test_set,
                          "n": len(labels[test_set]),
                          **metrics.accuracy_and_auc(labels[test_set], predicted, probabilities, seed),
                          "converged": converged})
            predictions.append(pd.DataFrame({
                "baseline": baseline, "test_set": test_set, "path": parts[test_set]["path"].to_numpy(),
                "label": labels[test_set], "probability": probabilities,
                "predicted": predicted}))
    return pd.DataFrame(table), pd.concat(predictions, ignore_index=True)


def save_baselines(results_dir, table: pd.DataFrame, predictions: pd.DataFrame | None = None) -> Path:
    """Write ``table`` (``fit_baselines``' table) to ``results_dir/shortcuts/baselines.csv`` and, given,
    each image's ``predictions`` to ``baseline_predictions.csv``, atomically. Explained in
    notebooks/08_shortcuts."""
    if predictions is not None:
        atomic_write(Path(results_dir) / PREDICTIONS_CSV, lambda path: predictions.to_csv(path, index=False))
    return atomic_write(Path(results_dir) / BASELINES_CSV, lambda path: table.to_csv(path, index=False))
