"""Figures of the book: real images, preprocessing steps, training curves (the paper's
Figures 3-5), confusion heatmaps and paper-vs-ours bars.

Every function returns the matplotlib Figure and, given ``path``, also saves it there as PNG.
Nothing calls ``plt.show()``; notebooks display the returned figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.rcParams["figure.max_open_warning"] = 0
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
LONG_COLUMNS = ("model", "metric", "value")
METRIC_ORDER = ["accuracy", "precision", "recall", "f1"]


def _require(table: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} has no column {', '.join(map(repr, missing))}; it has {list(table.columns)}")


def _finish(figure, path):
    figure.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120, bbox_inches="tight")
    return figure


def plot_image_grid(manifest: pd.DataFrame, per_class: int = 6, seed: int = 0, path=None):
    """A row of real X-rays per class, drawn with ``seed``. Explained in notebooks/01_data_collection."""
    from cxr_utils import data

    _require(manifest, ("path", "class"), "manifest")
    classes = ["COVID", "Normal"]
    figure, axes = plt.subplots(len(classes), per_class, figsize=(1.9 * per_class, 4.2), squeeze=False)
    for row, name in enumerate(classes):
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
    """One image through each step of ``data.preprocessing_steps``. Explained in notebooks/02_preprocessing."""
    figure, axes = plt.subplots(1, len(steps), figsize=(3 * len(steps), 3.4))
    for ax, (name, array) in zip(np.atleast_1d(axes), steps.items()):
        shown = array[..., 0] if array.ndim == 3 and array.shape[-1] == 3 else array
        if shown.ndim == 3:  # an RGBA or 2-channel original: show as is
            ax.imshow(shown)
        else:
            ax.imshow(shown, cmap="gray")
        ax.set_title(f"{name}\n{array.shape} {array.dtype}\n[{array.min():.3g}, {array.max():.3g}]", fontsize=8)
        ax.axis("off")
    return _finish(figure, path)


def model_table(model) -> pd.DataFrame:
    """The model's layers as a table (name, type, output shape, parameters), sub-models expanded."""
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
        except (AttributeError, ValueError):
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
    table = pd.DataFrame(rows)
    table.attrs["total parameters"] = int(model.count_params())
    return table


def plot_training_curves(history: pd.DataFrame, title: str, path=None):
    """Loss and accuracy per epoch, training vs validation (the paper's Figures 3-5)."""
    _require(history, HISTORY_COLUMNS, "history")
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, label in ((loss_ax, "loss", "Loss"), (acc_ax, "accuracy", "Accuracy")):
        ax.plot(history["epoch"], history[metric], marker="o", label="training")
        ax.plot(history["epoch"], history[f"val_{metric}"], marker="s", label="validation")
        if "is_best" in history.columns and history["is_best"].any():
            best = history.loc[history["is_best"].astype(bool), "epoch"].iloc[0]
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{title}: {label.lower()}")
        ax.legend()
    acc_ax.set_ylim(0, 1.02)
    return _finish(figure, path)


def plot_confusion(confusion: pd.DataFrame, title: str, path=None):
    """Heatmap of a confusion matrix in the paper's orientation (rows actual, columns predicted)."""
    if confusion.shape != (2, 2):
        raise ValueError(f"confusion must be 2x2 (COVID, Normal), not {confusion.shape}")
    figure, ax = plt.subplots(figsize=(3.8, 3.3))
    sns.heatmap(confusion, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax, annot_kws={"size": 14})
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    ax.set_title(title)
    return _finish(figure, path)


def paper_long(table: pd.DataFrame) -> pd.DataFrame:
    """A wide table (index model, metric columns, like ``paper.table6()``) in long form."""
    long = table.reset_index().melt(id_vars=table.index.name or "index", var_name="metric", value_name="value")
    return long.rename(columns={table.index.name or "index": "model"})


def plot_paper_vs_ours(ours: pd.DataFrame, paper: pd.DataFrame, path=None, title="Paper vs this run"):
    """Grouped bars per model and metric; this run's bars carry their 95% intervals.

    Both inputs are long form with columns model, metric, value; ``ours`` may add low, high.
    """
    _require(ours, LONG_COLUMNS, "ours")
    _require(paper, LONG_COLUMNS, "paper")
    combined = pd.concat([paper.assign(source="Paper"), ours.assign(source="This run")], ignore_index=True)
    models = list(dict.fromkeys(paper["model"]).keys())
    figure, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        part = combined[combined["model"] == model]
        sns.barplot(data=part, x="metric", y="value", hue="source", order=METRIC_ORDER, ax=ax, errorbar=None)
        if {"low", "high"} <= set(ours.columns):
            mine = ours[ours["model"] == model].set_index("metric").reindex(METRIC_ORDER)
            x = np.arange(len(METRIC_ORDER)) + 0.2  # the "This run" bars sit right of centre
            ax.errorbar(x, mine["value"], yerr=[mine["value"] - mine["low"], mine["high"] - mine["value"]],
                        fmt="none", ecolor="black", capsize=3)
        ax.set_title(model)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("")
    figure.suptitle(title)
    return _finish(figure, path)
