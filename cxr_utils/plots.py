"""Figures of the book: real X-rays, preprocessing steps, training curves (the paper's Figures 3-5),
confusion heatmaps and paper-vs-ours bars.

Every plotting function returns the matplotlib Figure and, given ``path``, also saves it there as
PNG (parent folders created). Nothing calls ``plt.show()``: a notebook displays the returned figure,
a script or test closes it with ``plt.close(figure)``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from cxr_utils.metrics import PAPER_ORDER

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
LONG_COLUMNS = ("model", "metric", "value")
METRIC_ORDER = ["accuracy", "precision", "recall", "f1"]
SOURCES = ["Paper", "This run"]
DPI = 120


def _require(table, columns, what: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"{what} has no column {', '.join(map(repr, missing))}; it has {list(table.columns)}"
        )
    if table.empty:
        raise ValueError(f"{what} is empty; there is nothing to plot")


def _finish(figure, path):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=DPI, bbox_inches="tight")
    return figure


def plot_image_grid(manifest: pd.DataFrame, per_class: int = 6, seed: int = 0, path=None):
    """One row of real X-rays per class (COVID, Normal), ``per_class`` of each drawn with ``seed``.

    ``manifest`` needs columns path and class (as ``data.build_manifest`` writes).
    Explained in notebooks/01_data_collection.
    """
    from cxr_utils import data  # imported here: reading images needs Pillow, plots otherwise don't

    _require(manifest, ("path", "class"), "manifest")
    figure, axes = plt.subplots(len(PAPER_ORDER), per_class, figsize=(1.9 * per_class, 4.2), squeeze=False)
    for row, name in enumerate(PAPER_ORDER):
        rows = manifest[manifest["class"] == name]
        chosen = rows.sample(n=min(per_class, len(rows)), random_state=seed)
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(chosen):
                image_path = chosen["path"].iloc[col]
                ax.imshow(data.decode_grayscale(image_path), cmap="gray")
                ax.set_title(f"{name}\n{Path(image_path).name}", fontsize=8)
    return _finish(figure, path)


def plot_preprocessing_steps(steps: dict, path=None):
    """One image after each step of ``data.preprocessing_steps`` (name -> array), with its shape,
    dtype and value range. Explained in notebooks/02_preprocessing.
    """
    if not steps:
        raise ValueError("steps is empty; pass the dict that data.preprocessing_steps returns")
    figure, axes = plt.subplots(1, len(steps), figsize=(3 * len(steps), 3.4), squeeze=False)
    for ax, (name, array) in zip(axes[0], steps.items()):
        array = np.asarray(array)
        if array.ndim == 3 and array.shape[-1] in (3, 4):
            ax.imshow(array)  # RGB(A), e.g. the three-channel model input
        else:
            ax.imshow(array[..., 0] if array.ndim == 3 else array, cmap="gray")
        ax.set_title(f"{name}\n{array.shape} {array.dtype}\n[{array.min():.3g}, {array.max():.3g}]",
                     fontsize=8)
        ax.axis("off")
    return _finish(figure, path)


def model_table(model) -> pd.DataFrame:
    """A Keras model's layers as a table: layer, type, output shape, parameters, trainable.

    Sub-models named "backbone" or "head" are expanded (their layers prefixed "backbone/");
    ``attrs["total parameters"]`` holds the model's total. Explained in notebooks/03_resnet50.
    """
    rows = []

    def walk(layer, prefix=""):
        inner = getattr(layer, "layers", None)
        if inner and layer.name in ("backbone", "head"):
            for sub in inner:
                walk(sub, prefix + layer.name + "/")
            return
        if type(layer).__name__ == "InputLayer":
            return
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):  # a layer not yet called has no output
            shape = None
        rows.append({
            "layer": prefix + layer.name,
            "type": type(layer).__name__,
            "output shape": shape,
            "parameters": int(layer.count_params()),
            "trainable": bool(layer.trainable),
        })

    for layer in model.layers:
        walk(layer)
    table = pd.DataFrame(rows, columns=["layer", "type", "output shape", "parameters", "trainable"])
    table.attrs["total parameters"] = int(model.count_params())
    return table


def plot_training_curves(history: pd.DataFrame, title: str, path=None):
    """Loss and accuracy per epoch, training vs validation, in two panels (the paper's Figures 3-5).

    ``history`` has columns epoch (1-based), loss, accuracy, val_loss, val_accuracy and optionally
    is_best (the epoch kept), which is marked by a dashed line. Explained in notebooks/03_resnet50.
    """
    _require(history, HISTORY_COLUMNS, "history")
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    best = None
    if "is_best" in history.columns and history["is_best"].astype(bool).any():
        best = history.loc[history["is_best"].astype(bool), "epoch"].iloc[0]
    for ax, metric, label in zip(axes, ("loss", "accuracy"), ("Loss", "Accuracy")):
        ax.plot(history["epoch"], history[metric], marker="o", label="training")
        ax.plot(history["epoch"], history[f"val_{metric}"], marker="s", label="validation")
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(f"{title}: {label.lower()}")
        ax.legend()
    axes[1].set_ylim(0, 1.02)
    return _finish(figure, path)


def plot_confusion(confusion: pd.DataFrame, title: str, path=None):
    """Heatmap of a 2x2 confusion matrix with the counts written in, as given (the paper's
    orientation: rows actual, columns predicted, both COVID then Normal, as
    ``metrics.confusion_matrix`` returns). Explained in notebooks/06_evaluation.
    """
    _require(confusion, PAPER_ORDER, "confusion")
    missing_rows = [name for name in PAPER_ORDER if name not in confusion.index]
    if missing_rows or confusion.shape != (2, 2):
        raise ValueError(
            f"confusion must be 2x2 with rows and columns {PAPER_ORDER}; got rows "
            f"{list(confusion.index)} and columns {list(confusion.columns)} "
            "(use metrics.confusion_matrix or paper.confusion_table)"
        )
    integer = all(pd.api.types.is_integer_dtype(dtype) for dtype in confusion.dtypes)
    figure, ax = plt.subplots(figsize=(3.8, 3.3), layout="constrained")
    sns.heatmap(confusion, annot=True, fmt="d" if integer else "g", cmap="Blues", cbar=False,
                ax=ax, annot_kws={"size": 14})
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    ax.set_title(title)
    return _finish(figure, path)


def paper_long(table: pd.DataFrame) -> pd.DataFrame:
    """A wide metrics table (index model, one column per metric, like ``paper.table6()``) in the
    long form ``plot_paper_vs_ours`` takes: columns model, metric, value.
    Explained in notebooks/07_comparison.
    """
    missing = [metric for metric in METRIC_ORDER if metric not in table.columns]
    if missing:
        raise ValueError(f"table has no column {', '.join(map(repr, missing))}; pass paper.table6()")
    long = table[METRIC_ORDER].rename_axis("model").reset_index()
    return long.melt(id_vars="model", var_name="metric", value_name="value")


def plot_paper_vs_ours(ours: pd.DataFrame, paper: pd.DataFrame, path=None, title="Paper vs this run"):
    """One panel per model: bars per metric, the paper's value beside this run's.

    Both inputs are long form, one row per (model, metric), with columns model, metric
    (accuracy, precision, recall, f1) and value; ``paper_long(paper.table6())`` gives ``paper``.
    ``ours`` may add low and high (e.g. ``metrics.metrics_with_intervals``), drawn as error bars;
    other columns are ignored. Explained in notebooks/07_comparison.
    """
    _require(ours, LONG_COLUMNS, "ours")
    _require(paper, LONG_COLUMNS, "paper")
    interval_columns = {"low", "high"} & set(ours.columns)
    if len(interval_columns) == 1:
        absent = ({"low", "high"} - interval_columns).pop()
        raise ValueError(f"ours has no column {absent!r}; give both low and high, or neither")
    for what, table in (("ours", ours), ("paper", paper)):
        unknown = sorted(set(table["metric"]) - set(METRIC_ORDER))
        if unknown:
            raise ValueError(f"{what} has unknown metrics {unknown}; use {METRIC_ORDER}")
        if table.duplicated(["model", "metric"]).any():
            raise ValueError(f"{what} has more than one row for some (model, metric); keep one each")

    combined = pd.concat([paper.assign(source=SOURCES[0]), ours.assign(source=SOURCES[1])],
                         ignore_index=True)
    models = list(dict.fromkeys([*paper["model"], *ours["model"]]))
    figure, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), sharey=True,
                                squeeze=False, layout="constrained")
    for ax, model in zip(axes[0], models):
        part = combined[combined["model"] == model]
        sns.barplot(data=part, x="metric", y="value", hue="source", order=METRIC_ORDER,
                    hue_order=SOURCES, errorbar=None, ax=ax)
        mine = ours[ours["model"] == model].set_index("metric")
        if interval_columns and not mine.empty:
            # Centre each error bar on its "This run" bar, wherever seaborn placed it
            # (the bar's category is the nearest whole x, as seaborn puts category i at x = i).
            bars = ax.containers[SOURCES.index("This run")]
            centres = [bar.get_x() + bar.get_width() / 2 for bar in bars]
            x = pd.Series(centres, index=[METRIC_ORDER[round(c)] for c in centres])
            mine = mine.loc[x.index]
            below, above = mine["value"] - mine["low"], mine["high"] - mine["value"]
            errors = [below.clip(lower=0), above.clip(lower=0)]
            ax.errorbar(x, mine["value"], yerr=errors, fmt="none", ecolor="black", capsize=3)
        ax.set_title(model)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("")
        ax.legend(loc="lower right", fontsize=8)
    figure.suptitle(title)
    return _finish(figure, path)
