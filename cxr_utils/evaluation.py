"""From the saved test predictions of the three models to the paper's Tables 2-7, ours beside theirs.

Reads what notebooks 03-05 wrote under ``results_dir/<model>/`` and writes
``results_dir/evaluation/``. Explained in notebooks/06_evaluation and 07_comparison.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd

from cxr_utils import metrics, paper, report, runtime

EVALUATION_DIR = "evaluation"


def _model_dir(results_dir, model_id) -> Path:
    folder = Path(results_dir) / model_id
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no results for {model_id} in {folder}; run notebooks/0*_{model_id}.ipynb "
            f"(or `python -m cxr_utils.run`) with results_dir={results_dir!s} first"
        )
    return folder


def load_predictions(results_dir) -> dict[str, pd.DataFrame]:
    """Each model's predictions.csv, keyed by the paper's model name, checked to be paired.

    A paired comparison (McNemar) needs every model's prediction for the same test images,
    so the image lists must be identical.
    """
    predictions = {
        name: pd.read_csv(_model_dir(results_dir, model_id) / "predictions.csv")
        for model_id, name in paper.MODELS.items()
    }
    reference_name, reference = next(iter(predictions.items()))
    for name, table in predictions.items():
        if list(table["path"]) != list(reference["path"]):
            raise ValueError(
                f"{name} and {reference_name} were tested on different images; re-run notebooks "
                "02-05 with the same results_dir so that all models share one split"
            )
    return predictions


def confusion_matrices(predictions: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {name: metrics.confusion_matrix(t["label"], t["predicted"]) for name, t in predictions.items()}


def metrics_table(predictions: dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Long form: model, metric, value, low, high, method, n (95% intervals)."""
    parts = []
    for name, table in predictions.items():
        part = metrics.metrics_with_intervals(table["label"], table["predicted"], seed=seed).reset_index()
        part.insert(0, "model", name)
        part["n"] = len(table)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def mcnemar_table(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for (name_a, a), (name_b, b) in itertools.combinations(predictions.items(), 2):
        test = metrics.mcnemar_test(a["label"], a["predicted"], b["predicted"])
        rows.append({
            "model_a": name_a,
            "model_b": name_b,
            "a_only_correct": int(test["a_only_correct"]),
            "b_only_correct": int(test["b_only_correct"]),
            "p_value": float(test["p_value"]),
            "n": int(test["n"]),
        })
    return pd.DataFrame(rows)


def save(results_dir, confusions, metrics_long, mcnemar) -> Path:
    folder = Path(results_dir) / EVALUATION_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in confusions.items():
        table.to_csv(folder / f"confusion_{name}.csv")
    metrics_long.to_csv(folder / "metrics.csv", index=False)
    mcnemar.to_csv(folder / "mcnemar.csv", index=False)
    return folder


def best_epochs(results_dir) -> pd.DataFrame:
    """This run's Table 2: each model's best-epoch losses and accuracies."""
    rows = {}
    for model_id, name in paper.MODELS.items():
        best = json.loads((_model_dir(results_dir, model_id) / "metrics.json").read_text())["best_epoch_row"]
        rows[name] = {
            "train_loss": best["loss"],
            "train_accuracy": best["accuracy"],
            "val_loss": best["val_loss"],
            "val_accuracy": best["val_accuracy"],
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _side_by_side(paper_table: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    return pd.concat({"paper": paper_table, "this run": ours.reindex(paper_table.index)}, axis=1)


def compare_with_paper(results_dir) -> dict:
    """Every table of the paper beside this run's, read from saved results."""
    folder = Path(results_dir) / EVALUATION_DIR
    if not (folder / "metrics.csv").is_file():
        raise FileNotFoundError(f"{folder / 'metrics.csv'} is missing; run notebooks/06_evaluation.ipynb first")
    ours_long = pd.read_csv(folder / "metrics.csv")
    mcnemar = pd.read_csv(folder / "mcnemar.csv")
    counts = {}
    for name in paper.MODELS.values():
        table = pd.read_csv(folder / f"confusion_{name}.csv", index_col=0)
        counts[name] = {"tp": table.iloc[0, 0], "fn": table.iloc[0, 1], "fp": table.iloc[1, 0], "tn": table.iloc[1, 1]}
    best = best_epochs(results_dir)
    ours_wide = ours_long.pivot(index="model", columns="metric", values="value")
    ours_text = ours_long.assign(
        text=[f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in zip(ours_long["value"], ours_long["low"], ours_long["high"])]
    ).pivot(index="model", columns="metric", values="text")
    table6 = paper.table6()
    hybrid = ours_wide.loc[report.HYBRID]
    n_test = int(ours_long["n"].max())
    table7 = pd.concat([
        paper.table7(),
        pd.DataFrame([{
            "author": "This run", "data": f"{n_test} test X-ray, binary", "method": "ResNet50 + LSTM",
            **{m: hybrid[m] for m in ("accuracy", "precision", "recall", "f1")},
        }]),
    ], ignore_index=True)
    return {
        "table2": _side_by_side(paper.table2(), best),
        "confusion": _side_by_side(paper.confusion_counts(), pd.DataFrame.from_dict(counts, orient="index")),
        "table6": _side_by_side(table6, ours_text[table6.columns]),
        "table7": table7,
        "ours_long": ours_long,
        "mcnemar": mcnemar,
        "best_epochs": best,
    }


def save_verdicts(results_dir, verdicts: pd.DataFrame) -> Path:
    """verdicts.csv, and report.md that the book's replication report page includes."""
    folder = Path(results_dir) / EVALUATION_DIR
    folder.mkdir(parents=True, exist_ok=True)
    verdicts.to_csv(folder / "verdicts.csv", index=False)
    text = report.verdicts_markdown(verdicts) + "\n\n" + report.DISCLAIMER + "\n"
    path = Path(results_dir) / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    runtime.write_json({"verdicts": verdicts.to_dict(orient="records")}, folder / "verdicts.json")
    return path
