"""What each chapter needs from the chapters before it, so that any chapter can start cold.

Chapters talk through files in ``results_dir``, and on Google Colab each notebook may run on a
fresh machine. Cheap inputs (manifest, sample, split) are read when an earlier chapter wrote them
and rebuilt, deterministically, when missing; expensive ones (trained models) are named in one
sentence, with the chapters that make them.

Inputs from another run are refused, never mixed: ``sample.csv`` and ``split.csv`` carry a record
of the settings that made them (``sample.settings.json``: sample size, seed, hash of the file), and
a chapter asking for other settings stops with one sentence naming the file, both settings and the
fix. A file without a record (chapters 1 and 2 write theirs themselves) is checked against what the
requested settings give, then recorded. A table whose images are not on this machine (a results
folder on Google Drive) is pointed at this machine's copy of the dataset, downloaded when needed.
Explained in book/reproducibility.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
from pathlib import Path

import pandas as pd

from cxr_utils import config, data, evaluation
from cxr_utils.atomic import atomic_write, read_json


def note(message: str) -> None:
    """A progress line to standard error: a notebook shows it while it runs, the book's pages
    leave it out (``nb_output_stderr: remove``)."""
    print(message, file=sys.stderr, flush=True)


class MissingInputs(RuntimeError):
    """A chapter's inputs are missing and cannot be rebuilt here; shown as its one-sentence
    message (what to run), without a traceback.
    """

    def _render_traceback_(self):  # IPython shows these lines instead of the traceback
        return [f"{type(self).__name__}: {self}"]


class MismatchedInputs(MissingInputs):
    """An input file of ``results_dir`` was made by another run (other seed or sample size)."""


COLAB_CONTENT = Path("/content")  # a Colab runtime's working folder
DRIVE_MOUNT = COLAB_CONTENT / "drive"
# Said by every "run this first" message: on Colab each chapter may get a runtime of its own.
SHARED_ON_COLAB = ("; on Google Colab, chapters run on separate runtimes share their results only when each is "
                   "given the same drive_folder (a folder of your Google Drive).")


def utc_now() -> str:
    """The time now in UTC, to the second, as the study records write it."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def on_colab() -> bool:
    return "google.colab" in sys.modules


def _on_colab_path(path) -> Path:
    # The notebooks' default folders are relative to notebooks/ ("../results/paper"); on Colab,
    # where a notebook runs in /content with no checkout around it, they go below /content.
    path = Path(path).expanduser()
    return path if path.is_absolute() else COLAB_CONTENT.joinpath(*(part for part in path.parts if part != ".."))


RECORD_SUFFIX = ".settings.json"  # sample.csv -> sample.settings.json


def folders(results_dir, cache_dir, drive_folder: str | None = None) -> tuple[Path, Path]:
    """The run's results and image-cache folders (the results folder created when missing).

    ``drive_folder`` (Colab only): a folder of your Google Drive, mounted here, holding ``results``
    and ``cache``, so chapters on different Colab machines share them; without it, on Colab,
    relative folders go below /content (``../results/paper`` -> ``/content/results/paper``).
    """
    if drive_folder:
        try:
            from google.colab import drive
        except ImportError:
            raise MissingInputs(
                f"drive_folder={drive_folder!r} needs Google Colab, where Google Drive can be mounted; "
                "elsewhere leave drive_folder=None and set results_dir to a local folder."
            ) from None
        drive.mount(str(DRIVE_MOUNT))
        base = DRIVE_MOUNT / "MyDrive" / drive_folder
        results_dir, cache_dir = base / "results", base / "cache"
    elif on_colab():
        results_dir, cache_dir = _on_colab_path(results_dir), _on_colab_path(cache_dir)
    results, cache = Path(results_dir).expanduser(), Path(cache_dir).expanduser()
    results.mkdir(parents=True, exist_ok=True)
    return results, cache


def record_path(path) -> Path:
    """``sample.csv`` -> ``sample.settings.json``."""
    path = Path(path)
    return path.with_name(path.stem + RECORD_SUFFIX)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def record(path, **settings) -> Path:
    """Record the settings (``n_per_class``, ``seed``) that made the CSV file ``path``, with a hash
    of its contents; returns the record's path. A record whose hash no longer matches its file
    (the file was written again) counts as no record."""
    path = Path(path)
    text = json.dumps({"file": path.name, **settings, "sha256": _file_sha256(path)}, indent=1) + "\n"
    return atomic_write(record_path(path), lambda temporary: temporary.write_text(text))


def recorded_settings(path) -> dict | None:
    """The settings recorded for the CSV file ``path``; None without a valid record."""
    path, saved = Path(path), record_path(path)
    entry = read_json(saved)
    if not isinstance(entry, dict) or entry.get("sha256") != _file_sha256(path):
        return None
    return {k: v for k, v in entry.items() if k not in ("file", "sha256")}


def _settings_text(settings: dict) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in settings.items())


def _mismatch(path: Path, made_with: str, wanted: dict, also: str) -> MismatchedInputs:
    return MismatchedInputs(
        f"{path.name} in {path.parent} was made {made_with}, but this chapter asks for "
        f"{_settings_text(wanted)}: set results_dir (or drive_folder) to a new folder for this run, "
        f"or delete {path} ({also}) so that it is rebuilt with these settings."
    )


def _check(path: Path, table: pd.DataFrame, wanted: dict, expected, key, also: str, log) -> None:
    """Refuse ``table`` unless made with the ``wanted`` settings: by its record, else by its class
    counts and its columns ``key`` against ``expected()``, then recorded.
    """
    recorded = recorded_settings(path)
    if recorded is not None:
        mine = {name: recorded.get(name) for name in wanted}
        if mine != wanted:
            raise _mismatch(path, f"with {_settings_text(mine)} (recorded in {record_path(path).name})",
                            wanted, also)
        return
    counts = table["class"].value_counts()
    if set(counts.index) != set(config.CLASSES) or (counts != wanted["n_per_class"]).any():
        held = ", ".join(f"{counts.get(name, 0)} {name}" for name in config.PAPER_ORDER)
        raise _mismatch(path, f"for another sample size (it holds {held} images)", wanted, also)
    built = expected()
    if built[key].astype(str).values.tolist() != table[key].astype(str).values.tolist():
        raise _mismatch(path, "with another seed or from another manifest.csv (it is not what "
                              f"{_settings_text(wanted)} give)", wanted, also)
    try:
        record(path, **wanted)
    except OSError:  # a read-only results folder: checked, just not recorded
        return
    log(f"{path.name} checked against {_settings_text(wanted)} and recorded in {record_path(path).name}.")


def _images_here(table: pd.DataFrame, path: Path, data_dir, log) -> pd.DataFrame:
    """``table`` with image paths that exist here: when they do not (a table written on another
    machine), each is re-anchored from the common folder of the paths to this machine's dataset.
    """
    paths = [str(p) for p in table["path"]]
    missing = [p for p in paths if not os.path.isfile(p)]
    if not missing:
        return table
    log(f"The images {path.name} lists are not on this machine (e.g. {missing[0]}): "
        "finding the dataset here.")
    root = data.resolve_dataset(data_dir).root
    old_root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    moved = [str(Path(root) / os.path.relpath(p, old_root)) for p in paths]
    absent = [p for p in moved if not os.path.isfile(p)]
    if absent:
        raise MissingInputs(
            f"{path.name} in {path.parent} lists images under {old_root}, and this machine's copy of the "
            f"dataset ({root}) lacks {len(absent)} of them (e.g. {os.path.relpath(absent[0], root)}): pass "
            "data_dir=... pointing at the same release of the dataset, or start a new results_dir."
        )
    table = table.copy()
    table["path"] = moved
    return table


# -- the inputs of chapters 2-5 -----------------------------------------------------------------


def _read_or_build(path: Path, build, rebuilding: str, log=note, wanted: dict | None = None, key=None,
                   also: str = "") -> pd.DataFrame:
    # With ``wanted`` settings: a table read is checked (``_check``), a table built is recorded.
    if path.is_file():
        table = data.read_manifest(path)
        if wanted:
            _check(path, table, wanted, build, key, also, log)
        return table
    log(f"{path.name} not found in {path.parent}: rebuilding it ({rebuilding}).")
    table = build()
    data.save_manifest(table, path)
    if wanted:
        record(path, **wanted)
    return table


def manifest(results_dir, data_dir=None, log=note) -> pd.DataFrame:
    """The dataset listing chapter 1 writes (``manifest.csv``), with duplicate groups."""
    def build():
        return data.add_duplicate_groups(data.build_manifest(data.resolve_dataset(data_dir), progress=False))

    return _read_or_build(Path(results_dir) / "manifest.csv", build, "chapter 1's dataset listing", log)


def sample(results_dir, data_dir=None, n_per_class: int = config.PROTOCOL.n_per_class,
           seed: int = config.PROTOCOL.seed, log=note, *, images: bool = True) -> pd.DataFrame:
    """The balanced sample chapter 1 draws (``sample.csv``), rebuilt when missing; refused when
    made with another ``n_per_class`` or ``seed`` (``MismatchedInputs``). ``images``: make sure
    its images are on this machine."""
    path = Path(results_dir) / "sample.csv"

    def expected():
        return data.sample_balanced(manifest(results_dir, data_dir, log), n_per_class=n_per_class, seed=seed)

    table = _read_or_build(path, expected, f"chapter 1's sample, {n_per_class} per class, seed {seed}", log,
                           {"n_per_class": int(n_per_class), "seed": int(seed)}, ["label", "sha256"],
                           "and split.csv and the model folders made from it")
    return _images_here(table, path, data_dir, log) if images else table


def split(results_dir, data_dir=None, n_per_class: int = config.PROTOCOL.n_per_class,
          seed: int = config.PROTOCOL.seed, log=note) -> pd.DataFrame:
    """The train/val/test split chapter 2 makes (``split.csv``), rebuilt when missing; refused
    when made with another ``n_per_class`` or ``seed`` (``MismatchedInputs``). Its images are
    made sure to be on this machine."""
    path = Path(results_dir) / "split.csv"

    def expected():
        return data.split_dataset(sample(results_dir, data_dir, n_per_class, seed, log, images=False), seed=seed)

    table = _read_or_build(path, expected, f"chapter 2's split, seed {seed}", log,
                           {"n_per_class": int(n_per_class), "seed": int(seed)}, ["label", "sha256", "split"],
                           "and the model folders trained on it")
    return _images_here(table, path, data_dir, log)


# -- what chapters 6 to 8 need ------------------------------------------------------------------


def image_key(table: pd.DataFrame) -> list[tuple[int, str]]:
    """Which images ``table`` lists, in its order, as (label, file name): the same wherever the
    dataset lay on the machine that wrote the table."""
    return [(int(label), Path(str(path)).name) for label, path in zip(table["label"], table["path"])]


def _require_predictions(results_dir: Path, also: str = "") -> None:
    missing = [spec for spec in config.REGISTRY.values()
               if not (results_dir / spec.id / "predictions.csv").is_file()]
    if missing:
        chapters = ", ".join(f"notebooks/{spec.chapter}.ipynb" for spec in missing)
        raise MissingInputs(
            f"No trained {', '.join(spec.paper_name for spec in missing)} in {results_dir}: run {chapters}{also} "
            "first with this results_dir, or set results_dir to a folder that holds a run's results"
            + SHARED_ON_COLAB
        )


def require_trained_models(results_dir, data_dir=None) -> None:
    """Stop with one sentence when a model of the registry has no results in ``results_dir``, was
    tested on other images than ``split.csv``'s test set (``MismatchedInputs``), or when
    ``manifest.csv``'s images are missing here even after finding or downloading the dataset."""
    results_dir = Path(results_dir)
    _require_predictions(results_dir)
    split_csv = results_dir / "split.csv"
    if split_csv.is_file():
        table = pd.read_csv(split_csv, usecols=["path", "label", "split"])
        test = sorted(image_key(table[table["split"] == "test"]))
        for spec in config.REGISTRY.values():
            tested = pd.read_csv(results_dir / spec.id / "predictions.csv", usecols=["path", "label"])
            if sorted(image_key(tested)) != test:
                raise MismatchedInputs(
                    f"{spec.id}/predictions.csv in {results_dir} holds {spec.paper_name}'s predictions for "
                    f"other images than the test set of split.csv (another run's sample or split): run "
                    f"notebooks/{spec.chapter}.ipynb again with this results_dir's settings, or use a new "
                    "results_dir for the whole series."
                )
    manifest_csv = results_dir / "manifest.csv"
    if not manifest_csv.is_file():
        return
    absent = [p for p in pd.read_csv(manifest_csv, usecols=["path"])["path"].astype(str) if not os.path.isfile(p)]
    if absent:
        data.resolve_dataset(data_dir)  # downloads the dataset when data_dir is None
        absent = [p for p in absent if not os.path.isfile(p)]
    if absent:
        raise MissingInputs(
            f"manifest.csv in {results_dir} lists images this machine does not have (e.g. {absent[0]}), "
            "which the extended test set needs: run this chapter on the machine that ran chapter 1, or "
            "with the dataset at the same place."
        )


def require_evaluation(results_dir) -> None:
    """Stop with one sentence unless the models are trained and chapter 6 has evaluated them."""
    results_dir = Path(results_dir)
    _require_predictions(results_dir, also=" and notebooks/06_evaluation.ipynb")
    missing = [folder for folder in (evaluation.EVALUATION_DIR, evaluation.EXTENDED_DIR)
               if not (results_dir / folder / "metrics.csv").is_file()]
    if missing:
        raise MissingInputs(
            f"No evaluation in {results_dir / missing[0]}: run notebooks/06_evaluation.ipynb first "
            "with this results_dir" + SHARED_ON_COLAB
        )
