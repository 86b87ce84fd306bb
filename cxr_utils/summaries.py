"""The short texts the book shows about a run, each written from the run's own numbers: the
settings line atop every chapter, what a model's training shows (chapters 3-5), and chapter 1's
dataset statement. Nothing here names a folder of the machine that ran. Explained in
notebooks/01_data_collection and notebooks/03_resnet50.
"""

from __future__ import annotations

from pathlib import Path, PurePath

import pandas as pd

from cxr_utils import config, evaluation, metrics, paper, prose
from cxr_utils.claims import at_least, at_most
from cxr_utils.glance import interval
from cxr_utils.report import NEAR_CHANCE


def shown_value(name: str, value):
    """A parameter as the book shows it: an absolute ``*_dir`` folder by its last part
    ("…/covid19-radiography-224"), never the path of the machine that ran."""
    if name.endswith("_dir") and isinstance(value, str) and PurePath(value).is_absolute():
        return f"…/{PurePath(value).name}"
    return value


def settings_markdown(namespace: dict) -> str:
    """One line naming every setting of the run, shown atop each executed page: the
    ``config.NOTEBOOK_PARAMETERS`` found in ``namespace`` (a notebook's ``globals()``), in that order,
    once ``config.check_parameters`` has accepted them (a wrong value stops the chapter here).
    """
    config.check_parameters({k: namespace[k] for k in config.NOTEBOOK_PARAMETERS if k in namespace})
    shown = {k: namespace[k] for k in config.NOTEBOOK_PARAMETERS if k in namespace and k != "cache_dir"}
    return prose.render("settings_line.md.j2",
                        shown={name: repr(shown_value(name, value)) for name, value in shown.items()},
                        from_scratch="weights" in shown and config.weights_kind(shown["weights"]) == "scratch")


def training_summary(results_dir, model_id: str, name_the_hypothesis: bool = True) -> str:
    """What one model's training run shows, in a few sentences written from its history.csv and
    predictions.csv: the kept epoch beside the paper's, how steady validation was, the training
    images scored in inference mode, and the last epoch's test accuracy beside the kept one's.
    Explained in notebooks/03_resnet50. ``name_the_hypothesis=False`` leaves out the sentence on
    BatchNorm as a candidate cause, for a page that tests it beside (``cxr_utils.study.publish``).
    """
    spec = config.model_spec(model_id)
    folder = Path(results_dir) / model_id
    history = evaluation.read_history(folder)
    predictions = pd.read_csv(folder / "predictions.csv")
    best = history.loc[history["is_best"]].iloc[0]

    def test_accuracy(column) -> str:
        accuracy = metrics.metrics_with_intervals(predictions["label"], predictions[column]).loc["accuracy"]
        return interval(accuracy["value"], accuracy["low"], accuracy["high"])

    inference = None
    if "train_inference_accuracy" in history:
        inference = {
            "low": history["train_inference_accuracy"].min(), "high": history["train_inference_accuracy"].max(),
            "training_low": history["accuracy"].min(), "training_high": history["accuracy"].max(),
            "parted": [int(row.epoch) for row in history.itertuples()
                       if at_most(row.train_inference_accuracy, NEAR_CHANCE) and at_least(row.accuracy, 0.8)],
        }
    hypothesis = None
    if spec.has_backbone and name_the_hypothesis:
        hypothesis = "tested" if "val_accuracy_recomputed" in history else "untested"
    last_epoch = "predicted_last_epoch" in predictions and int(best["epoch"]) != len(history)
    return prose.render(
        "training_summary.md.j2", epochs=len(history), n_test=len(predictions), near_chance=NEAR_CHANCE,
        kept={"epoch": int(best["epoch"]), "val_accuracy": best["val_accuracy"], "test": test_accuracy("predicted")},
        paper_val_accuracy=paper.table2().loc[spec.paper_name]["val_accuracy"],
        validation={"low": history["val_accuracy"].min(), "high": history["val_accuracy"].max(),
                    "chance_epochs": [int(e) for e, v in zip(history["epoch"], history["val_accuracy"])
                                      if at_most(v, NEAR_CHANCE)]},
        inference=inference, hypothesis=hypothesis,
        last_epoch_test=test_accuracy("predicted_last_epoch") if last_epoch else None,
    )


KAGGLE_ORIGINAL = (299, 299, "L")  # the database's own files: 299x299 grayscale PNG


def dataset_statement(manifest: pd.DataFrame) -> str:
    """What the run's images are: counts per class, the sizes and modes the files are stored in,
    and whether they are the database's 299x299 grayscale originals or re-encoded copies.
    Explained in notebooks/01_data_collection.
    """
    counts = manifest["class"].value_counts()
    sizes = manifest.groupby(["width", "height"]).size().sort_values(ascending=False)
    width, height, mode = KAGGLE_ORIGINAL
    return prose.render(
        "dataset_statement.md.j2", covid=counts.get("COVID", 0), normal=counts.get("Normal", 0),
        sizes=[{"width": w, "height": h, "files": n} for (w, h), n in sizes.items()],
        modes=sorted(set(manifest["mode"])), original={"width": width, "height": height},
        originals=set(sizes.index) == {(width, height)} and set(manifest["mode"]) == {mode},
    )
