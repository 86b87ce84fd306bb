"""The paper's protocol beside this project's remedy for unsteady validation (book/remedy.md).

From scratch, ResNet50 and the hybrid reach 0.87-0.91 accuracy in training mode while, in some
epochs, the same model in inference mode scores its own training images at chance: BatchNorm's
moving statistics do not describe the current weights. The remedy, off by default, recomputes them
from a few hundred training images before every evaluation (``TrainingConfig.
recompute_batchnorm_images``, ``callbacks.recompute_batchnorm_statistics``); the weights are
untouched. The paper says nothing of it: its protocol stays the default, and this module sets two
runs side by side, the same split and seed, one with the option.

    python -m cxr_utils.training_cli --model resnet50 --weights none --results-dir results/paper-protocol
    python -m cxr_utils.training_cli --model resnet50 --weights none --results-dir results/remedy \\
        --recompute-batchnorm-images 320

The report shows the comparison for seed studies run with and without the option
(``cxr_utils.study.publish``).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from cxr_utils import config, evaluation, metrics, prose
from cxr_utils.plots import MIN_POINTS, PAGE_WIDTH_IN, finish_figure, mark_chance
from cxr_utils.claims import SIGNIFICANCE, at_most
from cxr_utils.glance import interval
from cxr_utils.report import NEAR_CHANCE

OPTION = "recompute_batchnorm_images"  # the TrainingConfig field, as run.json records it
PROTOCOLS = {"paper": "the paper's protocol", "remedy": "BatchNorm statistics recomputed"}
# run.json settings that must agree for two runs to be compared (the option itself may differ).
SAME_SETTINGS = ("model", "model_options", "images", "image_size", "blanked")
SAME_TRAINING = ("epochs", "batch_size", "learning_rate", "seed", "restore_best")


def _run(folder: Path) -> dict:
    path = folder / "run.json"
    if not path.is_file():
        raise ValueError(f"{path} not found: compare results folders written by training.run_experiment")
    return json.loads(path.read_text())["settings"]


def _check_pair(paper: dict, remedy: dict, model_id: str) -> None:
    differ = [name for name in SAME_SETTINGS if paper.get(name) != remedy.get(name)]
    differ += [f"training.{name}" for name in SAME_TRAINING
               if paper.get("training", {}).get(name) != remedy.get("training", {}).get(name)]
    if differ:
        raise ValueError(f"{model_id}: the two runs differ in {', '.join(differ)}; compare runs of the same "
                         "split and seed that differ only in recompute_batchnorm_images")
    if paper.get("training", {}).get(OPTION, 0):
        raise ValueError(f"{model_id}: the paper's run has {OPTION}={paper['training'][OPTION]}; it must be 0")
    if not remedy.get("training", {}).get(OPTION, 0):
        raise ValueError(f"{model_id}: the remedy's run has {OPTION}=0, the paper's protocol; it must be positive")


def _row(folder: Path, settings: dict) -> dict:
    history = evaluation.read_history(folder)
    record = json.loads((folder / "metrics.json").read_text())
    test = record["test"]
    tp, fn, fp, tn = (int(test[k]) for k in ("tp", "fn", "fp", "tn"))
    labels = np.array([1] * (tp + fn) + [0] * (fp + tn))
    predicted = np.array([1] * tp + [0] * fn + [1] * fp + [0] * tn)
    accuracy = metrics.metrics_with_intervals(labels, predicted).loc["accuracy"]
    inference = history["train_inference_accuracy"] if "train_inference_accuracy" in history else None
    return {
        OPTION: int(settings.get("training", {}).get(OPTION, 0)),
        "batchnorm_layers_recomputed": settings.get("batchnorm_layers_recomputed", np.nan),
        "epochs": len(history),
        "epochs_near_chance": int(at_most(history["val_accuracy"], NEAR_CHANCE).sum()),
        "val_accuracy_min": float(history["val_accuracy"].min()),
        "val_accuracy_max": float(history["val_accuracy"].max()),
        "train_inference_accuracy_min": np.nan if inference is None else float(inference.min()),
        "best_epoch": int(history.loc[history["is_best"].astype(bool), "epoch"].iloc[0]),
        "test_accuracy": float(accuracy["value"]),
        "test_low": float(accuracy["low"]),
        "test_high": float(accuracy["high"]),
        "test_n": int(test["n"]),
        # The last epoch's weights on the same test images (absent in older runs).
        "test_last_epoch_accuracy": float(last["accuracy"]) if (last := record.get("test_last_epoch")) else np.nan,
    }


def run_figures(folder) -> dict:
    """One training run's figures, as ``remedy_table`` gives them per protocol (and the last
    epoch's test accuracy), from its results folder (run.json, history.csv, metrics.json)."""
    folder = Path(folder)
    return _row(folder, _run(folder))


def paired_test(paper_folder, remedy_folder) -> dict:
    """McNemar's exact test between two runs of one model on the same test images (their
    predictions.csv): paper_only / remedy_only (the images only that run got right), p_value, n.
    Paired, because both runs are scored on the same images; ValueError when they are not."""
    tables = [pd.read_csv(Path(folder) / "predictions.csv") for folder in (paper_folder, remedy_folder)]
    if tables[0]["path"].tolist() != tables[1]["path"].tolist() or not tables[0]["label"].equals(tables[1]["label"]):
        raise ValueError(f"{paper_folder} and {remedy_folder} were tested on different images; a paired test "
                         "needs runs of the same split and seed")
    test = metrics.mcnemar_test(tables[0]["label"], tables[0]["predicted"], tables[1]["predicted"])
    return {"paper_only": int(test["a_only_correct"]), "remedy_only": int(test["b_only_correct"]),
            "p_value": float(test["p_value"]), "n": int(test["n"])}


def _model_ids(paper_dir: Path, remedy_dir: Path, model_ids) -> list[str]:
    if model_ids is not None:
        return [config.model_spec(m).id for m in model_ids]
    found = [m for m in config.REGISTRY
             if (paper_dir / m / "metrics.json").is_file() and (remedy_dir / m / "metrics.json").is_file()]
    if not found:
        raise ValueError(f"no model has results in both {paper_dir} and {remedy_dir}")
    return found


def remedy_table(paper_dir, remedy_dir, model_ids=None) -> pd.DataFrame:
    """Per model and protocol, from two results folders of the same split and seed (the second run
    with ``recompute_batchnorm_images`` > 0): epochs with validation accuracy at or below
    ``report.NEAR_CHANCE`` (the project's near-chance rule), the validation accuracy's range, the
    lowest inference-mode accuracy on training images, the kept epoch, and test accuracy with its
    95% Wilson interval; on both of a model's rows McNemar's paired test between the two runs
    (``paired_test``: paired_paper_only, paired_remedy_only, paired_p_value, paired_n). Columns
    model, model_id, protocol ("paper" or "remedy") and those figures.
    ``model_ids``: default, every registry model with results in both folders. ValueError when the
    runs differ in anything else than the option.
    """
    paper_dir, remedy_dir = Path(paper_dir), Path(remedy_dir)
    rows = []
    for model_id in _model_ids(paper_dir, remedy_dir, model_ids):
        paper_settings, remedy_settings = _run(paper_dir / model_id), _run(remedy_dir / model_id)
        _check_pair(paper_settings, remedy_settings, model_id)
        paired = {f"paired_{k}": v for k, v in paired_test(paper_dir / model_id, remedy_dir / model_id).items()}
        for protocol, folder, settings in (("paper", paper_dir, paper_settings),
                                           ("remedy", remedy_dir, remedy_settings)):
            rows.append({"model": config.model_spec(model_id).paper_name, "model_id": model_id,
                         "protocol": protocol, **_row(folder / model_id, settings), **paired})
    return pd.DataFrame(rows)


def _range(row) -> str:
    return f"{row.val_accuracy_min:.2f}-{row.val_accuracy_max:.2f}"


def _test(row) -> str:
    return interval(row.test_accuracy, row.test_low, row.test_high)


def remedy_table_markdown(table: pd.DataFrame) -> str:
    """``remedy_table`` as a Markdown table a reader can scan: per model and protocol, the epochs
    near chance, the validation accuracy's range, the lowest inference-mode accuracy on training
    images, the kept epoch and test accuracy with its 95% interval."""
    shown = pd.DataFrame({"model": table["model"], "protocol": table["protocol"].map(PROTOCOLS),
                          **figure_columns(table)})
    return figures_markdown(shown, text_columns=2)


def figures_markdown(shown: pd.DataFrame, text_columns: int) -> str:
    """A table of figures already formatted as text, as Markdown, each cell as written (no "0.60"
    shown as 0.6); its first ``text_columns`` columns aligned left, the figures right."""
    return shown.to_markdown(index=False, disable_numparse=True,
                             colalign=["left"] * text_columns + ["right"] * (shown.shape[1] - text_columns))


def figure_columns(table: pd.DataFrame) -> dict[str, list]:
    """The columns a reader sees of ``remedy_table``'s (or ``run_figures``') figures, named for the
    page: epochs near chance, the validation accuracy's range, the lowest inference-mode accuracy
    on training images, the kept epoch and test accuracy with its 95% interval."""
    return {
        f"epochs near chance (val. acc. <= {NEAR_CHANCE})": table["epochs_near_chance"].tolist(),
        "validation accuracy over the epochs": [_range(row) for row in table.itertuples()],
        "lowest inference-mode accuracy, training images": [f"{v:.2f}" for v in table.train_inference_accuracy_min],
        "kept epoch": table["best_epoch"].tolist(),
        f"test accuracy (n={int(table.test_n.max())}), 95% interval": [_test(row) for row in table.itertuples()],
    }


def _protocol_figures(row) -> dict:
    """One protocol's row of ``remedy_table`` as ``remedy_reading.md.j2`` states it."""
    return {"range": _range(row), "epochs_near_chance": int(row.epochs_near_chance), "epochs": int(row.epochs),
            "best_epoch": int(row.best_epoch), "test": _test(row)}


def _paired(row) -> dict:
    """The paired test of a ``remedy_table`` row: on the same test images, how many only each run got
    right, McNemar's exact p, and the protocol right more often when that tells the runs apart
    (None: a difference chance alone could give)."""
    paper_only, remedy_only, p_value = int(row.paired_paper_only), int(row.paired_remedy_only), row.paired_p_value
    better = PROTOCOLS["remedy" if remedy_only > paper_only else "paper"] if p_value < SIGNIFICANCE else None
    return {"n": int(row.paired_n), "paper_only": paper_only, "remedy_only": remedy_only, "p_value": p_value,
            "better": better}


def remedy_markdown(table: pd.DataFrame) -> str:
    """What ``remedy_table`` shows, in plain words written from its numbers: per model, how often
    validation sat near chance under each protocol, how the inference-mode check of the training
    images moved, and whether the test intervals overlap. The words are in
    ``cxr_utils/templates/remedy_reading.md.j2``."""
    models = []
    for model, rows in table.groupby("model", sort=False):
        paper = rows[rows["protocol"] == "paper"].iloc[0]
        remedy = rows[rows["protocol"] == "remedy"].iloc[0]
        if remedy["batchnorm_layers_recomputed"] == 0:
            models.append({"name": model, "recomputed": False})
            continue
        inference_mins = (paper.train_inference_accuracy_min, remedy.train_inference_accuracy_min)
        models.append({"name": model, "recomputed": True, "images": int(remedy[OPTION]),
                       "paper": _protocol_figures(paper), "remedy": _protocol_figures(remedy),
                       "inference_mins": None if np.isnan(inference_mins).any() else inference_mins,
                       "paired": _paired(paper)})
    return prose.render("remedy_reading.md.j2", models=models, near_chance=NEAR_CHANCE)


CURVE_COLUMNS = ("epoch", "val_accuracy")  # what plot_remedy_curves draws from every history


def plot_remedy_curves(paper_dir, remedy_dir, model_id: str, path=None):
    """Validation accuracy (left) and inference-mode accuracy on training images (right) per epoch,
    the paper's protocol beside the remedy, with chance (0.5) and the near-chance bound dashed.
    Returns the Figure; saves it as PNG at ``path`` when given (as every ``cxr_utils.plots``
    figure)."""
    spec = config.model_spec(model_id)
    paper_dir, remedy_dir = Path(paper_dir), Path(remedy_dir)
    _check_pair(_run(paper_dir / spec.id), _run(remedy_dir / spec.id), spec.id)
    histories = {protocol: evaluation.read_history(folder / spec.id, CURVE_COLUMNS)
                 for protocol, folder in (("paper", paper_dir), ("remedy", remedy_dir))}
    figure, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH_IN, 3.6), layout="constrained", sharey=True)
    panels = (("val_accuracy", "validation accuracy"),
              ("train_inference_accuracy", "training images, inference mode"))
    for ax, (column, title) in zip(axes, panels):
        for (protocol, history), marker in zip(histories.items(), ("o", "s")):
            if column in history:
                ax.plot(history["epoch"], history[column], marker=marker, label=PROTOCOLS[protocol])
        mark_chance(ax)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("accuracy")
    figure.suptitle(spec.paper_name)
    # One legend for both panels, below them, so that neither panel is squeezed by it.
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=MIN_POINTS,
                  frameon=False)
    return finish_figure(figure, path)
