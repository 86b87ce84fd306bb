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


def _table7_setting(results_dir, n_test: int) -> dict:
    """Table 7's data and method cells for this run: its image count and backbone weights."""
    split_path = Path(results_dir) / "split.csv"
    data = f"{n_test} test X-ray, binary"
    if split_path.is_file():
        data = f"{len(pd.read_csv(split_path)):,} X-ray, binary ({n_test} test)"
    method = "ResNet50 + LSTM"
    record_path = Path(results_dir) / "run.json"
    if record_path.is_file():
        weights = json.loads(record_path.read_text()).get("settings", {}).get("weights", "imagenet")
        if weights != "imagenet":
            method += " (from scratch)" if weights is None else f" (weights: {Path(str(weights)).name})"
    return {"data": data, "method": method}


def compare_with_paper(results_dir, evaluation_dir: str = EVALUATION_DIR) -> dict:
    """Every table of the paper beside this run's, read from saved results.

    ``evaluation_dir`` (below ``results_dir``) picks the test set: the split's test images
    ("evaluation") or the extended test set ("extended/evaluation").
    """
    folder = Path(results_dir) / evaluation_dir
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
    table7 = pd.concat([
        paper.table7(),
        pd.DataFrame([{
            "author": "This run", **_table7_setting(results_dir, n_test=int(ours_long["n"].max())),
            # Rounded like the paper's rows, which are whole percentages.
            **{m: round(float(hybrid[m]), 2) for m in ("accuracy", "precision", "recall", "f1")},
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


def save_verdicts(results_dir, verdicts: pd.DataFrame, name: str | None = None) -> Path:
    """verdicts.csv/.json, and report.md (report_<name>.md) that the book's report page includes."""
    suffix = f"_{name}" if name else ""
    folder = Path(results_dir) / EVALUATION_DIR
    folder.mkdir(parents=True, exist_ok=True)
    verdicts.to_csv(folder / f"verdicts{suffix}.csv", index=False)
    runtime.write_json({"verdicts": verdicts.to_dict(orient="records")}, folder / f"verdicts{suffix}.json")
    return runtime.write_text(report.verdicts_markdown(verdicts) + "\n\n" + report.DISCLAIMER + "\n",
                              Path(results_dir) / f"report{suffix}.md")


def extended_test_set(manifest: pd.DataFrame, split: pd.DataFrame, max_images: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The images a run never touched, as a larger second test set.

    Every image of ``manifest`` outside the run's sample, minus any image whose duplicate group
    reaches the run's training or validation images (a copy of a training image would be
    remembered, not diagnosed). ``max_images`` keeps a seeded, class-balanced subset (for quick
    runs). Explained in notebooks/06_evaluation.
    """
    for table, name in ((manifest, "manifest"), (split, "split")):
        if "duplicate_group" not in table.columns or "sha256" not in table.columns:
            raise ValueError(f"{name} needs the sha256 and duplicate_group columns (cxr_utils.data.add_duplicate_groups)")
    seen_groups = set(split.loc[split["split"].isin(["train", "val"]), "duplicate_group"])
    seen_hashes = set(split["sha256"])
    unused = manifest[~manifest["path"].isin(split["path"])]
    clean = unused[~unused["duplicate_group"].isin(seen_groups) & ~unused["sha256"].isin(seen_hashes)]
    if max_images is not None and len(clean) > max_images:
        per_class = max_images // 2
        clean = pd.concat(
            rows.sample(n=min(per_class, len(rows)), random_state=seed) for _, rows in clean.groupby("label")
        )
    clean = clean.sort_values(["label", "path"]).reset_index(drop=True)
    clean.attrs["excluded_as_duplicates"] = int(len(unused) - len(unused[
        ~unused["duplicate_group"].isin(seen_groups) & ~unused["sha256"].isin(seen_hashes)
    ]))
    return clean


def predict_saved_models(results_dir, rows: pd.DataFrame, image_size: int = 224, cache_dir=None,
                         batch_size: int = 32) -> dict[str, pd.DataFrame]:
    """Each saved model (``<model>/model.keras``) on ``rows``: predictions keyed by paper name."""
    import keras

    from cxr_utils import data, models, training  # noqa: F401  (models registers custom layers)

    images = data.load_images(rows, image_size=image_size, cache_dir=cache_dir, progress=False)
    predictions = {}
    for model_id, name in paper.MODELS.items():
        path = _model_dir(results_dir, model_id) / "model.keras"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; re-run notebook {model_id} with the model saved")
        model = keras.saving.load_model(path)
        probabilities = training.predict_probabilities(model, images, batch_size)
        predictions[name] = pd.DataFrame({
            "path": rows["path"].to_numpy(), "label": rows["label"].to_numpy(),
            "probability": probabilities, "predicted": metrics.labels_from_probabilities(probabilities),
        })
    return predictions


def intervals_side_by_side(small: pd.DataFrame, large: pd.DataFrame) -> pd.DataFrame:
    """Metrics on the run's test set beside the extended test set, with interval widths."""
    def label(table):
        return [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in zip(table["value"], table["low"], table["high"])]

    merged = small.assign(text=label(small), width=small["high"] - small["low"]).merge(
        large.assign(text=label(large), width=large["high"] - large["low"]),
        on=["model", "metric"], suffixes=(" (test)", " (extended)"),
    )
    return merged[["model", "metric", "n (test)", "text (test)", "width (test)", "n (extended)",
                   "text (extended)", "width (extended)"]].round(3)


EXTENDED_DIR = "extended/evaluation"


def training_findings(results_dir) -> pd.DataFrame:
    """What each model's training run shows beyond its best epoch, one row per model.

    How steady validation accuracy was over the epochs (range; epochs at or below
    ``report.NEAR_CHANCE``), the chosen epoch (``is_best`` in history.csv), and how far the chosen epoch's validation accuracy
    overstates test accuracy: picking the best of many noisy validation scores favours a
    lucky epoch. Test and extended-test accuracy with 95% intervals where they exist.
    """
    rows = {}
    tests = {}
    for folder in (EVALUATION_DIR, EXTENDED_DIR):
        path = Path(results_dir) / folder / "metrics.csv"
        if path.is_file():
            table = pd.read_csv(path)
            tests[folder] = table[table["metric"] == "accuracy"].set_index("model")
    for model_id, name in paper.MODELS.items():
        folder = _model_dir(results_dir, model_id)
        history = pd.read_csv(folder / "history.csv")
        chosen = history.loc[history["is_best"]].iloc[0]
        row = {
            "epochs": len(history),
            "best_epoch": int(chosen["epoch"]),
            "final_train_accuracy": float(history["accuracy"].iloc[-1]),
            "val_accuracy_min": float(history["val_accuracy"].min()),
            "val_accuracy_max": float(history["val_accuracy"].max()),
            "epochs_near_chance": int((history["val_accuracy"] <= report.NEAR_CHANCE).sum()),
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
