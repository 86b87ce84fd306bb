"""The studies beside the notebook series, published into the book (a page each): the seed study's
summary (test metrics, training and verdicts over the seeds) and the paper's protocol beside this
project's BatchNorm remedy, epoch by epoch, on the same split and seed (book/remedy.md); and the seed
study at a glance on the book's first page.

    python -m cxr_utils.study publish --seeds results/study/seeds --remedy results/study/remedy

``--remedy`` names a seed study run with ``-p recompute_batchnorm_images=N``; each of its seeds
that the seed study also holds is set beside it (``cxr_utils.remedy``). The published copy
(``book/studies/``) keeps the numbers behind the pages (histories, predictions, metrics,
verdicts, the split), never the weights, the dataset listing or a folder of the machine that ran
(``cxr_utils.portable``); the pages are written from that copy, so ``render_pages`` can check them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from cxr_utils import batchnorm_check, config, evaluation, paper, plots, prose, remedy, summaries
from cxr_utils.atomic import replace_folder
from cxr_utils.claims import NOT_PAPER_SETTING, OUTCOMES
from cxr_utils.paths import BOOK_STUDIES_DIR
from cxr_utils.portable import (
    dataset_relative_paths, machine_folders, machine_paths, make_portable, portable_record,
)
from cxr_utils.evaluation import model_complete
from cxr_utils.report import NEAR_CHANCE, duration_text
from cxr_utils.study.common import ADOPTED, SEED_PREFIX, STUDY_RECORD, StudyError, seed_dir
from cxr_utils.study.seeds import study_kind
from cxr_utils.study.summary import plot_seed_curves, summary_markdown, summary_tables, write_summary_tables

STUDIES = ("seeds", "remedy")  # the published folders, as the report's includes name them
PAGES = {"seeds": "seeds.md", "remedy": "remedy.md"}  # included by book/seeds.md and book/remedy.md
GLANCE_PAGE = "glance.md"  # included by book/intro.md, under the committed run's results at a glance
FIGURES_DIR = "figures"
# The pages are included by pages of book/ (book/seeds.md, book/remedy.md), each under the page's title,
# so their figures are named from book/ (studies/figures/...) and their headings start at level 2.
INCLUDED_AS = BOOK_STUDIES_DIR.name
# Left out of the published copy: weights, logs and pages written again from the numbers, the
# dataset listing (the same for every seed) and sample.csv (split.csv holds every column of it).
LEFT_OUT = ("*.keras", "*.md", ".*", "__pycache__", "*.settings.json", "manifest.csv", "sample.csv")


def _record(study_dir: Path) -> dict:
    path = Path(study_dir) / STUDY_RECORD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{path} not found: give the --out folder of `python -m cxr_utils.study seeds`") from None
    except ValueError:
        raise StudyError(f"{path} is not readable JSON: run the study command again to rewrite it") from None


def _copy_study(study_dir: Path, target: Path) -> dict[str, str]:
    """Copy a study portable into ``target``; returns the machine's folders it replaced
    (``portable.machine_folders``), for the check of the whole published copy."""
    record = _record(study_dir)
    left_out = shutil.ignore_patterns(*LEFT_OUT)

    def ignore(folder, names):
        # A seed that has not finished a model yet holds only its sample and split: nothing to show.
        started = [] if Path(folder) != study_dir else [
            name for name in names if name.startswith(SEED_PREFIX)
            and not any(model_complete(study_dir / name / model_id) for model_id in config.REGISTRY)]
        return set(left_out(folder, names)) | set(started)

    shutil.copytree(study_dir, target, ignore=ignore)
    dataset = None  # without the study's dataset listing, its paths are taken as they are
    if (study_dir / "manifest.csv").is_file():
        shutil.copy2(study_dir / "manifest.csv", target / "manifest.csv")  # anchors the image paths, then goes
        dataset = dataset_relative_paths(target)
        (target / "manifest.csv").unlink()
    folders = machine_folders({"settings": {"data_dir": dataset, "study_dir": str(study_dir.resolve())}})
    record = complete_records(target, record)
    # study.json, with placeholders for the folders its commands name
    (target / STUDY_RECORD).write_text(json.dumps(portable_record(record, folders), indent=2) + "\n")
    make_portable(target, folders)
    # The study folder's summary was written when its command last ended, perhaps before a seed now
    # published finished: the published one is written again from the seeds it holds.
    write_summary_tables(target)
    return folders


# Said in every record publishing completes: what it added, and why that is what the run used.
BACKFILL_NOTE = ("added when published, from the record's own settings and config.CHOICES: the code of every "
                 "commit since 3aa8783 (2026-11-29) trains a ResNet50 from scratch with BatchNorm momentum 0.9, "
                 "restores the best epoch and bootstraps with 2000 resamples; claim 3's per-image losses of "
                 "such a run used the statistics the kept weights held (fit_predictions_batchnorm), not statistics "
                 "recomputed for them (fit_batchnorm_images: null)")


def complete_records(target: Path, record: dict) -> dict:
    """A study made before its records held every protocol choice, completed in the published copy:
    study.json's ``study`` ("seeds" or "remedy", ``seeds.study_kind``) and ``protocol``
    (``config.protocol_record``), and each model's run.json ``protocol`` and ``batchnorm_momentum``;
    every key added is named under ``recorded_at_publishing`` with ``BACKFILL_NOTE``. Returns the
    study record (the model records are rewritten in ``target``); a complete record is unchanged."""
    from cxr_utils.comparison import fit_batchnorm  # imports Keras: only for a record to complete

    settings = record["settings"]
    added = {}
    if settings.get("study") != study_kind(settings):
        added["study"] = settings["study"] = study_kind(settings)
    if "protocol" not in settings:
        added["protocol"] = settings["protocol"] = config.protocol_record(
            settings.get("weights"), settings.get("image_size", config.PROTOCOL.image_size), None,
            settings.get("recompute_batchnorm_images", 0), settings.get("mixed_precision", "auto"))
        settings["protocol"]["fit_batchnorm_images"] = None
    if added:
        record = {**record, "settings": settings,
                  "recorded_at_publishing": {"keys": sorted(added), "note": BACKFILL_NOTE}}
    for path in sorted(target.glob(f"{SEED_PREFIX}*/*/run.json")):
        model_record = json.loads(path.read_text())
        model_settings = model_record.get("settings", {})
        if "protocol" in model_settings or model_settings.get("model") not in config.REGISTRY:
            continue
        weights = model_settings.get("model_options", {}).get("weights", config.PROTOCOL.weights)
        training = model_settings.get("training", {})
        model_settings["protocol"] = config.protocol_record(
            weights, model_settings.get("image_size", config.PROTOCOL.image_size), training.get("seed"),
            training.get("recompute_batchnorm_images", 0),
            model_settings.get("mixed_precision", training.get("mixed_precision", "auto")))
        model_settings["protocol"]["fit_batchnorm_images"] = None
        has_batchnorm = config.REGISTRY[model_settings["model"]].has_backbone
        model_settings["batchnorm_momentum"] = config.batchnorm_momentum(weights) if has_batchnorm else None
        model_settings["fit_predictions_batchnorm"] = fit_batchnorm(model_settings)
        model_record["recorded_at_publishing"] = {
            "keys": ["protocol", "batchnorm_momentum", "fit_predictions_batchnorm"], "note": BACKFILL_NOTE}
        path.write_text(json.dumps(model_record, indent=2) + "\n")
    return record


def remedy_pairs(studies_dir) -> dict[int, list[str]]:
    """Per seed of the remedy study (in its order), the models complete in both published studies;
    a seed with none is left out."""
    studies_dir = Path(studies_dir)
    seeds = _record(studies_dir / "remedy")["settings"]["seeds"]
    pairs = {seed: [model_id for model_id in config.REGISTRY
                    if all(model_complete(seed_dir(studies_dir / study, seed) / model_id) for study in STUDIES)]
             for seed in seeds}
    return {seed: model_ids for seed, model_ids in pairs.items() if model_ids}


def _shown_settings(record: dict) -> dict:
    """A study's settings as the remedy page states them (``study_remedy_page.md.j2`` words them)."""
    settings = record["settings"]
    return {"weights_label": config.weights_label(settings["weights"]),
            "sizes": config.PROTOCOL.split_sizes(settings["n_per_class"]),
            **{name: settings[name] for name in ("n_per_class", "epochs", "batch_size", "image_size", "dtype_policy")},
            "keras_backend": record["hardware"]["keras_backend"], "accelerator": record["hardware"]["accelerator"]}


def _wall_times(record: dict, seed: int) -> list[tuple[str, str]]:
    """(model, wall time in words) of each model the study's record timed for ``seed``."""
    runs = record.get("runs", {}).get(str(seed), {})
    return [(config.model_spec(model_id).paper_name, duration_text(runs[model_id]["wall_time_s"]))
            for model_id in config.REGISTRY if model_id in runs]


def _remedy_seed(studies_dir: Path, records: dict, seed: int, model_ids: list[str], figures: bool) -> dict:
    """What remedy.md shows of one seed: the wall times, the comparison table and its reading, the
    models not compared, and per model with BatchNorm layers recomputed its paper-protocol run's
    summary and the two figures (drawn unless ``figures`` is False)."""
    import matplotlib.pyplot as plt

    paper_dir, remedy_dir = (seed_dir(studies_dir / study, seed) for study in STUDIES)
    table = remedy.remedy_table(paper_dir, remedy_dir, model_ids)
    recomputed = []
    for row in table[(table.protocol == "remedy") & (table.batchnorm_layers_recomputed > 0)].itertuples():
        curves = f"{FIGURES_DIR}/seed-{seed}_{row.model_id}_paper_protocol.png"
        side_by_side = f"{FIGURES_DIR}/seed-{seed}_{row.model_id}_remedy.png"
        if figures:
            history = evaluation.read_history(paper_dir / row.model_id, remedy.CURVE_COLUMNS)
            plt.close(plots.plot_training_curves(history, row.model, path=studies_dir / curves))
            plt.close(remedy.plot_remedy_curves(paper_dir, remedy_dir, row.model_id, path=studies_dir / side_by_side))
        recomputed.append({
            "name": row.model, "id": row.model_id, "curves": curves, "side_by_side": side_by_side,
            "training_summary": summaries.training_summary(paper_dir, row.model_id, name_the_hypothesis=False).rstrip(),
        })
    return {"seed": seed, "wall_times": {study: _wall_times(records[study], seed) for study in STUDIES},
            "adopted": str(seed) in records["seeds"].get(ADOPTED, {}),
            # Models whose paper-protocol run also ran the chapters' paired check: their times hold it.
            "checked_twice": [config.model_spec(model_id).paper_name for model_id in model_ids
                              if batchnorm_check.has_check(paper_dir, model_id)],
            "table": remedy.remedy_table_markdown(table), "reading": remedy.remedy_markdown(table),
            "missing": [spec.paper_name for model_id, spec in config.REGISTRY.items() if model_id not in model_ids],
            "recomputed": recomputed}


def remedy_page(studies_dir, figures: bool = True) -> str:
    """remedy.md: the settings, then for each seed of both studies (a second-level heading) the
    comparison table of the models complete in both (the others named) and its reading
    (``remedy.remedy_markdown``); then, per model with BatchNorm layers recomputed, what its
    paper-protocol run shows epoch by epoch (``summaries.training_summary``) and two figures: that
    run's curves (training mode, training images in inference mode, validation) and the two
    protocols' validation and inference-mode accuracy side by side. ``figures=False`` writes the
    text only (the figures are named, not drawn). The words are in
    ``cxr_utils/templates/study_remedy_page.md.j2``."""
    studies_dir = Path(studies_dir)
    records = {study: _record(studies_dir / study) for study in STUDIES}
    pairs = remedy_pairs(studies_dir)
    return prose.render(
        "study_remedy_page.md.j2", included_as=INCLUDED_AS,
        settings={study: _shown_settings(records[study]) for study in STUDIES} if pairs else None,
        option=records["remedy"]["settings"][remedy.OPTION] if pairs else None,
        seeds=[_remedy_seed(studies_dir, records, seed, model_ids, figures) for seed, model_ids in pairs.items()],
    )


SEED_CURVES_FIGURE = f"{FIGURES_DIR}/seeds_curves.png"


def seeds_page(studies_dir, figures: bool = True, tables: dict | None = None) -> str:
    """seeds.md: the seed study's summary over its evaluated seeds (``summary.summary_tables`` on
    the published copy), its title a second-level heading, below the including page's title, with every
    evaluated seed's validation and inference-mode curves in one figure (``summary.plot_seed_curves``;
    ``figures=False`` names it without drawing it). ``tables``: ``summary_tables`` of the published
    seeds when the caller has them already."""
    import matplotlib.pyplot as plt

    studies_dir = Path(studies_dir)
    result = tables or summary_tables(studies_dir / "seeds")
    figure = ""
    if len(result["stability"]):
        if figures:
            plt.close(plot_seed_curves(result["folders"], path=studies_dir / SEED_CURVES_FIGURE))
        figure = prose.render("study_seeds_figure.md.j2", included_as=INCLUDED_AS, figure=SEED_CURVES_FIGURE,
                              seeds=result["seeds"])
    return summary_markdown(result["metrics"], result["verdicts"], result["seeds"], result["record"],
                            result["left_out"], level=2, stability=result["stability"], figure=figure)


def glance_page(studies_dir, tables: dict | None = None) -> str:
    """glance.md: the seed study in a sentence and a table for the book's first page: its settings
    (saying when they are not the paper's ImageNet setting), each model's test accuracy over the
    evaluated seeds (mean and range) beside the paper's, at the kept epoch and, where every seed's
    record holds it, at the last epoch, and in how many seeds each model's validation accuracy sat
    near chance in some epoch; then, outside the paper's setting, what no seed could test.
    ``tables`` as for ``seeds_page``. The words are in ``cxr_utils/templates/study_glance.md.j2``."""
    result = tables or summary_tables(Path(studies_dir) / "seeds")
    settings = result["record"]["settings"]
    # The epoch whose weights the test scored: the best validation epoch's (restore_best, the
    # project's default) or, in a study that kept the last weights, the last epoch's.
    restored = settings.get("protocol", {}).get("restore_best", config.CHOICES.restore_best)
    kept = "kept epoch" if restored else "last epoch"
    accuracy = result["metrics"].set_index(["model", "metric"]).xs("accuracy", level="metric")
    stability = result["stability"]
    # The last epoch's weights are tested beside the kept ones (book/remedy.md); older records lack them.
    with_last = bool(restored and len(stability) and stability["test_last_epoch_accuracy"].notna().all())
    rows = []
    for model, paper_accuracy in paper.table6()["accuracy"].items():
        if model not in accuracy.index:
            continue
        row = accuracy.loc[model]
        runs = stability[stability["model"] == model] if len(stability) else stability
        shown = {"model": model, "the paper's accuracy": f"{paper_accuracy:.2f}",
                 f"{kept}: mean (range)": f"{row['mean']:.2f} ({row['min']:.2f}-{row['max']:.2f})"}
        if with_last:
            last = runs["test_last_epoch_accuracy"]
            shown["last epoch: mean (range)"] = f"{last.mean():.2f} ({last.min():.2f}-{last.max():.2f})"
        shown["seeds with validation near chance in some epoch"] = (
            f"{int((runs['epochs_near_chance'] > 0).sum())} of {len(runs)}" if len(runs) else "n/a")
        rows.append(shown)
    return prose.render(
        "study_glance.md.j2", seeds=result["seeds"], settings=settings,
        weights_label=config.weights_label(settings["weights"]), paper_setting=config.is_paper_setting(settings["weights"]),
        test_n=int(stability["test_n"].max()) if len(stability) else None, with_last=with_last, restored=restored,
        near_chance=NEAR_CHANCE, accuracy_table=remedy.figures_markdown(pd.DataFrame(rows), text_columns=1),
        verdicts_table=_verdicts_over_seeds(result["verdicts"], len(result["seeds"])),
    )


def _verdicts_over_seeds(verdicts: pd.DataFrame, n_seeds: int) -> str:
    """Each claim's outcomes over the seeds in one line of a table: how many seeds gave each
    verdict and, for seeds outside the paper's setting, what their numbers alone indicated."""
    rows = []
    for values in verdicts.to_dict(orient="records"):
        given = [f"{outcome} in {int(values[outcome])} of {n_seeds}" for outcome in OUTCOMES if values.get(outcome)]
        indicated = [f"{outcome} {int(values[f'indicated_{outcome}'])}" for outcome in OUTCOMES
                     if outcome != NOT_PAPER_SETTING and values.get(f"indicated_{outcome}")]
        text = ", ".join(given) + (f" (their numbers alone: {', '.join(indicated)})" if indicated else "")
        rows.append({"claim": f"**{values['claim']}** {values['text']}", f"verdicts over the {n_seeds} seeds": text})
    return pd.DataFrame(rows).to_markdown(index=False)


def render_pages(studies_dir, figures: bool = True) -> dict[str, str]:
    """Every page of ``PAGES`` and ``GLANCE_PAGE``, written from the published numbers in ``studies_dir``."""
    tables = summary_tables(Path(studies_dir) / "seeds")
    return {PAGES["seeds"]: seeds_page(studies_dir, figures, tables),
            PAGES["remedy"]: remedy_page(studies_dir, figures), GLANCE_PAGE: glance_page(studies_dir, tables)}


def drop_left_out(study_dir) -> None:
    """Remove from a published study what its copy leaves out (``LEFT_OUT``), e.g. the summary.md and
    report.md that ``study adopt`` writes as it does in a training study: the pages are written
    from the numbers instead."""
    for pattern in LEFT_OUT:
        for path in sorted(Path(study_dir).rglob(pattern)):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def write_pages(studies_dir) -> None:
    """Write the pages of the studies published in ``studies_dir`` again from their numbers (after
    ``study adopt`` changed a seed)."""
    for name, text in render_pages(studies_dir).items():
        (Path(studies_dir) / name).write_text(text)


def publish_studies(seeds_dir, remedy_dir, book_dir=BOOK_STUDIES_DIR, log=print) -> Path:
    """Copy both studies portable into ``book_dir`` and write their pages; the earlier copy stays
    until the new one is complete. A seed without a finished model (a study still running) is left
    out. StudyError when a folder is not a study."""
    book_dir = Path(book_dir)
    staging = book_dir.with_name(book_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        folders = {}
        for study, folder in zip(STUDIES, (seeds_dir, remedy_dir)):
            folder = Path(folder)
            if not any(folder.glob(f"{SEED_PREFIX}*")):
                raise StudyError(f"{folder} holds no {SEED_PREFIX}N folder: give the --out folder of a seed study")
            folders.update(_copy_study(folder, staging / study))
        (staging / FIGURES_DIR).mkdir()
        for name, text in render_pages(staging).items():
            (staging / name).write_text(text)
        left = machine_paths(staging, folders)
        if left:
            raise StudyError(f"{len(left)} machine path(s) left in the published copy, e.g. " + "; ".join(left[:3]))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the published copy stays as it was
        raise
    log(f"published {', '.join(STUDIES)} into {book_dir}")
    return replace_folder(staging, book_dir)
