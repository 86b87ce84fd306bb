"""The paired BatchNorm check of a model chapter: the same weights scored two ways.

From scratch, validation accuracy can fall to chance in some epochs while training mode reports
0.8 or more; one candidate cause is BatchNorm's moving statistics lagging behind fast-changing
weights. ``callbacks.PairedBatchNormCheck`` tests that after every epoch, training unchanged: the
same weights scored with the moving statistics (the paper's protocol) and with statistics
recomputed from training images (``config.CHOICES.fit_batchnorm_images``). At the kept epoch the
test images are scored both ways too (``experiment.RECOMPUTED_COLUMNS``), and McNemar's exact test
says whether the two ways differ. Only the statistics differ, so a difference is theirs.

This module turns what training saved (history.csv, predictions.csv) into the chapter's table,
figure and sentences. Explained in notebooks/03_resnet50 and 05_resnet50_lstm.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from cxr_utils import config, evaluation, metrics, prose
from cxr_utils.callbacks import PairedBatchNormCheck
from cxr_utils.claims import SIGNIFICANCE, at_most
from cxr_utils.experiment import RECOMPUTED_COLUMNS
from cxr_utils.glance import interval
from cxr_utils.plots import MIN_POINTS, PAGE_WIDTH_IN, finish_figure, mark_chance
from cxr_utils.report import NEAR_CHANCE

WAYS = {"moving": "moving statistics (the paper's protocol)", "recomputed": "statistics recomputed"}
# history.csv column of each (figure, way).
COLUMNS = {
    "validation": {"moving": "val_accuracy", "recomputed": PairedBatchNormCheck.LOGS[0]},
    "training images, inference mode": {"moving": "train_inference_accuracy",
                                        "recomputed": PairedBatchNormCheck.LOGS[1]},
}


def has_check(results_dir, model_id: str) -> bool:
    """Whether this model's training ran the paired check (a model with trainable BatchNorm, the
    remedy off, ``TrainingConfig.batchnorm_check`` on)."""
    return evaluation.ran_paired_check(Path(results_dir) / config.model_spec(model_id).id)


def _checked_history(results_dir, model_id: str) -> pd.DataFrame:
    """The model's history; ValueError when its training ran no paired check."""
    folder = Path(results_dir) / config.model_spec(model_id).id
    history = evaluation.read_history(folder)
    if not evaluation.ran_paired_check(folder):
        raise ValueError(f"{folder / evaluation.HISTORY} has no paired BatchNorm check: its model has no "
                         "trainable BatchNorm, or it trained with the remedy or with batchnorm_check=False")
    return history


def epoch_table(results_dir, model_id: str) -> pd.DataFrame:
    """Per epoch, validation and training-image (inference-mode) accuracy, each with moving and
    recomputed statistics, and the epoch kept. ValueError when the run has no paired check."""
    history = _checked_history(results_dir, model_id)
    table = pd.DataFrame({"epoch": history["epoch"].astype(int)})
    for figure, ways in COLUMNS.items():
        for way, column in ways.items():
            table[f"{figure}: {way}"] = history[column].round(2)
    table["kept"] = history["is_best"].map({True: "kept", False: ""})
    return table.set_index("epoch")


def test_pair(results_dir, model_id: str) -> dict:
    """The kept weights on the test images both ways: accuracy with its 95% interval for each
    (moving, recomputed: ``metrics.metrics_with_intervals`` rows), the images only one way got
    right (moving_only, recomputed_only), McNemar's exact p and n."""
    folder = Path(results_dir) / config.model_spec(model_id).id
    predictions = pd.read_csv(folder / "predictions.csv")
    if RECOMPUTED_COLUMNS[1] not in predictions:
        raise ValueError(f"{folder / 'predictions.csv'} has no {RECOMPUTED_COLUMNS[1]} column: its model was not "
                         "scored with recomputed BatchNorm statistics (see has_check)")
    labels = predictions["label"]
    accuracy = {way: metrics.metrics_with_intervals(labels, predictions[column]).loc["accuracy"]
                for way, column in (("moving", "predicted"), ("recomputed", RECOMPUTED_COLUMNS[1]))}
    test = metrics.mcnemar_test(labels, predictions["predicted"], predictions[RECOMPUTED_COLUMNS[1]])
    return {**accuracy, "moving_only": test["a_only_correct"], "recomputed_only": test["b_only_correct"],
            "p_value": test["p_value"], "n": test["n"]}


def plot_batchnorm_check(results_dir, model_id: str, path=None):
    """Validation accuracy (left) and the training images' inference-mode accuracy (right) per
    epoch, moving statistics beside recomputed ones, the kept epoch marked; saved as PNG at ``path``."""
    spec = config.model_spec(model_id)
    history = _checked_history(results_dir, spec.id)
    curves = {title: {way: history[column] for way, column in ways.items()} for title, ways in COLUMNS.items()}
    figure, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH_IN, 3.6), layout="constrained", sharey=True)
    kept = int(history.loc[history["is_best"], "epoch"].iloc[0])
    for ax, (title, ways) in zip(axes, curves.items()):
        for (way, accuracy), marker in zip(ways.items(), ("o", "s")):
            ax.plot(history["epoch"], accuracy, marker=marker, label=WAYS[way])
        mark_chance(ax)
        ax.axvline(kept, color="grey", linestyle="-.", linewidth=1, label=f"kept epoch ({kept})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("accuracy")
    figure.suptitle(f"{spec.paper_name}: the same weights, two kinds of BatchNorm statistics")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=MIN_POINTS,
                  frameon=False)
    return finish_figure(figure, path)


def check_markdown(results_dir, model_id: str) -> str:
    """What the paired check shows: the epochs where validation was near chance one way and not the
    other, and the test images at the kept epoch both ways, with McNemar's exact test."""
    table = epoch_table(results_dir, model_id)

    def validation(way: str) -> dict:
        accuracy = table[f"validation: {way}"]
        return {"min": accuracy.min(), "max": accuracy.max(),
                "near_chance": [int(e) for e, v in accuracy.items() if at_most(v, NEAR_CHANCE)]}

    pair = test_pair(results_dir, model_id)
    better = None
    if pair["p_value"] < SIGNIFICANCE:
        better = WAYS["recomputed" if pair["recomputed_only"] > pair["moving_only"] else "moving"]
    test = {**pair, "better": better}
    for way in ("moving", "recomputed"):  # the accuracy rows as "0.73 [0.64, 0.81]"
        test[way] = interval(pair[way]["value"], pair[way]["low"], pair[way]["high"])
    return prose.render("batchnorm_check.md.j2", n_epochs=len(table), near_chance=NEAR_CHANCE,
                        moving=validation("moving"), recomputed=validation("recomputed"), test=test)
