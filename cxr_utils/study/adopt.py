"""One run behind every number: a notebook-series run of the study's protocol becomes the study's
seed, instead of a second training of the same seed.

    python -m cxr_utils.study adopt RESULTS_DIR --out STUDY_DIR

The run (``python -m cxr_utils.run``'s results folder, or the book's published copy
``book/executed/results``) must have the study's protocol: its n_per_class, epochs, batch size,
weights, image size and training options, checked on every model's run record. Its split and its
models' numbers (no weights) replace the study's folder for the run's seed, the seed's evaluation
and verdicts are computed again from them, study.json records where the seed came from, and the
summary is written again. The study's other seeds are untouched. See ``cxr_utils.study``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cxr_utils import evaluation
from cxr_utils.atomic import replace_folder
from cxr_utils.config import REGISTRY
from cxr_utils.chapters import utc_now
from cxr_utils.evaluation import model_complete
from cxr_utils.study.common import ADOPTED, STUDY_RECORD, StudyError, seed_dir
from cxr_utils.study.seeds import check_model_folder, training_defaults
from cxr_utils.study.summary import summarise

# The run's settings that must equal the study's (its study.json "settings").
SAME = ("n_per_class", "epochs", "batch_size", "weights", "image_size")
KEPT_OUT = {"model.keras"}  # weights stay out of a study's folders (as save_model=False leaves them)


def _read(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise StudyError(f"{path} is missing or unreadable: {what}") from None


def _run_settings(run_dir: Path) -> dict:
    record = _read(run_dir / "run.json", "give the results folder of a finished run of python -m cxr_utils.run")
    settings = record.get("settings", {})
    missing = [spec.id for spec in REGISTRY.values() if not model_complete(run_dir / spec.id)]
    if missing:
        raise StudyError(f"{run_dir} has no finished {', '.join(missing)}: run notebooks 03-05 first")
    if not (run_dir / "split.csv").is_file():
        raise StudyError(f"{run_dir / 'split.csv'} is missing: run notebook 02 first")
    return {**settings, "git_commit": record.get("git_commit"), "created_utc": record.get("created_utc"),
            "profile": record.get("profile", settings.get("profile"))}


def adopt_run(study_dir, run_dir, log=print) -> dict:
    """Make the run in ``run_dir`` the study's seed ``run.json``'s seed: refused (``StudyError``,
    naming what differs) unless the run has the study's protocol. Returns the study's new record."""
    from cxr_utils import comparison, runtime  # they import Keras: only when a run is adopted

    study_dir, run_dir = Path(study_dir), Path(run_dir)
    record = _read(study_dir / STUDY_RECORD, "give the folder of a seed study (python -m cxr_utils.study seeds)")
    study = record.get("settings", {})
    run = _run_settings(run_dir)
    differ = [name for name in SAME if run.get(name) != study.get(name)]
    if differ:
        raise StudyError(
            f"{run_dir} was run with {', '.join(f'{n}={run.get(n)!r}' for n in differ)}, but the study in {study_dir} "
            f"has {', '.join(f'{n}={study.get(n)!r}' for n in differ)}: only a run of the study's protocol can be "
            "one of its seeds")
    if not (study_dir / "manifest.csv").is_file() and any(
            Path(line.split(",", 1)[0]).is_absolute() for line in (run_dir / "split.csv").read_text().splitlines()[1:]):
        # A published study (no dataset listing of its own) names images relative to the dataset.
        raise StudyError(f"{run_dir} names its images by this machine's folders, and {study_dir} is a published "
                         "copy: adopt the run's published copy (book/executed/results, written by --book)")
    seed = int(run["seed"])
    parameters = {**{name: study[name] for name in SAME},
                  **{name: study.get(name, default) for name, default in training_defaults().items()}}
    for spec in REGISTRY.values():
        check_model_folder(run_dir / spec.id, spec, parameters, seed)  # every model, its own record

    target = seed_dir(study_dir, seed)
    staging = target.with_name(f".{target.name}.adopting")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy2(run_dir / "split.csv", staging / "split.csv")
    for spec in REGISTRY.values():
        shutil.copytree(run_dir / spec.id, staging / spec.id, ignore=lambda _, names: KEPT_OUT & set(names))
    # Evaluated and judged as the study evaluates and judges every seed (the run's own seed for intervals).
    evaluation.evaluate_test_set(staging, seed=seed)
    comparison.judge_claims(staging)
    replace_folder(staging, target)

    runs = record.setdefault("runs", {})
    runs[str(seed)] = {}
    for spec in REGISTRY.values():
        model_record = _read(target / spec.id / "run.json", "the adopted model's record")
        metrics = _read(target / spec.id / "metrics.json", "the adopted model's metrics")
        runs[str(seed)][spec.id] = {
            "wall_time_s": model_record.get("wall_time_s"), "finished_utc": model_record.get("created_utc"),
            "best_epoch": metrics["best_epoch"], "test_accuracy": metrics["test"]["accuracy"],
            "keras_backend": model_record.get("hardware", {}).get("keras_backend"),
            "adopted_from_run": True,
        }
    record.setdefault(ADOPTED, {})[str(seed)] = {
        "what": "the notebook series' run (python -m cxr_utils.run), not a second training of this seed",
        "profile": run.get("profile"), "git_commit": run.get("git_commit"), "run_created_utc": run.get("created_utc"),
        "adopted_utc": utc_now(),
    }
    if seed not in study.setdefault("seeds", []):
        study["seeds"].append(seed)
    runtime.write_json(record, study_dir / STUDY_RECORD)
    summary = summarise(study_dir)
    log(f"seed {seed} of {study_dir} is now the run in {run_dir}; summary of {len(summary['seeds'])} seeds rewritten")
    return record
