"""Figures of the book: real X-rays, preprocessing steps, training curves (the paper's Figures 3-5),
confusion heatmaps, paper-vs-ours bars, ROC curves and reliability diagrams.

Every plotting function returns the matplotlib Figure and, given ``path``, also saves it there as
PNG (parent folders created). Nothing calls ``plt.show()``: a notebook displays the returned figure,
a script or test closes it with ``plt.close(figure)``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from cxr_utils.config import HISTORY_COLUMNS, METRICS, PAPER_ORDER
from cxr_utils.report import NEAR_CHANCE

LONG_COLUMNS = ("model", "metric", "value")
METRIC_ORDER = list(METRICS)
SOURCES = ["Paper", "This run"]
DPI = 120
# The book shows a figure at the width of its content column, about 7 inches at 1280 px: a wider
# figure is scaled down, and its text with it. Every text must stay at least MIN_POINTS there.
PAGE_WIDTH_IN = 7.0
MIN_POINTS = 9
FONT_SIZE = 10  # every text of the ROC and reliability figures: at least 9 pt, readable in the book
PREDICTION_COLUMNS = ("label", "probability")


def _require(table, columns, what: str) -> None:
    """ValueError unless ``table`` is a DataFrame with rows and every one of ``columns``."""
    from cxr_utils.data.manifest import require_columns  # on use, as plot_image_grid imports data

    require_columns(
        table, columns, what, error=ValueError, not_a_table="{what} must be a pandas DataFrame",
        fix="it has {columns}", quote=True, empty="{what} is empty; there is nothing to plot",
    )


def _legible(figure) -> None:
    """Raise every text of ``figure`` to at least MIN_POINTS as shown at the book's page width."""
    floor = MIN_POINTS / min(1.0, PAGE_WIDTH_IN / figure.get_figwidth())
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = axis.get_ticklabels()
            if labels and min(label.get_fontsize() for label in labels) < floor:
                ax.tick_params(axis="x" if axis is ax.xaxis else "y", labelsize=floor)
    for text in figure.findobj(matplotlib.text.Text):
        if text.get_text() and text.get_fontsize() < floor:
            text.set_fontsize(floor)


def smallest_shown_points(figure) -> float:
    """The smallest text of ``figure`` in points as the book shows it (scaled to the page width)."""
    figure.canvas.draw()
    sizes = [t.get_fontsize() for t in figure.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]
    return min(sizes) * min(1.0, PAGE_WIDTH_IN / figure.get_figwidth())


def finish_figure(figure, path):
    _legible(figure)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=DPI, bbox_inches="tight")
    return figure


def mark_chance(ax) -> None:
    """Chance (0.5) dashed and the near-chance bound (``report.NEAR_CHANCE``) dotted, labelled for
    the legend, on an accuracy panel."""
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (0.5)")
    ax.axhline(NEAR_CHANCE, color="grey", linestyle=":", linewidth=1, label=f"near chance ({NEAR_CHANCE})")


def plot_image_grid(manifest: pd.DataFrame, per_class: int = 6, seed: int = 0, path=None):
    """One row of real X-rays per class (COVID, Normal), ``per_class`` of each drawn with ``seed`` from
    ``manifest`` (as ``data.build_manifest`` writes it). Explained in notebooks/01_data_collection.
    """
    from cxr_utils import data  # imported here: reading images needs Pillow, plots otherwise don't

    _require(manifest, ("path", "class"), "manifest")
    figure, axes = plt.subplots(len(PAPER_ORDER), per_class, figsize=(1.25 * per_class, 3.4), squeeze=False)
    for row, name in enumerate(PAPER_ORDER):
        rows = manifest[manifest["class"] == name]
        chosen = rows.sample(n=min(per_class, len(rows)), random_state=seed)
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(chosen):
                image_path = chosen["path"].iloc[col]
                ax.imshow(data.decode_grayscale(image_path), cmap="gray")
                ax.set_title(f"{name}\n{Path(image_path).name}", fontsize=MIN_POINTS)
    return finish_figure(figure, path)


def plot_preprocessing_steps(steps: dict, path=None):
    """One image after each step of ``data.preprocessing_steps`` (name -> array), with its shape,
    dtype and value range. Explained in notebooks/02_preprocessing.
    """
    if not steps:
        raise ValueError("steps is empty; pass the dict that data.preprocessing_steps returns")
    figure, axes = plt.subplots(1, len(steps), figsize=(1.45 * len(steps), 2.8), squeeze=False)
    for ax, (name, array) in zip(axes[0], steps.items()):
        array = np.asarray(array)
        if array.ndim == 3 and array.shape[-1] in (3, 4):
            ax.imshow(array)  # RGB(A), e.g. the three-channel model input
        else:
            ax.imshow(array[..., 0] if array.ndim == 3 else array, cmap="gray")
        ax.set_title(f"{name}\n{array.shape} {array.dtype}\n[{array.min():.3g}, {array.max():.3g}]",
                     fontsize=MIN_POINTS)
        ax.axis("off")
    return finish_figure(figure, path)


def model_table(model) -> pd.DataFrame:
    """A Keras model's layers as a table: layer, type, output shape, parameters, trainable.

    Sub-models named "backbone" or "head" are expanded (their layers prefixed "backbone/");
    ``attrs["total parameters"]`` holds the model's total, ``attrs["trainable parameters"]``
    those ``fit`` updates. Explained in notebooks/03_resnet50.
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
        rows.append((prefix + layer.name, type(layer).__name__, shape, int(layer.count_params()),
                     bool(layer.trainable)))

    for layer in model.layers:
        walk(layer)
    table = pd.DataFrame(rows, columns=["layer", "type", "output shape", "parameters", "trainable"])
    table.attrs["total parameters"] = int(model.count_params())
    table.attrs["trainable parameters"] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return table


def plot_training_curves(history: pd.DataFrame, title: str, path=None):
    """Loss and accuracy per epoch, training vs validation, in two panels (the paper's Figures 3-5).

    ``history`` has columns epoch (1-based), loss, accuracy, val_loss, val_accuracy and optionally
    is_best (the epoch kept; dashed line) and train_inference_loss / train_inference_accuracy
    (training images scored in inference mode, as the test sees them: ``callbacks.InferenceModeCheck``;
    dotted). Losses on a log scale, so one epoch's spike does not flatten the others.
    Explained in notebooks/03_resnet50.
    """
    _require(history, HISTORY_COLUMNS, "history")
    figure, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH_IN, 3.9), layout="constrained")
    best = None
    if "is_best" in history.columns and history["is_best"].astype(bool).any():
        best = history.loc[history["is_best"].astype(bool), "epoch"].iloc[0]
    for ax, metric, label in zip(axes, ("loss", "accuracy"), ("Loss", "Accuracy")):
        ax.plot(history["epoch"], history[metric], marker="o", label="training (training mode)")
        if f"train_inference_{metric}" in history.columns:
            ax.plot(history["epoch"], history[f"train_inference_{metric}"], marker="^", linestyle=":",
                    label="training images, inference mode")
        ax.plot(history["epoch"], history[f"val_{metric}"], marker="s", label="validation")
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label + (" (log scale)" if metric == "loss" else ""))
        ax.set_title(f"{title}: {label.lower()}")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, fontsize=MIN_POINTS, frameon=False)
    axes[0].set_yscale("log")
    axes[1].set_ylim(0, 1.02)
    return finish_figure(figure, path)


def plot_confusion(confusion: pd.DataFrame, title: str, path=None):
    """Heatmap of a 2x2 confusion matrix with the counts written in, as given (the paper's
    orientation: rows actual, columns predicted, both COVID then Normal, as
    ``metrics.confusion_matrix`` returns). Explained in notebooks/06_evaluation.
    """
    _require(confusion, PAPER_ORDER, "confusion")
    if not set(PAPER_ORDER) <= set(confusion.index) or confusion.shape != (2, 2):
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
    return finish_figure(figure, path)


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
    # One model per row, at the page's width: three side by side would shrink every label.
    figure, axes = plt.subplots(len(models), 1, figsize=(PAGE_WIDTH_IN, 2.2 * len(models)), sharex=True,
                                squeeze=False, layout="constrained")
    for ax, model in zip(axes[:, 0], models):
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
            errors = [(mine["value"] - mine["low"]).clip(lower=0), (mine["high"] - mine["value"]).clip(lower=0)]
            ax.errorbar(x, mine["value"], yerr=errors, fmt="none", ecolor="black", capsize=3)
        ax.set_title(model)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize=MIN_POINTS, frameon=False)
    figure.suptitle(title)
    return finish_figure(figure, path)


def _check_predictions(predictions) -> dict:
    """ValueError unless ``predictions`` is model name -> table with label and probability."""
    if not isinstance(predictions, dict) or not predictions:
        raise ValueError("predictions must be a non-empty dict of model name -> table "
                         "(evaluation.load_predictions returns one)")
    for name, table in predictions.items():
        _require(table, PREDICTION_COLUMNS, f"predictions[{name!r}]")
    return predictions


def _style(ax, xlabel: str, ylabel: str, title: str | None = None) -> None:
    ax.set_xlabel(xlabel, fontsize=FONT_SIZE)
    ax.set_ylabel(ylabel, fontsize=FONT_SIZE)
    ax.tick_params(labelsize=FONT_SIZE)
    if title:
        ax.set_title(title, fontsize=FONT_SIZE + 1)


def _legend_outside(ax) -> None:
    """The legend to the right of the axes, where it covers no curve."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=FONT_SIZE, frameon=False)


def plot_roc(predictions: dict[str, pd.DataFrame], path=None):
    """One ROC curve per model (COVID positive), its AUC in the legend, and the diagonal of a model
    that guesses. ``predictions``: model name -> table with columns label (0/1) and probability
    (P(COVID)), as ``evaluation.load_predictions`` returns it; each model needs both classes.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    figure, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for name, table in _check_predictions(predictions).items():
        labels = table["label"].to_numpy()
        if len(np.unique(labels)) < 2:
            raise ValueError(f"predictions[{name!r}] holds one class only ({sorted(np.unique(labels))}); "
                             "a ROC curve needs COVID and Normal images")
        false_positive, true_positive, _ = roc_curve(labels, table["probability"], pos_label=1)
        auc = roc_auc_score(labels, table["probability"])
        ax.plot(false_positive, true_positive, linewidth=1.8, label=f"{name} (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance (AUC = 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_aspect("equal")
    _style(ax, "false positive rate (1 - specificity)", "true positive rate (recall)", "ROC curves, COVID positive")
    _legend_outside(ax)
    return finish_figure(figure, path)


def plot_reliability(predictions: dict[str, pd.DataFrame], n_bins: int = 10, path=None):
    """Reliability diagram: in each of ``n_bins`` equal-width bins of predicted P(COVID), the share
    of COVID images against the mean prediction (``sklearn.calibration.calibration_curve``); a
    calibrated model lies on the diagonal. Below it, a second panel counts the images per bin.
    ``predictions`` as for ``plot_roc``.
    """
    from sklearn.calibration import calibration_curve

    if int(n_bins) != n_bins or n_bins < 2:
        raise ValueError(f"n_bins must be a whole number of at least 2, got {n_bins}")
    _check_predictions(predictions)
    figure, (curve_ax, count_ax) = plt.subplots(
        2, 1, figsize=(6.4, 6.2), sharex=True, height_ratios=(3, 1.3), layout="constrained")
    curve_ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    edges = np.linspace(0, 1, int(n_bins) + 1)
    for name, table in predictions.items():
        observed, predicted = calibration_curve(table["label"], table["probability"], n_bins=int(n_bins),
                                                strategy="uniform")
        line, = curve_ax.plot(predicted, observed, marker="o", linewidth=1.5, label=name)
        count_ax.hist(table["probability"], bins=edges, histtype="step", linewidth=1.5, color=line.get_color(),
                      label=name)
    curve_ax.set_xlim(0, 1)
    curve_ax.set_ylim(-0.02, 1.02)
    _style(curve_ax, "", "share of COVID images", "Reliability diagram")
    _style(count_ax, "predicted P(COVID)", "images")
    count_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _legend_outside(curve_ax)
    return finish_figure(figure, path)
