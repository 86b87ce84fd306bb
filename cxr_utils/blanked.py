"""The paper's models trained and tested on images whose lungs are blanked, beside a finished run.

Every model of ``config.REGISTRY`` (or the ones named) is trained on the run's own split with the
run's protocol, except that every image, training and test alike, has the lung rectangle
(``shortcuts.LungBox``) set to a constant. The results go to ``RESULTS_DIR/shortcuts/blanked/<model>/``
(no weights kept), with ``blanked.json`` recording the settings and each model's wall time. Chapter 8
trains them, or ``python -m cxr_utils.study blanked`` (``cxr_utils.study.blanked``) beside a finished run.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pandas as pd

from cxr_utils import config, evaluation, metrics
from cxr_utils.atomic import atomic_write, read_json
from cxr_utils.chapters import image_key, note, utc_now
from cxr_utils.evaluation import model_complete
from cxr_utils.report import counted, duration_text
from cxr_utils.shortcuts import RESULTS_FOLDER

BLANKED_DIR = Path(RESULTS_FOLDER) / "blanked"  # below the run's results folder
RECORD = "blanked.json"
RESULTS_CSV = "results.csv"
# What a blanked model's numbers depend on: resuming with any of them changed is refused.
COMPARED = ("box", "epochs", "batch_size", "seed", "weights", "image_size", "split")


class BlankedError(RuntimeError):
    """The blanked models cannot be trained as asked (a folder made with other settings, a folder
    that is not a run's); the message says why and what to do."""


def blanked_dir(results_dir) -> Path:
    return Path(results_dir) / BLANKED_DIR


def trained_beside(results_dir) -> float | None:
    """Seconds spent training the lungs-blanked models outside the run's notebooks (``python -m
    cxr_utils.study blanked``, beside the run: their record, blanked.json), or None when chapter 8
    trained them itself (its notebook, in the run record, took longer than they did) or none exist."""
    record = read_json(blanked_dir(results_dir) / RECORD) or {}
    seconds = sum(entry.get("wall_time_s") or 0 for entry in record.get("runs", {}).values())
    run = read_json(Path(results_dir) / "run.json") or {}
    chapter = run.get("notebooks", {}).get("08_shortcuts", {}).get("wall_time_s")
    return seconds if seconds and chapter is not None and chapter < seconds else None


def split_fingerprint(split: pd.DataFrame) -> str:
    """A short hash of which image (by content hash, or by file name) is in which part, wherever
    the dataset lies on this machine."""
    names = split["sha256"].astype(str) if "sha256" in split else split["path"].map(lambda p: Path(str(p)).name)
    pairs = sorted(zip(names, split["label"].astype(int), split["split"].astype(str)))
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]


def _check_settings(record: dict | None, settings: dict, folder: Path) -> None:
    trained = [model_id for model_id in config.REGISTRY if model_complete(folder / model_id)]
    if record is None:
        if trained:
            raise BlankedError(f"{folder} holds trained models ({', '.join(trained)}) but no readable {RECORD}, so "
                             "their settings are unknown: delete the folder to train them again.")
        return
    made = {name: record.get("settings", {}).get(name) for name in COMPARED}
    differ = [name for name in COMPARED if made[name] != settings[name]]
    if "weights" in differ and not any(config.REGISTRY[model_id].has_backbone for model_id in trained):
        differ.remove("weights")  # no trained model depends on them: the LSTM has no backbone
    if differ and trained:
        raise BlankedError(
            f"{folder} holds models trained with {', '.join(f'{n}={made[n]!r}' for n in differ)} ({RECORD}), but "
            f"this asks for {', '.join(f'{n}={settings[n]!r}' for n in differ)}: give the run's settings to resume, "
            f"or delete {folder} to train every model again with these."
        )


def _intact_estimates(results_dir: Path, epochs: int) -> dict[str, float]:
    """Seconds each model should take, from the intact run's wall time scaled by the epochs."""
    estimates = {}
    for model_id in config.REGISTRY:
        record = read_json(results_dir / model_id / "run.json") or {}
        intact_epochs = record.get("settings", {}).get("training", {}).get("epochs")
        if record.get("wall_time_s") and intact_epochs:
            estimates[model_id] = record["wall_time_s"] * epochs / intact_epochs
    return estimates


def _time_left(pending: list[str], estimates: dict[str, float], ratios: list[float]) -> str:
    if not pending:
        return "nothing left"
    # The models trained so far correct the intact run's times (this machine may be faster or slower).
    scale = sum(ratios) / len(ratios) if ratios else 1.0
    known = sum(estimates[m] for m in pending if m in estimates) * scale
    unknown = [m for m in pending if m not in estimates]
    if unknown and not known:
        return f"time left unknown ({', '.join(unknown)} {'has' if len(unknown) == 1 else 'have'} no intact run record)"
    more = f" ({', '.join(unknown)} not estimated)" if unknown else ""
    return f"about {duration_text(known)} left{more}"


def train_blanked(results_dir, split: pd.DataFrame, box, training_config, model_options: dict | None, cache_dir,
                  image_size: int, models=None, log=note) -> dict:
    """Train each model (``config.REGISTRY``, or ``models``) on ``split`` with ``box`` blanked in every
    image into ``results_dir/shortcuts/blanked/<model>/``; returns the record written to blanked.json.

    ``model_options`` go to the ResNet50 models only (their ``weights``). A complete model folder is
    skipped; a folder made with other settings (any of ``COMPARED``) is refused, never mixed
    (``BlankedError``). Logs progress after each model, with the time left estimated from the intact
    run's wall times (corrected by the models trained so far).
    """
    from cxr_utils import training  # imports Keras: only when models train

    results_dir = Path(results_dir)
    folder = blanked_dir(results_dir)
    model_ids = config.model_ids(models)
    model_options = dict(model_options or {})
    weights = model_options.get("weights", config.PROTOCOL.weights)
    settings = {"box": box.key, "epochs": int(training_config.epochs), "batch_size": int(training_config.batch_size),
                "seed": int(training_config.seed), "weights": None if weights is None else str(weights),
                "image_size": int(image_size), "split": split_fingerprint(split)}
    record_path = folder / RECORD
    record = read_json(record_path) if record_path.exists() else None
    if record_path.exists() and record is None:
        raise BlankedError(f"{record_path} is not readable JSON: repair or delete it")
    _check_settings(record, settings, folder)
    # The settings agree with every trained model's, so they replace the recorded ones.
    record = {"started_utc": utc_now(), **(record or {}), "settings": settings}
    runs = record["runs"] = {m: entry for m, entry in record.get("runs", {}).items() if model_complete(folder / m)}
    pending = [m for m in model_ids if not model_complete(folder / m)]
    for model_id in (m for m in model_ids if m not in pending):
        made = (read_json(folder / model_id / "run.json") or {}).get("settings", {}).get("blanked")
        if made != box.key:
            raise BlankedError(f"{folder / model_id} was trained with blanked={made!r}, not {box.key!r}: "
                               "delete the folder to train it again")
    estimates, ratios = _intact_estimates(results_dir, settings["epochs"]), []
    log(f"Lungs-blanked training in {folder}: {box.key}; {counted(settings['epochs'], 'epoch')}, batch "
        f"{settings['batch_size']}, seed {settings['seed']}, {config.weights_label(weights)}, {image_size} px; "
        f"{counted(len(pending), 'model')} to train ({_time_left(pending, estimates, ratios)}).")
    folder.mkdir(parents=True, exist_ok=True)

    def write_record():
        atomic_write(record_path, lambda path: path.write_text(json.dumps(record, indent=2) + "\n"))

    write_record()
    for model_id in model_ids:
        spec = config.REGISTRY[model_id]
        if model_id not in pending:
            log(f"{spec.paper_name}: complete, skipped.")
            continue
        start = time.perf_counter()
        outcome = training.run_experiment(
            model_id, split, folder, training_config, model_options if spec.has_backbone else {},
            cache_dir=cache_dir, save_model=False, image_size=image_size, blank=box)
        wall = time.perf_counter() - start
        pending.remove(model_id)
        if model_id in estimates and estimates[model_id] > 0:
            ratios.append(wall / estimates[model_id])
        runs[model_id] = {"wall_time_s": round(wall, 1), "finished_utc": utc_now(),
                          "best_epoch": int(outcome["result"].best_epoch),
                          "test_accuracy": float(outcome["metrics"]["accuracy"])}
        write_record()
        log(f"{spec.paper_name}: {duration_text(wall)} (blanked test accuracy {outcome['metrics']['accuracy']:.2f}); "
            f"{counted(len(pending), 'model')} to go: {_time_left(pending, estimates, ratios)}.")
    return record


# -- the results beside the intact run --------------------------------------------------------------


def _tested(folder: Path) -> pd.DataFrame | None:
    path = folder / "predictions.csv"
    return pd.read_csv(path, usecols=["path", "label", "probability", "predicted"]) if path.is_file() else None


def blanked_results(results_dir, seed: int | None = None) -> pd.DataFrame:
    """One row per model of the registry: its intact test accuracy (``results_dir/<model>/``) beside
    the lungs-blanked one (``shortcuts/blanked/<model>/``), both with 95% Wilson intervals, the
    difference (blanked minus intact), AUC both ways with bootstrap intervals, and McNemar's
    p-value on the same test images. ``status``: "complete", or which side is missing (its numbers
    are NaN); ``attrs["missing"]`` lists the models without blanked results, ``attrs["settings"]``
    the blanked runs' settings. ``seed`` seeds the bootstrap: the run's own by default
    (``evaluation.run_seed``), as every interval of the run. Explained in notebooks/08_shortcuts.
    """
    results_dir = Path(results_dir)
    seed = evaluation.run_seed(results_dir) if seed is None else seed
    folder = blanked_dir(results_dir)
    rows, missing = [], []
    for model_id, spec in config.REGISTRY.items():
        intact, blanked = _tested(results_dir / model_id), _tested(folder / model_id)
        if blanked is None:
            missing.append(model_id)
        sides = {"intact": intact, "blanked": blanked}
        absent = [name for name, tested in sides.items() if tested is None]
        row = {"model": spec.paper_name, "model_id": model_id,
               "status": " and ".join(absent) + " missing" if absent else "complete"}
        for name, tested in sides.items():
            if tested is not None:
                row.update({"n": len(tested), **metrics.accuracy_and_auc(tested["label"], tested["predicted"],
                                                                       tested["probability"], seed, f"{name}_")})
        if not absent:
            if image_key(intact) != image_key(blanked):
                raise ValueError(f"{spec.paper_name}'s blanked run in {folder / model_id} was tested on other images "
                                 f"than its intact run in {results_dir / model_id}: delete {folder / model_id} and "
                                 "train it again")
            row["accuracy_difference"] = row["blanked_accuracy"] - row["intact_accuracy"]
            row["mcnemar_p"] = metrics.mcnemar_test(intact["label"], intact["predicted"],
                                                    blanked["predicted"])["p_value"]
        rows.append(row)
    columns = ["model", "model_id", "status", "n", *(f"{side}_{m}{end}" for side in ("intact", "blanked")
                                                   for m in ("accuracy", "auc") for end in ("", "_low", "_high")),
               "accuracy_difference", "mcnemar_p"]
    table = pd.DataFrame(rows).reindex(columns=columns)
    table.attrs["missing"] = missing
    table.attrs["settings"] = (read_json(folder / RECORD) or {}).get("settings", {})
    return table


def save_blanked_results(results_dir, table: pd.DataFrame) -> Path:
    """``blanked_results``' table as ``results_dir/shortcuts/blanked/results.csv``, atomically."""
    return atomic_write(blanked_dir(results_dir) / RESULTS_CSV, lambda path: table.to_csv(path, index=False))
