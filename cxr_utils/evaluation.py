"""The trained models on the split's test images: confusion matrices, metrics with intervals,
AUC and Brier score, McNemar's test; and reading a run's saved results.

Reads what notebooks 03-05 wrote under ``results_dir/<model>/`` and writes
``results_dir/evaluation/``. Explained in notebooks/06_evaluation.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd

from cxr_utils import config, metrics
from cxr_utils.atomic import read_json

EVALUATION_DIR = "evaluation"
EXTENDED_DIR = "extended/evaluation"
# Written by training.save_experiment beside predictions.csv: each model on its own training and
# validation images, in inference mode (for the loss gap of the paper's claim 3).
FIT_PREDICTIONS = "fit_predictions.csv"
# Each model's predictions on chapter 6's extended test set, written by its chapter while the weights
# are in memory (training.save_experiment), so that chapter 6 needs no model file.
EXTENDED_PREDICTIONS = "extended_predictions.csv"
FIT_PREDICTION_COLUMNS = ("path", "split", "label", "probability")
HISTORY = "history.csv"  # one row per epoch, written by training.save_experiment


def model_complete(folder) -> bool:
    """A model's folder is complete when it holds metrics.json: ``run_experiment`` moves the whole
    folder into place only after every file is written."""
    return (Path(folder) / "metrics.json").is_file()


def read_history(folder, columns=()) -> pd.DataFrame:
    """The per-epoch history the training of the model in ``folder`` wrote: FileNotFoundError naming
    the file and the chapter that writes it when it is missing, ValueError when it lacks one of
    ``columns``."""
    path = Path(folder) / HISTORY
    if not path.is_file():
        spec = config.REGISTRY.get(Path(folder).name)
        writer = f"run notebooks/{spec.chapter}.ipynb" if spec else "train the model"
        raise FileNotFoundError(f"{path} not found: {writer} first (its training writes it)")
    history = pd.read_csv(path)
    missing = [column for column in columns if column not in history]
    if missing:
        raise ValueError(f"{path} has no {', '.join(map(repr, missing))} column; it was not written by "
                         "this version's training: train the model again")
    return history


def ran_paired_check(folder) -> bool:
    """Whether the model trained in ``folder`` ran the paired BatchNorm check: its history holds
    the check's columns (``config.PAIRED_CHECK_COLUMNS``); False without a history."""
    history = Path(folder) / HISTORY
    return history.is_file() and set(config.PAIRED_CHECK_COLUMNS) <= set(pd.read_csv(history, nrows=0).columns)


def model_dir(results_dir, model_id) -> Path:
    folder = Path(results_dir) / model_id
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no results for {model_id} in {folder}; run notebooks/{config.REGISTRY[model_id].chapter}.ipynb "
            f"(or `python -m cxr_utils.run`) with results_dir={results_dir!s} first"
        )
    return folder


def run_seed(results_dir) -> int:
    """The run's seed (its run.json, or a model's; else the protocol's), which also seeds every bootstrap
    interval of the run, so that an interval is the same wherever it is written."""
    for path in (Path(results_dir) / "run.json", *(Path(results_dir) / m / "run.json" for m in config.REGISTRY)):
        settings = (read_json(path) or {}).get("settings", {})
        seed = settings.get("seed", settings.get("training", {}).get("seed"))
        if seed is not None:
            return int(seed)
    return config.PROTOCOL.seed


def run_settings(results_dir) -> dict:
    """The settings the models of a run were trained with, from their records (``<model>/run.json``), so
    that later chapters read the run's own setting: ``weights``, the ResNet50 models' (None if none)."""
    weights = {model_options(results_dir, spec.id).get("weights", config.PROTOCOL.weights)
               for spec in config.REGISTRY.values()
               if spec.has_backbone and (Path(results_dir) / spec.id / "run.json").is_file()}
    if not weights and any(spec.has_backbone for spec in config.REGISTRY.values()):
        raise FileNotFoundError(
            f"no run record (<model>/run.json) of a ResNet50 model in {results_dir}; run chapters 03-05 "
            "with this results_dir first"
        )
    if len(weights) > 1:
        raise ValueError(
            f"the models in {results_dir} were trained with different weights ({sorted(map(str, weights))}); "
            "re-run chapters 03-05 with one setting"
        )
    return {"weights": weights.pop() if weights else None}  # None: from scratch, or no ResNet50 model


def load_predictions(results_dir) -> dict[str, pd.DataFrame]:
    """Each model's predictions.csv, keyed by the paper's model name, checked to hold the same images
    (a paired comparison such as McNemar's needs that)."""
    predictions = {
        name: pd.read_csv(model_dir(results_dir, model_id) / "predictions.csv")
        for model_id, name in config.paper_names().items()
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


def _long_table(predictions: dict[str, pd.DataFrame], score) -> pd.DataFrame:
    """``score(table)`` (one row per metric, index metric) of each model, stacked: model first, n last."""
    parts = []
    for name, table in predictions.items():
        part = score(table).reset_index()
        part.insert(0, "model", name)
        part["n"] = len(table)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def metrics_table(predictions: dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Long form: model, metric, value, low, high, method, successes, trials, n (95% intervals):
    the paper's four threshold metrics (Table 6) only; ``probability_table`` has AUC and Brier."""
    return _long_table(predictions, lambda table: metrics.metrics_with_intervals(
        table["label"], table["predicted"], seed=seed))


def probability_table(predictions: dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Long form: model, metric ("auc", "brier"), value, low, high, method, n (95% intervals), from
    each model's predicted probabilities (``metrics.probability_metrics``)."""
    return _long_table(predictions, lambda table: metrics.probability_metrics(
        table["label"], table["probability"], seed=seed))


def mcnemar_table(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for (name_a, a), (name_b, b) in itertools.combinations(predictions.items(), 2):
        test = metrics.mcnemar_test(a["label"], a["predicted"], b["predicted"])
        rows.append({"model_a": name_a, "model_b": name_b,
                     **{key: test[key] for key in ("a_only_correct", "b_only_correct", "p_value", "n")}})
    return pd.DataFrame(rows)


def last_epoch_table(predictions: dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame | None:
    """Test metrics of the restored best epoch beside the last epoch's (column epoch: "best", "last"). Restoring
    the best epoch is this project's choice (``training.TrainingConfig.restore_best``); the paper does not say
    which weights it tested. None for a run saved before the last epoch's predictions were kept."""
    if not all("predicted_last_epoch" in table for table in predictions.values()):
        return None
    parts = []
    for epoch, column in (("best", "predicted"), ("last", "predicted_last_epoch")):
        chosen = {name: table.assign(predicted=table[column]) for name, table in predictions.items()}
        parts.append(metrics_table(chosen, seed=seed).assign(epoch=epoch))
    return pd.concat(parts, ignore_index=True)[["model", "metric", "epoch", "value", "low", "high", "n"]]


def save(results_dir, confusions, metrics_long, mcnemar, probability=None, last_epoch=None) -> Path:
    """The evaluation tables as CSV files in ``results_dir/evaluation/``."""
    folder = Path(results_dir) / EVALUATION_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in confusions.items():
        table.to_csv(folder / f"confusion_{name}.csv")
    metrics_long.to_csv(folder / "metrics.csv", index=False)
    mcnemar.to_csv(folder / "mcnemar.csv", index=False)
    for name, table in (("probability_metrics", probability), ("last_epoch", last_epoch)):
        if table is not None:
            table.to_csv(folder / f"{name}.csv", index=False)
    return folder


def evaluate_test_set(results_dir, seed: int = 0) -> dict:
    """Every model on the split's test images: confusion matrices, metrics with 95% intervals, AUC and Brier
    score, McNemar between each pair, and the last epoch's metrics beside the restored epoch's; all saved
    in ``results_dir/evaluation/``. Explained in notebooks/06_evaluation.
    """
    predictions = load_predictions(results_dir)
    evaluated = {
        "predictions": predictions,
        "confusions": confusion_matrices(predictions),
        "metrics": metrics_table(predictions, seed=seed),
        "probability": probability_table(predictions, seed=seed),
        "mcnemar": mcnemar_table(predictions),
        "last_epoch": last_epoch_table(predictions, seed=seed),
    }
    save(results_dir, evaluated["confusions"], evaluated["metrics"], evaluated["mcnemar"],
         evaluated["probability"], evaluated["last_epoch"])
    return evaluated


def best_epochs(results_dir, model_ids=None) -> pd.DataFrame:
    """This run's Table 2: each model's best-epoch losses and accuracies (all models, or ``model_ids``)."""
    rows = {}
    for model_id in model_ids or config.REGISTRY:
        best = json.loads((model_dir(results_dir, model_id) / "metrics.json").read_text())["best_epoch_row"]
        rows[config.REGISTRY[model_id].paper_name] = {
            column: best[column.removeprefix("train_")]
            for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def model_options(results_dir, model_id) -> dict:
    return json.loads((model_dir(results_dir, model_id) / "run.json").read_text())["settings"].get("model_options", {})
