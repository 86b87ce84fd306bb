"""What a run shows beyond its tables, for the replication report: how steady each model's
training was, how optimistic the kept epoch is, the ranking on the largest test set and the
verdicts that change with more test images. Written from the run's saved files, so the text
can never disagree with the tables; the sentences are in ``templates/findings.md.j2``.
Used by the report's pages (``cxr_utils.run_pages``), not by the chapters.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxr_utils import config, evaluation, prose
from cxr_utils.claims import NOT_PAPER_SETTING, SIGNIFICANCE, at_least, at_most, indicated_verdict
from cxr_utils.evaluation import EVALUATION_DIR, EXTENDED_DIR, model_dir
from cxr_utils.glance import interval
from cxr_utils.report import NEAR_CHANCE

# On balanced 2-class data:
UNSTEADY_RANGE = 0.2  # validation accuracy swinging this much between epochs is unsteady
UNDERFIT_TRAIN_ACCURACY = 0.8  # ending below this on the training images is underfitting


def training_findings(results_dir) -> pd.DataFrame:
    """What each model's training run shows beyond its best epoch, one row per model.

    How steady validation accuracy was over the epochs (range; epochs at or below ``NEAR_CHANCE``,
    up to float32 noise), the chosen epoch (``is_best`` in history.csv), and how far the chosen
    epoch's validation accuracy overstates test accuracy: picking the best of many noisy validation scores favours a
    lucky epoch. Test and extended-test accuracy with 95% intervals where they exist.
    """
    rows = {}
    tests = {}
    for folder in (EVALUATION_DIR, EXTENDED_DIR):
        path = Path(results_dir) / folder / "metrics.csv"
        if path.is_file():
            table = pd.read_csv(path)
            tests[folder] = table[table["metric"] == "accuracy"].set_index("model")
    for model_id, name in config.paper_names().items():
        folder = model_dir(results_dir, model_id)
        history = evaluation.read_history(folder)
        chosen = history.loc[history["is_best"]].iloc[0]
        row = {
            "epochs": len(history),
            "best_epoch": int(chosen["epoch"]),
            "final_train_accuracy": float(history["accuracy"].iloc[-1]),
            "val_accuracy_min": float(history["val_accuracy"].min()),
            "val_accuracy_max": float(history["val_accuracy"].max()),
            "epochs_near_chance": int(at_most(history["val_accuracy"], NEAR_CHANCE).sum()),
            "val_accuracy_chosen": float(chosen["val_accuracy"]),
        }
        for folder, label in ((EVALUATION_DIR, "test"), (EXTENDED_DIR, "extended")):
            if folder in tests and name in tests[folder].index:
                accuracy = tests[folder].loc[name]
                row[f"{label}_accuracy"] = float(accuracy["value"])
                row[f"{label}_low"] = float(accuracy["low"])
                row[f"{label}_high"] = float(accuracy["high"])
                row[f"{label}_n"] = int(accuracy["n"])
        if "test_accuracy" in row:
            row["selection_optimism"] = row["val_accuracy_chosen"] - row["test_accuracy"]
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def findings_markdown(findings: pd.DataFrame, mcnemar_extended: pd.DataFrame | None = None,
                      verdicts: pd.DataFrame | None = None,
                      verdicts_extended: pd.DataFrame | None = None) -> str:
    """What a run shows, written from its numbers (``training_findings``): a table, then the
    steadiness of validation, selection optimism, the ranking on the largest test set, the paired
    tests on the extended set and the verdicts that change with more test images."""
    def accuracy(row, label):
        return interval(row[f"{label}_accuracy"], row[f"{label}_low"], row[f"{label}_high"])

    table = pd.DataFrame({
        "best epoch": [f"{r.best_epoch} of {r.epochs}" for r in findings.itertuples()],
        "validation accuracy over the epochs": [
            f"{r.val_accuracy_min:.2f}-{r.val_accuracy_max:.2f}" for r in findings.itertuples()],
        f"epochs near chance (val. acc. <= {NEAR_CHANCE})": findings["epochs_near_chance"].astype(int).to_list(),
        "chosen epoch's val. acc.": findings["val_accuracy_chosen"].to_list(),
        "final training accuracy": findings["final_train_accuracy"].to_list(),
    }, index=findings.index)
    for label in ("test", "extended"):
        if f"{label}_accuracy" in findings:
            n = int(findings[f"{label}_n"].max())
            table[f"{label} accuracy (n={n})"] = [accuracy(r, label) for _, r in findings.iterrows()]
    models = [{"name": name, "val_accuracy_min": row.val_accuracy_min, "val_accuracy_max": row.val_accuracy_max,
               "final_train_accuracy": row.final_train_accuracy, "epochs": int(row.epochs),
               "epochs_near_chance": int(row.epochs_near_chance),
               "unsteady": at_least(row.val_accuracy_max - row.val_accuracy_min, UNSTEADY_RANGE),
               "underfit": not at_least(row.final_train_accuracy, UNDERFIT_TRAIN_ACCURACY)}
              for name, row in findings.iterrows()]
    largest = "extended" if "extended_accuracy" in findings else "test"
    ranking = None
    if f"{largest}_accuracy" in findings:
        ranked = findings.sort_values(f"{largest}_accuracy", ascending=False)
        ranking = {"extended": largest == "extended", "n": int(findings[f"{largest}_n"].max()),
                   "order": [(name, accuracy(row, largest)) for name, row in ranked.iterrows()]}
    has_pairs = mcnemar_extended is not None and len(mcnemar_extended)
    return prose.render(
        "findings.md.j2", table=table.to_markdown(floatfmt=".2f"),  # 0.70, not 0.7
        models=models, ranking=ranking,
        optimism=findings["selection_optimism"].to_dict() if "selection_optimism" in findings else None,
        most_epochs=int(findings["epochs"].max()), significance=SIGNIFICANCE, underfit_below=UNDERFIT_TRAIN_ACCURACY,
        pairs=mcnemar_extended.to_dict(orient="records") if has_pairs else [],
        verdict_changes=(_verdict_changes(verdicts, verdicts_extended)
                         if verdicts is not None and verdicts_extended is not None else None),
    )


def _verdict_changes(verdicts: pd.DataFrame, verdicts_extended: pd.DataFrame) -> dict:
    """Each claim whose outcome differs between the split's test set and the extended one
    (``changed``), and whether any claim could be compared (``compared``); outside the paper's
    setting, the outcomes the run's numbers indicate are compared."""
    def indicated(table):
        return pd.DataFrame({"claim": table["claim"].astype(str),
                             "outcome": [indicated_verdict(v, r) for v, r in zip(table["verdict"], table["reason"])],
                             "setting": table["verdict"] == NOT_PAPER_SETTING})

    merged = indicated(verdicts).merge(indicated(verdicts_extended), on="claim", suffixes=("", "_extended"))
    changed = merged[merged["outcome"] != merged["outcome_extended"]]
    return {"changed": changed.to_dict(orient="records"), "compared": not merged.empty}
