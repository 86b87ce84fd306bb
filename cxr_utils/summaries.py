"""The short texts the book shows about a run, each written from the run's own numbers: the
settings line at the top of every chapter, what a model's training shows (chapters 3-5), and the
run record of the reproducibility page. Nothing here names a folder of the machine that ran.

Explained in notebooks/03_resnet50 and book/reproducibility.
"""

from __future__ import annotations

from pathlib import Path, PurePath

import pandas as pd

from cxr_utils import config, metrics, paper
from cxr_utils.glance import markdown_table
from cxr_utils.report import NEAR_CHANCE, at_least, at_most


def shown_value(name: str, value):
    """A parameter as the book shows it: a folder by its last part ("…/covid19-radiography-224"),
    never the path of the machine that ran; everything else as it is."""
    if name.endswith("_dir") and isinstance(value, str) and PurePath(value).is_absolute():
        return f"…/{PurePath(value).name}"
    return value


def settings_markdown(namespace: dict) -> str:
    """One line naming every setting of the run, shown at the top of each executed page.

    ``namespace`` is a notebook's ``globals()`` (or any dict): the names of
    ``config.NOTEBOOK_PARAMETERS`` found in it are shown, in that order, after
    ``config.check_parameters`` has checked them (a wrong value stops the chapter here, with a
    message naming the parameter and what it accepts).
    """
    config.check_parameters({k: namespace[k] for k in config.NOTEBOOK_PARAMETERS if k in namespace})
    shown = {k: namespace[k] for k in config.NOTEBOOK_PARAMETERS if k in namespace and k != "cache_dir"}
    items = " · ".join(f"`{name}={shown_value(name, value)!r}`" for name, value in shown.items())
    warning = ""
    if "weights" in shown and config.weights_kind(shown["weights"]) == "scratch":
        warning = (
            "\n\n**Trained from scratch** (`weights=None`): the paper used ImageNet weights; "
            "see the replication report for what this changes."
        )
    return f"**Run settings:** {items}{warning}"


def run_record_markdown(record: dict) -> str:
    """The run record (run.json) as Markdown tables for the reproducibility page."""
    settings = [[name, f"`{shown_value(name, value)!r}`"] for name, value in record.get("settings", {}).items()]
    notebooks = []
    for name, entry in record.get("notebooks", {}).items():
        memory = entry.get("peak_memory_mb")  # recorded since runs sample their kernels' memory
        notebooks.append([name, entry.get("wall_time_s", ""), "" if memory is None else f"{memory:,}",
                          entry.get("status", ""), f"`{entry.get('code_sha256', '')[:12]}`"])
    hardware = record.get("hardware", {})
    machine = [[name, hardware.get(name, "")] for name in ("accelerator", "cpu", "cpu_count", "platform", "keras_backend")]
    if "tensorflow_threads" in hardware:
        machine.append(["tensorflow threads", ", ".join(f"{k}={v}" for k, v in hardware["tensorflow_threads"].items())])
    machine += [[name, version] for name, version in record.get("versions", {}).items()]
    return "\n".join([
        markdown_table(["setting", "value"], settings),
        markdown_table(["notebook", "wall time (s)", "peak memory (MB)", "status", "code SHA-256"], notebooks,
                       ["l", "r", "r", "l", "l"]),
        markdown_table(["hardware / version", "value"], machine),
        f"Git commit `{record.get('git_commit')}`, created {record.get('created_utc')}, "
        f"total wall time {record.get('wall_time_s')} s.\n",
    ])


def _interval(row) -> str:
    return f"{row['value']:.2f} [{row['low']:.2f}, {row['high']:.2f}]"


def _chance_epochs(epochs, values) -> list[int]:
    return [int(e) for e, v in zip(epochs, values) if at_most(v, NEAR_CHANCE)]


def training_summary(results_dir, model_id: str, name_the_hypothesis: bool = True) -> str:
    """What one model's training run shows, in a few sentences written from its saved files
    (history.csv, predictions.csv, metrics.json): the kept epoch beside the paper's, how steady
    validation was, what the inference-mode check of the training images shows, and the last
    epoch's test accuracy beside the kept one's. Explained in notebooks/03_resnet50.
    ``name_the_hypothesis=False`` leaves out the sentence on BatchNorm as a candidate cause, for a
    page that tests it beside (``cxr_utils.study.publish``).
    """
    spec = config.model_spec(model_id)
    folder = Path(results_dir) / model_id
    history = pd.read_csv(folder / "history.csv")
    predictions = pd.read_csv(folder / "predictions.csv")
    best = history.loc[history["is_best"]].iloc[0]
    paper_row = paper.table2().loc[spec.paper_name]
    test = metrics.metrics_with_intervals(predictions["label"], predictions["predicted"]).loc["accuracy"]
    n = len(history)
    lines = [
        f"- **The kept epoch.** Epoch {int(best['epoch'])} of {n} had the best validation accuracy, "
        f"{best['val_accuracy']:.2f} (the paper: {paper_row['val_accuracy']:.2f}); on the {len(predictions)} test "
        f"images its accuracy is {_interval(test)} (95% interval)."
    ]
    chance = _chance_epochs(history["epoch"], history["val_accuracy"])
    lines.append(
        f"- **Validation over the epochs** ranged from {history['val_accuracy'].min():.2f} to "
        f"{history['val_accuracy'].max():.2f}; it was at or below {NEAR_CHANCE} (a coin toss on balanced "
        f"classes) in {len(chance)} of {n} epochs" + (f" ({', '.join(map(str, chance))})." if chance else ".")
    )
    if "train_inference_accuracy" in history:
        parted = [int(row.epoch) for row in history.itertuples()
                  if at_most(row.train_inference_accuracy, NEAR_CHANCE) and at_least(row.accuracy, 0.8)]
        text = (
            f"- **The training images in inference mode** (the model as validation and test see it) scored "
            f"{history['train_inference_accuracy'].min():.2f}-{history['train_inference_accuracy'].max():.2f} "
            f"accuracy, against {history['accuracy'].min():.2f}-{history['accuracy'].max():.2f} in training mode."
        )
        if parted:
            text += (
                f" In epoch{'s' if len(parted) > 1 else ''} {', '.join(map(str, parted))} training mode reached 0.80 "
                f"or more while inference mode was at or below {NEAR_CHANCE}: the weights fit the training images, "
                "but the model used for evaluation does not reproduce it."
            )
            if spec.has_backbone and name_the_hypothesis and "val_accuracy_recomputed" in history:
                text += (" One candidate cause is BatchNorm's moving statistics lagging behind fast-changing weights: "
                         "the paired check below scores the same weights with recomputed statistics.")
            elif spec.has_backbone and name_the_hypothesis:
                text += (" One candidate cause is BatchNorm's moving statistics lagging behind fast-changing weights: "
                         "a hypothesis, not tested by this run (`recompute_batchnorm_images` is the option that "
                         "tests it; see the method page).")
        lines.append(text)
    if "predicted_last_epoch" in predictions and int(best["epoch"]) != n:
        last = metrics.metrics_with_intervals(predictions["label"], predictions["predicted_last_epoch"]).loc["accuracy"]
        lines.append(f"- **The last epoch's weights** (epoch {n}) would have scored {_interval(last)} on the same "
                     "test images: keeping the best validation epoch is this project's choice (see chapter 6).")
    return "\n".join(lines) + "\n"


KAGGLE_ORIGINAL = (299, 299, "L")  # the database's own files: 299x299 grayscale PNG


def dataset_statement(manifest: pd.DataFrame) -> str:
    """What the run's images are, said as they are: counts per class, the sizes and modes the
    files are stored in, and whether they are the database's 299x299 grayscale originals or
    re-encoded copies. Explained in notebooks/01_data_collection.
    """
    counts = manifest["class"].value_counts()
    sizes = manifest.groupby(["width", "height"]).size().sort_values(ascending=False)
    stored = ", ".join(f"{w}x{h} ({n:,} files)" for (w, h), n in sizes.items())
    modes = ", ".join(sorted(set(manifest["mode"])))
    width, height, mode = KAGGLE_ORIGINAL
    text = (f"This run's copy of the database holds {counts.get('COVID', 0):,} COVID and {counts.get('Normal', 0):,} "
            f"Normal images, stored at {stored}, PIL mode {modes}. ")
    if set(sizes.index) == {(width, height)} and set(manifest["mode"]) == {mode}:
        return text + "These are the database's own 299x299 grayscale files; chapter 2 resizes them to 224x224."
    return text + (f"The database's own files are {width}x{height} grayscale: these are re-encoded copies, so what "
                   "chapter 2 shows of the resize step is what it does to these copies, not to the originals.")
