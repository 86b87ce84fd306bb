"""A run's models on any labelled folder of chest X-rays: the external test the paper does not do.

    python -m cxr_utils.external DIR --run RESULTS_DIR [--name NAME] [--model NAME|all]
        [--max-hamming BITS]

DIR is any folder ``cxr_utils.data.find_dataset`` recognises: COVID/ and Normal/ (any letter
case, ``COVID-19/`` too), their images directly inside or in ``images/``, at DIR or up to four
levels below it; PNG or JPEG, 8- or 16-bit, any mode and size (decoded as training decoded).
Unreadable files are listed and left out, and so are images too small or too elongated as
stored to be chest X-rays (the rule of ``cxr_utils.image_checks``). Images that duplicate the
run's training or validation images (the same SHA-256, or a perceptual hash within
``--max-hamming`` bits of one, default ``data.DEFAULT_MAX_HAMMING``, linked as
``data.add_duplicate_groups`` links the dataset's) are excluded and counted: a model would
recognise them, not classify them.

The rest are scored by each model (``cxr_utils.predict``: safe-mode loading, each model once,
images streamed), and evaluated with the tables of ``cxr_utils.evaluation`` (accuracy,
precision, recall, F1 with 95% intervals, AUC and Brier score, McNemar between each pair of
models, confusion matrices). Everything lands in ``RESULTS_DIR/external/<NAME>/`` (NAME defaults
to DIR's folder name), written whole or not at all:

    predictions.csv         path (relative to the labelled folder), class, label, then per model
                            <id>_probability and <id>_predicted
    evaluation/             confusion_<model>.csv, metrics.csv, probability_metrics.csv, mcnemar.csv
    excluded.csv            the duplicates left out, with the run's images they copy
    problems.csv            unreadable files and why
    refused.csv             images the size rule leaves out: path, class, width, height, reason
    figures/                roc.png (both classes present) and confusion_<model>.png
    external.json           counts, settings, versions, date
    report.md               the above in short, with the not-a-medical-device notice

``cxr_utils.model_card`` adds every such folder to the run's model card. Exit status: 0 all
files scored; 1 some files unreadable or refused by size (listed; the rest evaluated); 2 a usage
error (the folder is not a labelled dataset, the run folder cannot be used, or no image is left
to evaluate).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import command, config, data, evaluation, image_checks, predict, report, saved_models
from cxr_utils.config import CLASSES, PAPER_ORDER
from cxr_utils.atomic import replace_folder

EXTERNAL_DIR = "external"
RECORD = "external.json"
MCNEMAR_COLUMNS = ("model_a", "model_b", "a_only_correct", "b_only_correct", "p_value", "n")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def external_dir(results_dir, name: str) -> Path:
    """Where the evaluation of the folder called ``name`` lives: ``RESULTS_DIR/external/<name>``."""
    return Path(results_dir) / EXTERNAL_DIR / name


def evaluated_names(results_dir) -> list[str]:
    """The external folders evaluated for this run (those with a complete record), sorted."""
    folder = Path(results_dir) / EXTERNAL_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / RECORD).is_file())


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise predict.UsageError(
            f"--name {name!r} cannot name a folder: use letters, digits, '.', '_' and '-' (up to 100), "
            "starting with a letter or digit"
        )
    return name


def seen_images(results_dir) -> pd.DataFrame:
    """The run's training and validation images (rows of its split.csv): what an external image
    must not copy."""
    path = Path(results_dir) / "split.csv"
    if not path.is_file():
        raise saved_models.RunFolderError(
            f"{path} is missing: without the run's split the copies of its training images cannot be "
            "excluded. Fix: point --run at a complete results folder (run notebooks/02_preprocessing.ipynb "
            "with this results_dir)"
        )
    split = data.read_manifest(path)
    data.require_columns(split, ["split", "sha256", "phash"], f"split {path}")
    return split[split["split"].isin(["train", "val"])].reset_index(drop=True)


def exclude_seen(manifest: pd.DataFrame, seen: pd.DataFrame,
                 max_hamming: int = data.DEFAULT_MAX_HAMMING) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``manifest`` split into the images kept and those that duplicate a ``seen`` image.

    The two tables are linked as the dataset's duplicates are (``data.add_duplicate_groups``: the
    same SHA-256, or perceptual hashes within ``max_hamming`` bits, chained into groups); an
    external image whose group reaches a seen image is excluded. ``excluded`` adds ``kind``
    ("exact": byte-identical to a seen image; else "near") and ``matches`` (the seen images of
    its group, "split:file name").
    """
    columns = ["path", "class", "label", "sha256", "phash"]
    data.require_columns(manifest, [*columns, "width", "height", "mode"])
    data.require_columns(seen, [*columns, "split"], "split")
    if manifest.empty:
        return manifest.copy(), manifest.assign(kind=[], matches=[])
    combined = pd.concat([seen[[*columns, "split"]].assign(_external=False),
                          manifest[columns].assign(split="external", _external=True)], ignore_index=True)
    grouped = data.add_duplicate_groups(combined, max_hamming=max_hamming)
    seen_part = grouped[~grouped["_external"]]
    external = grouped[grouped["_external"]].reset_index(drop=True)
    copied = external["duplicate_group"].isin(set(seen_part["duplicate_group"])).to_numpy()
    names: dict[int, list[str]] = {}
    for group, split_name, path in zip(seen_part["duplicate_group"], seen_part["split"], seen_part["path"]):
        names.setdefault(group, []).append(f"{split_name}:{Path(path).name}")
    manifest = manifest.reset_index(drop=True)
    kept = manifest[~copied].reset_index(drop=True)
    excluded = manifest[copied].reset_index(drop=True)
    seen_hashes = set(seen["sha256"])
    excluded["kind"] = ["exact" if h in seen_hashes else "near" for h in excluded["sha256"]]
    excluded["matches"] = [" ".join(names[g]) for g in external.loc[copied, "duplicate_group"]]
    kept.attrs, excluded.attrs = dict(manifest.attrs), {}
    return kept, excluded


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _markdown_table(table: pd.DataFrame, index: bool = True) -> str:
    return table.to_markdown(index=index) if len(table) else "(none)"


def report_markdown(record: dict, metrics_long: pd.DataFrame, confusions: dict, mcnemar: pd.DataFrame,
                    excluded: pd.DataFrame, problems: list[dict], refused: list[dict] = ()) -> str:
    """The short report of one external evaluation, from its tables (``refused``: the files the
    size rule left out, dicts path/reason)."""

    counts = record["counts"]
    lines = [
        f"# External evaluation: {record['name']}", "",
        f"> **Not a medical device.** {report.DISCLAIMER}", "",
        f"The labelled folder `{record['source_name']}` (layout: {record['layout']}) scored with the models of the "
        f"run `{record['run_name']}` ({', '.join(record['models'])}) at {record['image_size']} px, "
        f"{record['created_utc']}.", "",
        f"- Image files found: {counts['files']}; unreadable: {counts['unreadable']}; refused by size: "
        f"{counts.get('refused_size', 0)} (images must be {image_checks.RULE}).",
        f"- Excluded as copies of the run's training or validation images: {counts['excluded']} "
        f"({counts['excluded_exact']} byte-identical, {counts['excluded_near']} within {record['max_hamming']} of "
        f"{data.PHASH_BITS} bits of perceptual hash).",
        f"- Evaluated: {counts['evaluated']} images ({counts['evaluated_COVID']} COVID, "
        f"{counts['evaluated_Normal']} Normal).", "",
        "## Metrics (COVID positive, threshold 0.5, 95% intervals)", "",
        _markdown_table(predict.metrics_wide(metrics_long)), "",
        "## Confusion matrices (rows actual, columns predicted)", "",
    ]
    for name, table in confusions.items():
        lines += [f"**{name}**", "", table.to_markdown(), ""]
    lines += ["## McNemar's exact test between models", "",
              _markdown_table(mcnemar, index=False) if len(mcnemar) else "One model only: no pair to compare.", ""]
    if len(excluded):
        shown = excluded[["path", "class", "kind", "matches"]].head(20)
        lines += ["## Excluded duplicates", "", shown.to_markdown(index=False), ""]
        if len(excluded) > len(shown):
            lines += [f"and {len(excluded) - len(shown)} more (excluded.csv).", ""]
    if problems:
        lines += ["## Unreadable files", ""] + [f"- `{p['path']}`: {p['reason']}" for p in problems] + [""]
    if refused:
        lines += ["## Files refused by size", ""] + [f"- `{r['path']}`: {r['reason']}" for r in refused] + [""]
    return "\n".join(lines)


def evaluate(data_dir, results_dir, name: str | None = None, models=None,
             max_hamming: int = data.DEFAULT_MAX_HAMMING, batch_size: int = config.PROTOCOL.batch_size,
             progress: bool = False, log=print) -> dict:
    """Evaluate the run's models on the labelled folder ``data_dir``; write and return the results.

    Returns a dict: folder (where they were written), record (external.json), predictions
    (paper name -> path, label, probability, predicted), metrics, probability, mcnemar,
    confusions, excluded, problems, refused (files the size rule left out, dicts path/reason).
    Raises ``saved_models.RunFolderError`` or ``predict.UsageError`` (the command's exit status 2)
    and ``data.DatasetError`` for a folder that is not a labelled dataset.
    """
    from cxr_utils import metrics, runtime  # runtime imports Keras: only when a folder is evaluated

    data_dir, results_dir = Path(data_dir), Path(results_dir)
    name = check_name(name or data_dir.resolve().name)
    ids = config.model_ids(models)
    saved_models.check_run_folder(results_dir, ids)
    seen = seen_images(results_dir)
    layout = data.find_dataset(data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.DatasetWarning)  # the problems are listed below
        manifest = data.build_manifest(layout, on_problem="skip", progress=progress)
    problems = list(manifest.attrs.get("problems", []))
    sized, refused = image_checks.refuse_by_size(manifest)
    if sized.empty:
        raise predict.UsageError(
            f"none of the {len(manifest)} readable images of {layout.root} is {image_checks.RULE}; "
            "there is nothing to evaluate"
        )
    kept, excluded = exclude_seen(sized, seen, max_hamming)
    if kept.empty:
        raise predict.UsageError(
            f"all {len(sized)} readable images of {layout.root} of a size to score copy the run's training or "
            "validation images; there is nothing left to evaluate"
        )
    log(f"{len(manifest) + len(problems)} files in {layout.root}: {len(problems)} unreadable, {len(refused)} refused "
        f"by size, {len(excluded)} copies of the run's training or validation images excluded, {len(kept)} to score")
    loaded = saved_models.load_models(results_dir, ids)
    image_size = saved_models.model_image_size(loaded, results_dir)
    table, unreadable = predict.score_images(loaded, kept["path"], image_size, batch_size, progress=progress)
    problems += unreadable
    kept = kept.set_index("path").loc[table["path"]].reset_index()  # drop any file that failed now
    if kept.empty:
        raise predict.UsageError(f"no image of {layout.root} could be scored")

    seed = evaluation.run_seed(results_dir)
    labels = kept["label"].to_numpy()
    predictions = {
        entry.name: pd.DataFrame({
            "path": [_relative(p, layout.root) for p in kept["path"]], "label": labels,
            "probability": table[model_id].to_numpy(),
            "predicted": metrics.labels_from_probabilities(table[model_id].to_numpy()),
        })
        for model_id, entry in loaded.items()
    }
    confusions = evaluation.confusion_matrices(predictions)
    metrics_long = evaluation.metrics_table(predictions, seed=seed)
    probability = evaluation.probability_table(predictions, seed=seed)
    mcnemar = evaluation.mcnemar_table(predictions)
    if mcnemar.empty:
        mcnemar = pd.DataFrame(columns=list(MCNEMAR_COLUMNS))

    excluded_out = excluded.assign(path=[_relative(p, layout.root) for p in excluded["path"]])
    problems_out = [{"path": _relative(p["path"], layout.root), "reason": p["reason"]} for p in problems]
    refused_table = refused.assign(path=[_relative(p, layout.root) for p in refused["path"]])
    refused_out = refused_table[["path", "reason"]].to_dict("records")
    counts = {
        "files": int(len(manifest) + len(manifest.attrs.get("problems", []))),
        "unreadable": len(problems),
        "refused_size": int(len(refused)),
        "excluded": int(len(excluded)),
        "excluded_exact": int((excluded["kind"] == "exact").sum()),
        "excluded_near": int((excluded["kind"] == "near").sum()),
        "evaluated": int(len(kept)),
        **{f"evaluated_{c}": int((labels == label).sum()) for c, label in CLASSES.items()},
    }
    record = runtime.run_record(
        {"data_dir": str(layout.root), "results_dir": str(results_dir), "max_hamming": int(max_hamming),
         "models": ids, "batch_size": int(batch_size), "seed": seed},
        name=name, source_name=layout.root.name, layout=layout.layout, run_name=results_dir.resolve().name,
        models=[entry.name for entry in loaded.values()], image_size=image_size, max_hamming=int(max_hamming),
        counts=counts,
    )

    final = external_dir(results_dir, name)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        wide = pd.DataFrame({"path": predictions[next(iter(predictions))]["path"],
                             "class": kept["class"].to_numpy(), "label": labels})
        for model_id, entry in loaded.items():
            wide[f"{model_id}_probability"] = predictions[entry.name]["probability"].to_numpy()
            wide[f"{model_id}_predicted"] = predictions[entry.name]["predicted"].to_numpy()
        wide.to_csv(staging / "predictions.csv", index=False)
        evaluation.save(staging, confusions, metrics_long, mcnemar, probability)
        excluded_out[["path", "class", "label", "sha256", "kind", "matches"]].to_csv(staging / "excluded.csv",
                                                                                      index=False)
        pd.DataFrame(problems_out, columns=["path", "reason"]).to_csv(staging / "problems.csv", index=False)
        refused_table[["path", "class", "width", "height", "reason"]].to_csv(staging / "refused.csv", index=False)
        _figures(staging / "figures", predictions, confusions)
        (staging / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
        (staging / "report.md").write_text(
            report_markdown(record, metrics_long.pipe(_with_probability, probability), confusions, mcnemar,
                            excluded_out, problems_out, refused_out))
        replace_folder(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"folder": final, "record": record, "predictions": predictions, "metrics": metrics_long,
            "probability": probability, "mcnemar": mcnemar, "confusions": confusions,
            "excluded": excluded_out, "problems": problems_out, "refused": refused_out}


def _with_probability(metrics_long: pd.DataFrame, probability: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([metrics_long, probability], ignore_index=True)


def _figures(folder: Path, predictions: dict, confusions: dict) -> None:
    import matplotlib.pyplot as plt

    from cxr_utils import plots  # imports matplotlib: only when a figure is drawn

    folder.mkdir(parents=True, exist_ok=True)
    both_classes = all(len(np.unique(t["label"])) == 2 for t in predictions.values())
    if both_classes:
        plt.close(plots.plot_roc(predictions, path=folder / "roc.png"))
    for name, table in confusions.items():
        plt.close(plots.plot_confusion(table.reindex(index=PAPER_ORDER, columns=PAPER_ORDER), name,
                                       path=folder / f"confusion_{name}.png"))


def command_line() -> argparse.ArgumentParser:
    parser = saved_models.run_command_parser(
        "cxr_utils.external",
        "Evaluate a run's models on a labelled folder of chest X-rays (COVID/ and Normal/), leaving out "
        f"copies of the run's training and validation images. Images must be {image_checks.RULE}.",
        "0 every file scored; 1 some files unreadable or "
        "refused by size (listed; the rest evaluated); 2 usage error (not a labelled folder, a run folder "
        "that cannot be used, nothing left to evaluate).",
        run_help="results folder of a run",
    )
    parser.add_argument("data_dir", metavar="DIR", help="folder holding COVID/ and Normal/ (or a folder above it)")
    parser.add_argument("--name", help="name of the evaluation (default: DIR's folder name); results go to "
                        "RESULTS_DIR/external/NAME/")
    parser.add_argument("--max-hamming", type=int, default=data.DEFAULT_MAX_HAMMING,
                        help=f"near-duplicate threshold in bits of {data.PHASH_BITS} (default "
                        f"{data.DEFAULT_MAX_HAMMING}, the split's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv`` (default sys.argv); returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MPLBACKEND", "Agg")
    args = command_line().parse_args(argv)

    try:
        if args.batch_size < 1:
            raise predict.UsageError(f"--batch-size must be at least 1, not {args.batch_size}")
        if not 0 <= args.max_hamming <= data.PHASH_BITS:
            raise predict.UsageError(f"--max-hamming must lie between 0 and {data.PHASH_BITS}")
        result = evaluate(args.data_dir, args.run, args.name, args.model, args.max_hamming, args.batch_size,
                          progress=not args.no_progress)
    except (saved_models.RunFolderError, predict.UsageError, data.DatasetError, ValueError) as error:
        return command.fail(error, command.EXIT_USAGE)
    except OSError as error:
        return command.fail(f"{getattr(error, 'filename', '') or ''} {error.strerror or error}", command.EXIT_USAGE)
    except KeyboardInterrupt:
        return command.fail("interrupted", command.EXIT_INTERRUPTED)
    except Exception as error:  # a bug: one line naming it, not a traceback
        return command.fail(f"unexpected {type(error).__name__}: {error} (please report this)", command.EXIT_FAILED)
    counts = result["record"]["counts"]
    print(f"Evaluated {counts['evaluated']} images ({counts['evaluated_COVID']} COVID, {counts['evaluated_Normal']} "
          f"Normal); excluded {counts['excluded']} copies of the run's training or validation images "
          f"({counts['excluded_exact']} exact, {counts['excluded_near']} near); {counts['unreadable']} unreadable; "
          f"{counts['refused_size']} refused by size (images must be {image_checks.RULE}).")
    with pd.option_context("display.width", 250):
        print(predict.metrics_wide(_with_probability(result["metrics"], result["probability"])).to_string())
    if len(result["mcnemar"]):
        print(result["mcnemar"].to_string(index=False))
    for problem in result["problems"]:
        print(f"  unreadable: {problem['path']}: {problem['reason']}")
    for refused in result["refused"]:
        print(f"  refused: {refused['path']}: {refused['reason']}")
    print(f"Results: {result['folder']}")
    print(report.DISCLAIMER)
    return command.EXIT_FAILED if result["problems"] or result["refused"] else command.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
