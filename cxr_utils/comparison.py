"""The paper's tables beside this run's, and the verdict on each of the paper's claims.

Reads what notebooks 03-06 saved under ``results_dir``; writes the verdicts beside them.
Explained in notebooks/07_comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cxr_utils import claims, config, glance, metrics, paper, runtime
from cxr_utils.evaluation import (
    EVALUATION_DIR, FIT_PREDICTION_COLUMNS, FIT_PREDICTIONS, best_epochs, run_seed,
    run_settings,
)


def _side_by_side(paper_table: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    # The paper's models in its order, then any model the paper did not have (its cells empty).
    models = paper_table.index.union(ours.index, sort=False)
    return pd.concat({"paper": paper_table.reindex(models), "this run": ours.reindex(models)}, axis=1)


def table2_for_model(results_dir, model_id: str) -> pd.DataFrame:
    """One model's row of Table 2 beside the paper's. Explained in notebooks/03_resnet50 to 05_resnet50_lstm."""
    name = config.REGISTRY[model_id].paper_name
    paper_row = paper.table2().loc[[name]]
    both = _side_by_side(paper_row, best_epochs(results_dir, [model_id]))
    return both.loc[name].unstack(0).reindex(paper_row.columns).rename_axis(None)


def _table7_setting(results_dir, n_test: int) -> dict:
    """Table 7's data and method cells for this run: its image count and backbone weights."""
    split_path = Path(results_dir) / "split.csv"
    data = f"{n_test} test X-ray, binary"
    if split_path.is_file():
        data = f"{len(pd.read_csv(split_path)):,} X-ray, binary ({n_test} test)"
    weights = run_settings(results_dir)["weights"]
    return {"data": data, "method": f"ResNet50 + LSTM ({config.weights_label(weights)})"}


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
    counts = pd.DataFrame({name: pd.read_csv(folder / f"confusion_{name}.csv", index_col=0).to_numpy().ravel()
                           for name in config.paper_names().values()}, index=["tp", "fn", "fp", "tn"]).T
    best = best_epochs(results_dir)
    ours_text = ours_long.assign(
        text=[f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in zip(ours_long["value"], ours_long["low"], ours_long["high"])]
    ).pivot(index="model", columns="metric", values="text")
    table6 = paper.table6()
    hybrid = ours_long.pivot(index="model", columns="metric", values="value").loc[claims.HYBRID]
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
        "confusion": _side_by_side(paper.confusion_counts(), counts),
        "table6": _side_by_side(table6, ours_text[table6.columns]),
        "table7": table7,
        "ours_long": ours_long,
        "mcnemar": mcnemar,
        "best_epochs": best,
        "settings": run_settings(results_dir),
    }


def judge_claims(results_dir, evaluation_dir: str = EVALUATION_DIR, name: str | None = None) -> pd.DataFrame:
    """The verdict on each claim of the paper from a run's saved results, saved beside them (``save_verdicts``).

    ``evaluation_dir``: the test set (``EVALUATION_DIR`` or ``EXTENDED_DIR``). Explained in notebooks/07_comparison.
    """
    comparison = compare_with_paper(results_dir, evaluation_dir)
    verdicts = claims.claim_verdicts(comparison["ours_long"], comparison["mcnemar"], comparison["best_epochs"],
                                     weights=comparison["settings"]["weights"], loss_gap=loss_gap(results_dir))
    save_verdicts(results_dir, verdicts, name)
    return verdicts


def fit_batchnorm(settings: dict) -> str:
    """How a model's fit_predictions.csv was computed (``claims.RECOMPUTED``, ``MOVING`` or
    ``NO_BATCHNORM``), from its run.json settings: as recorded, or for a record from before it was,
    from what the model trained (BatchNorm trains in a ResNet50 from scratch, not in a frozen one)."""
    if "fit_predictions_batchnorm" in settings:
        return settings["fit_predictions_batchnorm"]
    if settings.get("training", {}).get("recompute_batchnorm_images"):
        return claims.RECOMPUTED
    spec = config.REGISTRY.get(settings.get("model"))
    from_scratch = not config.is_paper_setting(settings.get("model_options", {}).get("weights", config.PROTOCOL.weights))
    return claims.MOVING if spec is not None and spec.has_backbone and from_scratch else claims.NO_BATCHNORM


def loss_gap(results_dir, model_id: str = "resnet50_lstm", seed: int | None = None) -> dict | None:
    """A model's validation minus training loss, per image in inference mode, with its 95% interval.

    From ``<model_id>/fit_predictions.csv`` (the restored best-epoch model on its own training and
    validation images): ``metrics.loss_gap_interval``'s dict with ``batchnorm`` (``fit_batchnorm``)
    added, or None for a run from before training wrote that file. ``seed``: the run's own by default.
    """
    path = Path(results_dir) / model_id / FIT_PREDICTIONS
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    missing = [column for column in FIT_PREDICTION_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{path} has no column {', '.join(missing)}; it needs {', '.join(FIT_PREDICTION_COLUMNS)}")
    parts = {split: table[table["split"] == split] for split in ("train", "val")}
    empty = [split for split, part in parts.items() if part.empty]
    if empty:
        raise ValueError(f"{path} has no {' or '.join(empty)} rows; its split column must hold train and val")
    gap = metrics.loss_gap_interval(parts["train"]["label"], parts["train"]["probability"], parts["val"]["label"],
                                    parts["val"]["probability"], seed=run_seed(results_dir) if seed is None else seed)
    record = Path(results_dir) / model_id / "run.json"
    settings = json.loads(record.read_text()).get("settings", {}) if record.is_file() else {"model": model_id}
    return {**gap, "batchnorm": fit_batchnorm(settings)}


def save_verdicts(results_dir, verdicts: pd.DataFrame, name: str | None = None) -> Path:
    """verdicts.csv/.json, and report.md (report_<name>.md): the verdicts as the book's report shows them
    (``glance.verdicts_markdown``), with the not-a-medical-device notice."""
    suffix = f"_{name}" if name else ""
    folder = Path(results_dir) / EVALUATION_DIR
    folder.mkdir(parents=True, exist_ok=True)
    verdicts.to_csv(folder / f"verdicts{suffix}.csv", index=False)
    runtime.write_json({"verdicts": verdicts.to_dict(orient="records")}, folder / f"verdicts{suffix}.json")
    return runtime.write_text(glance.verdicts_markdown(verdicts), Path(results_dir) / f"report{suffix}.md")
