"""Score chest X-rays with the models of a finished run, as the run itself would.

    python -m cxr_utils.predict PATH... --run RESULTS_DIR [--model NAME|all] [--csv OUT]

PATH is an image file or a folder (searched recursively for .png, .jpg, .jpeg, .tif and .tiff;
a file named on the command line is tried whatever its suffix). Every image is decoded by
``cxr_utils.data`` exactly as training decoded its images (strictly; 8- or 16-bit; grey, RGB,
RGBA, palette, CMYK; any size) and preprocessed at the run's image size, read from the run's
records; an image too small or too elongated as stored (the rule of ``image_checks``, checked
before resizing) is not scored. For each image the command prints P(COVID) from each model and
its decision at 0.5, then the models' test metrics with 95% intervals, as the run recorded them
(``evaluation/metrics.csv`` and ``probability_metrics.csv``, or each model's ``metrics.json``),
and the notice that this is not a medical device (``report.DISCLAIMER``). ``--csv OUT`` writes
one row per scored image: path, then ``<model>_probability`` and ``<model>_decision`` (COVID or
Normal) per model.

Exit status: 0 every image scored; 1 some files could not be scored (unreadable, or outside the
size rule: each listed with the reason; the others are still scored); 2 a usage error: no
images found, or a run folder that cannot be used (not a results folder, a model missing, as in
a published copy without weights, or saved by an incompatible version: the message names the
folder and the fix). Never a traceback.

Models load with Keras' ``safe_mode=True``, after a check of each archive's configuration that
refuses any layer outside Keras and this package (no code from the run folder runs); importing
``cxr_utils.models`` registers the package's one custom layer. Each model loads once per
command; images stream through them a chunk at a time (bounded memory), decoded in parallel
threads while the models score the chunk before. Models whose ResNet50 backbone is frozen with
identical weights (ImageNet, the paper's setting) share one backbone pass per image.

Not a medical device: these probabilities must not be used to diagnose anyone.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import command, config, data, evaluation, image_checks, inference, metrics, report, saved_models
from cxr_utils.config import REGISTRY
from cxr_utils.saved_models import LoadedModel, RunFolderError, check_run_folder, load_models, model_image_size
from cxr_utils.atomic import atomic_write, read_json
from cxr_utils.data.decode import strict_decoding
from cxr_utils.data.layout import natural_key

# Folders are searched for these (compared lower-cased); files named on the command line are
# tried whatever their suffix. TIFF is read by the same strict decoder as the dataset's PNGs.
SUFFIXES = (*data.IMAGE_SUFFIXES, ".tif", ".tiff")
CHUNK_IMAGES = 256  # images decoded and scored at a time: about 150 MB of inputs at 224 px
THRESHOLD = 0.5
DECISIONS = {1: config.CLASS_NAMES[1], 0: config.CLASS_NAMES[0]}
_WORKERS = max(1, min(8, os.cpu_count() or 1))




class UsageError(ValueError):
    """The command was asked something it cannot do (no images, a bad option)."""


# --- finding the images ----------------------------------------------------------------------

def _is_candidate(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES and not path.name.startswith(".") and path.is_file()


def find_images(paths) -> tuple[list[Path], list[dict]]:
    """The image files among ``paths`` (files, or folders searched recursively in natural name
    order), and the problems: ``{"path", "reason"}`` for a path that does not exist."""

    files, problems, seen = [], [], set()
    for given in map(Path, paths):
        if given.is_dir():
            found = sorted((p for p in given.rglob("*") if _is_candidate(p)
                            and not any(part.startswith(".") for part in p.relative_to(given).parts)),
                           key=lambda p: natural_key(str(p.relative_to(given))))
        elif given.exists():
            found = [given]
        else:
            problems.append({"path": str(given), "reason": "no such file or folder"})
            continue
        for path in found:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files, problems


# --- scoring ---------------------------------------------------------------------------------

def _decode(path: Path, image_size: int):
    """The model input of one file, or the reason it is not scored: it cannot be read (as
    training decodes), or its size as stored breaks ``image_checks.size_problem``."""
    try:
        gray = data.decode_grayscale(path)
        refused = image_checks.size_problem(width=gray.shape[1], height=gray.shape[0])
        return (None, refused) if refused else (data.preprocess(gray, image_size), None)
    except data.DatasetError as error:
        # The reason alone: the dataset's fix (re-download, rebuild the manifest) does not apply to a file being scored.
        return None, error.reason or str(error)
    except (OSError, ValueError, MemoryError) as error:
        return None, f"cannot be decoded ({type(error).__name__}: {error})"


def _decode_chunk(pool, paths: list[Path], image_size: int):
    return list(pool.map(lambda p: _decode(p, image_size), paths))


def score_images(loaded: dict[str, LoadedModel], paths, image_size: int, batch_size: int = config.PROTOCOL.batch_size,
                 chunk_size: int = CHUNK_IMAGES, progress: bool = False) -> tuple[pd.DataFrame, list[dict]]:
    """P(COVID) of every model for each file of ``paths``: a table (path, then one column per
    model id, in the registry's order) of the files that could be decoded, and the problems
    (``{"path", "reason"}``) of those that could not. Chunks of ``chunk_size`` files stream
    through the models, the next chunk decoded in threads while the models score this one."""

    paths = [Path(p) for p in paths]
    starts = list(range(0, len(paths), chunk_size))
    scored_paths, problems = [], []
    columns = {model_id: [] for model_id in loaded}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), desc="Scoring", unit="img", file=sys.stderr)
    # Strict decoding is a Pillow global: set once around all threads (per-thread toggling races).
    # ``pool`` decodes the files of a chunk in parallel; ``ahead`` (one thread) hands it the next
    # chunk while the models score this one.
    with strict_decoding(), concurrent.futures.ThreadPoolExecutor(max_workers=_WORKERS) as pool, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as ahead:
        def chunk_at(index):
            return paths[starts[index]: starts[index] + chunk_size]

        pending = ahead.submit(_decode_chunk, pool, chunk_at(0), image_size) if starts else None
        for index in range(len(starts)):
            chunk = chunk_at(index)
            decoded = pending.result()
            if index + 1 < len(starts):
                pending = ahead.submit(_decode_chunk, pool, chunk_at(index + 1), image_size)
            inputs = [array for array, _ in decoded if array is not None]
            for path, (array, reason) in zip(chunk, decoded):
                if array is None:
                    problems.append({"path": str(path), "reason": reason})
                else:
                    scored_paths.append(str(path))
            if inputs:
                images = np.stack(inputs)
                features = {}
                for model_id, entry in loaded.items():
                    if entry.backbone is not None:
                        owner = entry.shares_backbone_with or model_id
                        if owner not in features:
                            features[owner] = inference.predict_in_batches(entry.backbone, images, batch_size)
                        probabilities = inference.predict_probabilities(entry.head, features[owner], batch_size)
                    else:
                        probabilities = inference.predict_probabilities(entry.model, images, batch_size)
                    columns[model_id].append(probabilities)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    table = pd.DataFrame({"path": scored_paths})
    for model_id, parts in columns.items():
        table[model_id] = np.concatenate(parts).astype(np.float32) if parts else np.empty(0, np.float32)
    return table, problems


def predict(paths, results_dir, models=None, batch_size: int = config.PROTOCOL.batch_size,
            chunk_size: int = CHUNK_IMAGES, progress: bool = False) -> tuple[pd.DataFrame, list[dict]]:
    """Score image files or folders with a run's models (``models``: ids or paper names, default
    all): the table of ``score_images`` and the problems, files not found included."""
    ids = config.model_ids(models)
    check_run_folder(results_dir, ids)
    files, problems = find_images(paths)
    loaded = load_models(results_dir, ids)
    table, unreadable = score_images(loaded, files, model_image_size(loaded, results_dir), batch_size,
                                     chunk_size, progress)
    return table, problems + unreadable


def decisions_table(table: pd.DataFrame) -> pd.DataFrame:
    """``score_images``'s table as the CSV holds it: path, then per model ``<id>_probability``
    and ``<id>_decision`` (COVID when the probability reaches 0.5, else Normal)."""
    out = pd.DataFrame({"path": table["path"]})
    for model_id in (c for c in table.columns if c != "path"):
        out[f"{model_id}_probability"] = table[model_id]
        out[f"{model_id}_decision"] = [DECISIONS[int(p >= THRESHOLD)] for p in table[model_id]]
    return out


# --- the run's test metrics ------------------------------------------------------------------

def recorded_test_metrics(results_dir, ids=None) -> pd.DataFrame:
    """The models' test metrics with 95% intervals as the run recorded them (long form: model,
    metric, value, low, high, n, method, source), for accuracy, precision, recall, F1, AUC and
    Brier. From ``evaluation/metrics.csv`` and ``probability_metrics.csv`` (chapter 6); for a
    model missing there, from its ``metrics.json`` (confusion counts with Wilson and bootstrap
    intervals computed from them, and the AUC and Brier it stored). Empty when neither exists."""

    results_dir = Path(results_dir)
    ids = list(ids or REGISTRY)
    names = {REGISTRY[m].paper_name: m for m in ids}
    parts = []
    folder = results_dir / evaluation.EVALUATION_DIR
    for file_name in ("metrics.csv", "probability_metrics.csv"):
        path = folder / file_name
        if path.is_file():
            table = pd.read_csv(path)
            if {"model", "metric", "value"} <= set(table.columns):
                table = table[table["model"].isin(names)]
                parts.append(table.assign(source=f"{evaluation.EVALUATION_DIR}/{file_name}"))
    recorded = {name for part in parts for name in part["model"]}
    for name, model_id in names.items():
        record = None if name in recorded else read_json(results_dir / model_id / "metrics.json")
        if not record or "test" not in record:
            continue
        test = record["test"]
        counts = [test["tp"], test["fn"], test["fp"], test["tn"]]
        y_true, y_pred = np.repeat([1, 1, 0, 0], counts), np.repeat([1, 0, 1, 0], counts)
        source = f"{model_id}/metrics.json"
        parts.append(metrics.metrics_with_intervals(y_true, y_pred).reset_index().assign(
            model=name, n=int(test["n"]), source=source))
        probability = [{"model": name, "metric": metric, "value": values.get("value"), "low": values.get("low"),
                        "high": values.get("high"), "n": int(test["n"]), "method": "percentile bootstrap",
                        "source": source}
                       for metric, values in record.get("test_probability", {}).items()]
        if probability:
            parts.append(pd.DataFrame(probability))
    columns = ["model", "metric", "value", "low", "high", "n", "method", "source"]
    if not parts:
        return pd.DataFrame(columns=columns)
    found = pd.concat(parts, ignore_index=True)
    order = {name: k for k, name in enumerate(names)}
    metric_order = {m: k for k, m in enumerate((*config.METRICS, "auc", "brier"))}
    found = found.assign(_m=found["model"].map(order), _k=found["metric"].map(metric_order).fillna(99))
    found = found.sort_values(["_m", "_k"], kind="stable").drop(columns=["_m", "_k"]).reset_index(drop=True)
    return found[[c for c in columns if c in found]]


def interval_text(value, low, high, digits: int = 3) -> str:
    """"0.583 [0.320, 0.807]"; the value alone, marked, when there is no interval."""
    if value is None or pd.isna(value):
        return "n/a"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{value:.{digits}f} (no interval)"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def metrics_wide(long: pd.DataFrame) -> pd.DataFrame:
    """One row per model, one column per metric ("value [low, high]"), and n."""
    if long.empty:
        return pd.DataFrame()
    texts = long.assign(text=[interval_text(v, lo, hi) for v, lo, hi in zip(long["value"], long["low"], long["high"])])
    wide = texts.pivot(index="model", columns="metric", values="text")
    wide = wide.reindex(index=list(dict.fromkeys(long["model"])),
                        columns=[m for m in (*config.METRICS, "auc", "brier") if m in wide.columns])
    wide["n"] = long.groupby("model")["n"].max().reindex(wide.index).map(
        lambda n: "" if pd.isna(n) else str(int(n)))
    return wide


# --- the command -----------------------------------------------------------------------------

def _printable(table: pd.DataFrame, loaded_names: dict[str, str]) -> pd.DataFrame:
    shown = pd.DataFrame({"image": table["path"]})
    for model_id, name in loaded_names.items():
        shown[f"{name} P(COVID)"] = [f"{p:.3f}" for p in table[model_id]]
        shown[f"{name} decision"] = [DECISIONS[int(p >= THRESHOLD)] for p in table[model_id]]
    return shown


def command_line() -> argparse.ArgumentParser:
    parser = saved_models.run_command_parser(
        "cxr_utils.predict",
        f"P(COVID) of chest X-ray images from the models of a finished run, with the run's test metrics. Images "
        f"must be {image_checks.RULE}.",
        "0 every image scored; 1 some files could not be "
        "scored (unreadable or outside that rule: listed); 2 usage error "
        "(no images, or a run folder without the models or from an incompatible version).",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    parser.add_argument("--csv", metavar="OUT", help="write path, then per model probability and decision, to OUT")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv`` (default sys.argv); returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up notes
    parser = command_line()
    args = parser.parse_args(argv)  # exits with status 2 on a usage error

    try:
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, not {args.batch_size}")
        ids = config.model_ids(args.model)
        results_dir = check_run_folder(args.run, ids)
        files, problems = find_images(args.paths)
        if not files:
            raise UsageError(
                f"no image files ({', '.join(SUFFIXES)}) found in {', '.join(args.paths)}"
                + (f" ({problems[0]['path']}: {problems[0]['reason']})" if problems else "")
            )
        loaded = load_models(results_dir, ids)
        image_size = model_image_size(loaded, results_dir)
        table, unreadable = score_images(loaded, files, image_size, args.batch_size,
                                         progress=not args.no_progress and len(files) > CHUNK_IMAGES)
        problems += unreadable
        names = {m.id: m.name for m in loaded.values()}
        print(f"Run: {results_dir} · models: {', '.join(names.values())} · image size {image_size} px · "
              f"P(COVID), decision at {THRESHOLD}")
        if len(table):
            with pd.option_context("display.max_colwidth", None, "display.width", 250):
                print(_printable(table, names).to_string(index=False))
        else:
            print("No image could be scored.")
        if problems:
            total = len(files) + len(problems) - len(unreadable)  # files found, and paths not found
            print(f"\nCould not score {len(problems)} of {total} files:")
            for problem in problems:
                print(f"  {problem['path']}: {problem['reason']}")
        if args.csv:

            out = decisions_table(table)
            atomic_write(args.csv, lambda temporary: out.to_csv(temporary, index=False))
            print(f"\nCSV: {args.csv} ({len(out)} rows)")
        recorded = recorded_test_metrics(results_dir, ids)
        print()
        if recorded.empty:
            print(f"Test metrics: none recorded in {results_dir} (run notebooks/06_evaluation.ipynb).")
        else:
            sources = ", ".join(dict.fromkeys(recorded["source"]))
            print(f"This run's test metrics, 95% intervals (from {sources}):")
            with pd.option_context("display.width", 250):
                print(metrics_wide(recorded).to_string())
        print(f"\n{report.DISCLAIMER}")
    except (RunFolderError, UsageError, data.DatasetError) as error:
        return command.fail(error, command.EXIT_USAGE)
    except ValueError as error:  # e.g. an unknown --model name
        return command.fail(error, command.EXIT_USAGE)
    except OSError as error:  # writing --csv, reading a folder
        return command.fail(f"{getattr(error, 'filename', '') or ''} {error.strerror or error}", command.EXIT_FAILED)
    except KeyboardInterrupt:
        return command.fail("interrupted", command.EXIT_INTERRUPTED)
    except Exception as error:  # a bug: one line naming it, not a traceback
        return command.fail(f"unexpected {type(error).__name__}: {error} (please report this)", command.EXIT_FAILED)
    return command.EXIT_FAILED if problems else command.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
