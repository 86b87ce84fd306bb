"""Running the seeds of a study: settings, one folder per seed, progress, resuming. See
``cxr_utils.study``."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from cxr_utils import chapters, config, evaluation
from cxr_utils.atomic import atomic_write
from cxr_utils.config import PROTOCOL, REGISTRY
from cxr_utils.chapters import utc_now
from cxr_utils.evaluation import model_complete
from cxr_utils.report import counted, duration_text
from cxr_utils.series import PROFILES, profile_parameters
from cxr_utils.study.common import (
    SEED_PREFIX, STUDY_RECORD, StudyError, evaluated, evaluation_files, seed_dir, seed_folders,
)
from cxr_utils.study.summary import summarise

DEFAULT_OUT = Path("results") / "study" / "seeds"  # below the current folder
# The parameters a study's results depend on: resuming with any of them changed is refused.
COMPARED = ("profile", "n_per_class", "epochs", "batch_size", "weights", "image_size", "dtype_policy", "models",
            "recompute_batchnorm_images")
# Training options (``training.TrainingConfig`` fields, default there) a study takes with -p beside the
# profile's parameters: recompute_batchnorm_images is this project's remedy (book/remedy.md), 0 the paper's.
TRAINING_OPTIONS = ("recompute_batchnorm_images",)
# Profile parameters a study sets otherwise (seeds, folders, profile) or does not use.
NOT_PARAMETERS = {
    "seed": "the seeds are set with --seeds N or --seed-list",
    "results_dir": "the study's folder is set with --out",
    "data_dir": "the dataset folder is set with --data-dir",
    "profile": "the profile is set with --profile",
    "extended_test_size": "the study tests on each split's test images only",
}
UNUSED = ("seed", "results_dir", "extended_test_size")  # dropped from a study's parameters
MIXED_PRECISION = {"auto": "auto", "on": True, "off": False, "bfloat16": "bfloat16"}


# -- settings -------------------------------------------------------------------------------------


def seed_list(n: int | None = None, listed: str | list | None = None) -> list[int]:
    """The study's seeds: the first ``n`` of PROTOCOL.seed, PROTOCOL.seed + 1, ..., or ``listed``
    ("42,7,1000" or a list of integers)."""
    if listed is not None:
        items = listed.split(",") if isinstance(listed, str) else list(listed)
        try:
            seeds = [int(str(item).strip()) for item in items if str(item).strip()]
        except ValueError:
            raise ValueError(f"--seed-list takes integers separated by commas, e.g. 42,7,1000, "
                             f"not {listed!r}") from None
        if not seeds:
            raise ValueError("--seed-list names no seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"--seed-list names a seed twice: {listed!r}")
        if any(seed < 0 for seed in seeds):
            raise ValueError(f"seeds must be 0 or more: {listed!r}")
        return seeds
    n = 5 if n is None else n
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"--seeds must be a positive integer, not {n!r}")
    return [PROTOCOL.seed + k for k in range(n)]


def training_defaults() -> dict:
    """``TRAINING_OPTIONS`` with their defaults, read from ``training.TrainingConfig`` (imports Keras)."""
    from cxr_utils.training import TrainingConfig  # training imports Keras: only for a study that trains

    return {name: getattr(TrainingConfig, name) for name in TRAINING_OPTIONS}


def study_parameters(profile: str = "paper", overrides: dict | None = None, data_dir=None) -> dict:
    """The profile's parameters (``series.profile_parameters``) with ``overrides``, checked, without
    the ones a study sets otherwise (``NOT_PARAMETERS``), and the ``TRAINING_OPTIONS``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    overrides = dict(overrides or {})
    options = {name: overrides.pop(name) for name in TRAINING_OPTIONS if name in overrides}
    known = sorted({*PROFILES[profile].parameters(), "cache_dir", *TRAINING_OPTIONS} - set(NOT_PARAMETERS))
    for name in overrides:
        if name in NOT_PARAMETERS:
            raise ValueError(f"-p {name}: not a study parameter ({NOT_PARAMETERS[name]})")
        if name not in known:
            raise ValueError(f"-p {name}: unknown parameter; a study takes {', '.join(known)}")
    parameters = profile_parameters(profile, data_dir, None, overrides)
    for name in UNUSED:
        parameters.pop(name, None)
    parameters.update({**training_defaults(), **options})
    from cxr_utils.training import TrainingConfig  # training imports Keras: only for a study that trains

    TrainingConfig(**options)  # ValueError for a bad value, e.g. a negative recompute_batchnorm_images
    if config.weights_kind(parameters["weights"]) == "file":
        path = Path(parameters["weights"]).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"weights file {path} does not exist; give the path of a local copy of "
                             "the ImageNet weights, 'imagenet' or None")
        parameters["weights"] = str(path)
    if parameters.get("cache_dir") is not None:
        parameters["cache_dir"] = str(Path(parameters["cache_dir"]).expanduser().resolve())
    return parameters


def _compared(settings: dict) -> dict:
    defaults = training_defaults()  # a study recorded before an option existed ran with its default
    return {name: settings.get(name, defaults.get(name)) for name in COMPARED}


def _check_same_study(record: dict, settings: dict, study_dir: Path) -> None:
    made, wanted = _compared(record.get("settings", {})), _compared(settings)
    differ = [name for name in COMPARED if made[name] != wanted[name]]
    if differ:
        made_text = ", ".join(f"{name}={made[name]!r}" for name in differ)
        wanted_text = ", ".join(f"{name}={wanted[name]!r}" for name in differ)
        trained = any(model_complete(folder / model_id) for _, folder in seed_folders(study_dir, record)
                      for model_id in REGISTRY)
        raise StudyError(
            f"{study_dir} holds a study made with {made_text} ({STUDY_RECORD}), but this command asks for "
            f"{wanted_text}: give the same settings to resume it, or --out a new folder for this study"
            + ("." if trained else " (no model is trained in it yet: deleting the folder loses nothing).")
        )


# -- one seed's folder ----------------------------------------------------------------------------


def seed_complete(folder) -> bool:
    """Every model trained and the verdicts written after the last of them."""
    folder = Path(folder)
    models = [folder / model_id / "metrics.json" for model_id in REGISTRY]
    if not evaluated(folder) or not all(path.is_file() for path in models):
        return False
    judged = min(path.stat().st_mtime for path in evaluation_files(folder))
    return judged >= max(path.stat().st_mtime for path in models)


def check_model_folder(folder: Path, spec, parameters: dict, seed: int) -> None:
    """Refuse a complete model folder trained with other settings than this study's."""
    try:
        settings = json.loads((folder / "run.json").read_text())["settings"]
    except (OSError, ValueError, KeyError):
        raise StudyError(f"{folder} has metrics.json but no readable run.json: delete the folder to retrain "
                         "the model") from None
    training = settings.get("training", {})
    defaults = training_defaults()
    made = {"epochs": training.get("epochs"), "batch_size": training.get("batch_size"),
            "seed": training.get("seed"), "image_size": settings.get("image_size"),
            **{name: training.get(name, default) for name, default in defaults.items()}}
    wanted = {"epochs": parameters["epochs"], "batch_size": parameters["batch_size"], "seed": seed,
              "image_size": parameters["image_size"],
              **{name: parameters.get(name, default) for name, default in defaults.items()}}
    if spec.has_backbone:
        made["weights"] = settings.get("model_options", {}).get("weights", PROTOCOL.weights)
        wanted["weights"] = parameters["weights"]
    differ = [name for name in wanted if made[name] != wanted[name]]
    if differ:
        raise StudyError(
            f"{folder} was trained with {', '.join(f'{n}={made[n]!r}' for n in differ)}, but this study asks "
            f"for {', '.join(f'{n}={wanted[n]!r}' for n in differ)}: delete the folder to retrain the model."
        )


def _copy_manifest(study_dir: Path, folder: Path, data_dir, log) -> None:
    """The study's manifest.csv (indexed once, here) copied into a seed's folder, where
    ``chapters.sample`` reads it."""
    target = folder / "manifest.csv"
    if target.is_file():
        return
    if not (study_dir / "manifest.csv").is_file():
        chapters.manifest(study_dir, data_dir, log)  # indexes the dataset
    atomic_write(target, lambda temporary: shutil.copyfile(study_dir / "manifest.csv", temporary))


# -- progress -------------------------------------------------------------------------------------


def time_left(durations: dict[str, list[float]], pending: list[str]) -> str:
    """The time the ``pending`` model ids should take: for each, the mean wall time of the same
    model so far (``durations``, model id -> seconds)."""
    if not pending:
        return "nothing left"
    known = [sum(durations[m]) / len(durations[m]) for m in pending if durations.get(m)]
    order = {model_id: k for k, model_id in enumerate(REGISTRY)}
    unknown = sorted({m for m in pending if not durations.get(m)}, key=lambda m: order.get(m, len(order)))
    if unknown and not known:
        return f"time left unknown until {', '.join(unknown)} {'has' if len(unknown) == 1 else 'have'} run once"
    if unknown:
        return f"more than {duration_text(sum(known))} left ({', '.join(unknown)} not timed yet)"
    return f"about {duration_text(sum(known))} left"


# -- the study ------------------------------------------------------------------------------------


def study_kind(options: dict) -> str:
    """What a study of several seeds is, as its study.json names it: "remedy" when it trains with
    this project's BatchNorm remedy (``recompute_batchnorm_images`` > 0), "seeds" for the paper's
    protocol."""
    return "remedy" if options.get("recompute_batchnorm_images", 0) else "seeds"


def run_seeds(study_dir, seeds: list[int], parameters: dict, mixed_precision: bool | str = "auto",
              log=print, progress: bool | None = None) -> dict:
    """Train and evaluate every model of ``config.REGISTRY`` once per seed, resuming what a
    previous run left; returns the study record (study.json). ``parameters``: as
    ``study_parameters`` returns them. Summarises at the end (``summarise``)."""
    # Keras and what imports it (comparison, runtime, training): only when a study trains.
    import keras

    from cxr_utils import comparison, runtime, training  # they import Keras: only when a seed trains

    study_dir = Path(study_dir).expanduser().resolve()
    session_start = time.perf_counter()
    runtime.use_mixed_precision(mixed_precision)  # ValueError for a setting it does not know
    policy = keras.mixed_precision.global_policy().name
    options = {name: parameters.get(name, default) for name, default in training_defaults().items()}
    settings = {
        "study": study_kind(options),
        **{name: parameters[name] for name in COMPARED if name in parameters},
        **options,
        "dtype_policy": policy,
        "mixed_precision": mixed_precision,
        "models": list(REGISTRY),
        "protocol": config.protocol_record(parameters.get("weights", config.PROTOCOL.weights),
                                           parameters.get("image_size", config.PROTOCOL.image_size), None,
                                           options.get("recompute_batchnorm_images", 0), mixed_precision),
    }
    record_path = study_dir / STUDY_RECORD
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            raise StudyError(f"{record_path} is not readable JSON: repair or delete it, "
                             "or --out a new folder") from None
        _check_same_study(record, settings, study_dir)
    else:
        if study_dir.is_dir() and any(p.name.startswith(SEED_PREFIX) for p in study_dir.iterdir()):
            raise StudyError(f"{study_dir} holds seed folders but no {STUDY_RECORD}, so its settings are unknown: "
                             "--out a new folder for this study.")
        record = {"started_utc": utc_now(), "runs": {}, "sessions": []}
    known_seeds = [int(s) for s in record.get("settings", {}).get("seeds", [])]
    settings["seeds"] = known_seeds + [s for s in seeds if s not in known_seeds]
    runs = record.setdefault("runs", {})
    session = {"started_utc": utc_now(), "command": runtime.invoked_command(),
               "seeds": list(seeds), "keras_backend": runtime.backend(), "dtype_policy": policy,
               "accelerator": (runtime.gpu_names() or ["CPU only"])[0], "trained": [], "wall_time_s": 0.0}
    sessions = record.setdefault("sessions", [])
    sessions.append(session)

    def save():
        session["wall_time_s"] = round(time.perf_counter() - session_start, 1)
        total = sum(entry.get("wall_time_s", 0.0) for entry in sessions)
        written = runtime.run_record(settings, total, study=settings["study"], started_utc=record["started_utc"],
                                     runs=runs, evaluated=record.get("evaluated", {}), sessions=sessions)
        written["updated_utc"] = written.pop("created_utc")
        runtime.write_json(written, record_path)
        return written

    data_dir, cache_dir = parameters.get("data_dir"), parameters.get("cache_dir")
    pending = [(seed, spec.id) for seed in seeds for spec in REGISTRY.values()
               if not model_complete(seed_dir(study_dir, seed) / spec.id)]
    durations: dict[str, list[float]] = {}
    for seed_runs in runs.values():
        for model_id, entry in seed_runs.items():
            if entry.get("dtype_policy", policy) == policy and entry.get("wall_time_s") is not None:
                durations.setdefault(model_id, []).append(entry["wall_time_s"])
    log(f"Study in {study_dir}: seeds {', '.join(map(str, seeds))}; profile {parameters['profile']}, "
        f"{config.weights_label(parameters['weights'])}, {parameters['n_per_class']} images per class, "
        f"{counted(parameters['epochs'], 'epoch')}, {runtime.backend()}, {policy}"
        + (f", BatchNorm statistics recomputed from {options['recompute_batchnorm_images']} training images "
           "before every validation (this project's remedy, not the paper's)"
           if options["recompute_batchnorm_images"] else "")
        + f"; {counted(len(pending), 'model')} to train.")
    study_dir.mkdir(parents=True, exist_ok=True)
    if not all(seed_complete(seed_dir(study_dir, seed)) for seed in seeds):
        # The dataset, indexed once for every seed; a missing dataset stops here, before any record.
        chapters.manifest(study_dir, data_dir, log)
    written = save()
    if cache_dir is not None and policy != "float32":
        # The features cache is keyed by weights, size and preprocessing, not by dtype policy:
        # mixed-precision features get a cache of their own, never mixed with float32 ones.
        cache_dir = str(Path(cache_dir) / policy)
    progress = sys.stderr.isatty() if progress is None else progress

    try:
        for index, seed in enumerate(seeds, 1):
            folder = seed_dir(study_dir, seed)
            where = f"seed {seed} ({index}/{len(seeds)})"
            if seed_complete(folder):
                log(f"{where}: complete, skipped.")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            _copy_manifest(study_dir, folder, data_dir, log)
            split = chapters.split(folder, data_dir, n_per_class=parameters["n_per_class"], seed=seed, log=log)
            for spec in REGISTRY.values():
                model_folder = folder / spec.id
                if model_complete(model_folder):
                    check_model_folder(model_folder, spec, parameters, seed)
                    continue
                start = time.perf_counter()
                outcome = training.run_experiment(
                    spec.id, split, folder,
                    training.TrainingConfig(epochs=parameters["epochs"], batch_size=parameters["batch_size"],
                                            seed=seed, mixed_precision=mixed_precision, progress=progress,
                                            **options),
                    model_options={"weights": parameters["weights"]} if spec.has_backbone else {},
                    cache_dir=cache_dir, save_model=False, image_size=parameters["image_size"],
                )
                wall = time.perf_counter() - start
                durations.setdefault(spec.id, []).append(wall)
                pending.remove((seed, spec.id))
                runs.setdefault(str(seed), {})[spec.id] = {
                    "wall_time_s": round(wall, 1), "finished_utc": utc_now(),
                    "best_epoch": int(outcome["result"].best_epoch),
                    "test_accuracy": float(outcome["metrics"]["accuracy"]), "dtype_policy": policy,
                    "keras_backend": runtime.backend(), "accelerator": session["accelerator"],
                }
                session["trained"].append(f"{seed}/{spec.id}")
                written = save()
                log(f"{where} {spec.paper_name}: {duration_text(wall)} (test accuracy "
                    f"{outcome['metrics']['accuracy']:.2f}); {counted(len(pending), 'model')} to go: "
                    f"{time_left(durations, [model_id for _, model_id in pending])}.")
            evaluation.evaluate_test_set(folder, seed=seed)
            verdicts = comparison.judge_claims(folder)
            record.setdefault("evaluated", {})[str(seed)] = utc_now()
            written = save()
            log(f"{where}: verdicts " + ", ".join(f"{row.claim} {row.verdict}" for row in verdicts.itertuples()))
    finally:
        written = save()  # the session's wall time, also when it stops early
    summary = summarise(study_dir)
    log(f"Summary of {counted(len(summary['seeds']), 'seed')}: {study_dir / 'summary.md'}")
    return written
