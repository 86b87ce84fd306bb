"""The sections of a run's model card (Mitchell et al., FAT* 2019), each written from the run's
files as ``cxr_utils.model_card_run`` reads them. See ``cxr_utils.model_card``.
"""

from __future__ import annotations

import re

import pandas as pd

from cxr_utils import config, data, evaluation, extended_set, external, image_checks, shortcut_run, summaries
from cxr_utils.config import PROTOCOL
from cxr_utils.model_card_run import (
    DATABASE, MITCHELL, PAPER, PITFALLS, SOURCES, CardRun, builder_defaults, class_counts, confusion_table, folded,
    mcnemar_text, metric_row, metrics_table, number_or_na, optional_csv, shown_options, shown_weights,
    table_markdown,
)
from cxr_utils.report import DISCLAIMER, PAPER_TEST_IMAGES, SIGNIFICANCE, counted


# --- the sections ----------------------------------------------------------------------------

def model_details(run: CardRun) -> list[str]:
    versions = run.record.get("versions") or next(
        (e["record"].get("versions") for e in run.models.values() if e["record"].get("versions")), {})
    hardware = run.record.get("hardware") or next(
        (e["record"].get("hardware") for e in run.models.values() if e["record"].get("hardware")), {})
    commit = run.record.get("git_commit") or next(
        (e["record"].get("git_commit") for e in run.models.values() if e["record"].get("git_commit")), None)
    rows = []
    for model_id, entry in run.models.items():
        spec, record, metrics_json = entry["spec"], entry["record"], entry["metrics"]
        defaults = builder_defaults(spec)
        options = run.model_setting(model_id, "model_options", default={}) or {}
        if not spec.has_backbone:  # the builder drops backbone options (models.build_model)
            options = {k: v for k, v in options.items() if k not in config.BACKBONE_OPTIONS}
        epochs = run.model_setting(model_id, "training", "epochs")
        parameters = run.model_setting(model_id, "parameters")
        rows.append({
            "model": f"{spec.paper_name} (`{spec.id}`)",
            "builder": f"`{spec.builder if isinstance(spec.builder, str) else spec.builder.__name__}`",
            "options the run set": shown_options(options),
            "builder defaults": ", ".join(f"{k}={v}" for k, v in defaults.items() if k not in options) or "n/a",
            "parameters": f"{parameters:,}" if parameters is not None else "not recorded",
            "backbone": ("ResNet50, " + ("frozen" if run.model_setting(model_id, "fast_path") else "trained"))
            if spec.has_backbone else "none",
            "kept epoch": f"{metrics_json.get('best_epoch', '?')} of {epochs if epochs is not None else '?'}",
            "trained (UTC)": record.get("created_utc", "not recorded"),
        })
    lines = [
        "## Model details", "",
        f"Three binary classifiers of frontal chest X-rays, COVID-19 (label 1) against Normal (label 0), rebuilt in "
        f"Keras 3 by this replication project (cxr-replication) as described in the paper {PAPER}. Each ends in "
        "one sigmoid unit giving P(COVID); the decision is COVID when it reaches 0.5. Code: MIT licence.", "",
        table_markdown(pd.DataFrame(rows)), "",
        "*Builder defaults* are those of the code that wrote this card; the run recorded the options it set.", "",
    ]
    weights = run.weights
    if weights not in ("unrecorded", "mixed"):
        lines += [f"- **Weights of the ResNet50 backbone:** {config.weights_label(weights)} (`weights="
                  f"{shown_weights(weights)}`; the paper: ImageNet weights).", ""]
    else:
        lines += [f"- **Weights of the ResNet50 backbone:** {weights}.", ""]
    first = next(iter(run.models))
    training = run.model_setting(first, "training", default={}) or {}
    images = run.model_setting(first, "images", default={}) or {}
    protocol = [
        ("profile", run.settings.get("profile", run.record.get("profile", "not recorded"))),
        ("images per class in the sample", run.settings.get("n_per_class", run.sample_settings.get("n_per_class"))),
        ("train / val / test images", " / ".join(str(images.get(p, "?")) for p in data.SPLITS) if images else None),
        ("image size (px)", run.image_size),
        ("epochs", training.get("epochs")), ("batch size", training.get("batch_size")),
        ("optimiser", f"Adam, learning rate {training['learning_rate']}" if "learning_rate" in training else None),
        ("loss", "binary cross-entropy"),
        ("seed", run.seed),
        ("weights kept", "the epoch with the best validation accuracy (ties: lower validation loss)"
         if training.get("restore_best", True) else "the last epoch's"),
        ("mixed precision", run.model_setting(first, "mixed_precision")),
    ]
    lines += ["**Training protocol** (from the run records; the paper's where it sets one):", "",
              "| setting | this run | the paper |", "|---|---|---|"]
    paper_values = {"images per class in the sample": PROTOCOL.n_per_class, "image size (px)": PROTOCOL.image_size,
                    "epochs": PROTOCOL.epochs, "batch size": PROTOCOL.batch_size,
                    "optimiser": f"Adam, learning rate {PROTOCOL.learning_rate}",
                    "train / val / test images": " / ".join(map(str, PROTOCOL.split_sizes().values()))}
    for name, value in protocol:
        if value is not None:
            lines.append(f"| {name} | {value} | {paper_values.get(name, '')} |")
    machine = ["| | |", "|---|---|"]
    for name, version in versions.items():
        machine.append(f"| {name} | {version} |")
    for name in ("keras_backend", "accelerator", "cpu", "cpu_count"):
        if name in hardware:
            machine.append(f"| {name.replace('_', ' ')} | {hardware[name]} |")
    if commit:
        machine.append(f"| git commit | `{commit}` |")
    if run.record.get("created_utc"):
        machine.append(f"| run recorded (UTC) | {run.record['created_utc']} |")
    lines += ["", *folded("Versions and machine (the run record)", machine), f"Card format: {MITCHELL}.", ""]
    return lines


def intended_use(run: CardRun) -> list[str]:
    return [
        "## Intended use", "",
        f"> **Not a medical device.** {DISCLAIMER}", "",
        "- **Primary intended uses:** teaching (how a published classifier is rebuilt, trained, tested and "
        "questioned) and the replication of the paper's claims: every table of this run can be regenerated and "
        "compared with the paper's.",
        "- **Primary intended users:** students and researchers reading the paper or this replication.",
        "- **Out of scope:** diagnosis, triage, screening or any decision about a person; images from other "
        "sources than the run's database, unless evaluated first (`python -m cxr_utils.external`) and then only "
        "to study the models; any other finding than COVID-19 against Normal (the models never saw other "
        "diseases and will call them one or the other).", "",
    ]


def factors(run: CardRun) -> list[str]:
    lines = ["## Factors", "", f"- **Source of the images.** {SOURCES} A classifier can separate the classes by "
             "where an image comes from instead of by what the lungs show (a shortcut); the class label and the "
             "source are confounded in every split of this run."]
    if run.manifest is not None and {"class", "width", "height", "mode"} <= set(run.manifest.columns):
        lines.append(f"- **The run's copy of the database.** {summaries.dataset_statement(run.manifest)}")
    if run.image_size is not None:
        lines.append(f"- **Image size.** Every image is read as 8-bit grey, resized to {run.image_size}x"
                     f"{run.image_size} (bilinear), scaled to [0, 1] and repeated into three channels; whatever "
                     "detail is lost at that size is not available to the models.")
    lines += [
        "- **Not evaluated:** patient age, sex, projection (PA/AP), scanner and hospital. The database publishes "
        "none of them per image, so no result here is broken down by them.",
        "- **Evaluation factor used:** the class, and the data set: the split's test images, the extended set and "
        "any external folder (below).", "",
    ]
    return lines


def metrics_section(run: CardRun) -> list[str]:
    methods = sorted(set(run.test["method"].dropna())) if "method" in run.test else []
    lines = [
        "## Metrics", "",
        "- **Accuracy, precision, recall (sensitivity) and F1**, COVID positive, at the threshold 0.5: the "
        "paper's Table 6. Accuracy, precision and recall are proportions with Wilson score 95% intervals; F1 has a "
        "seeded, paired percentile bootstrap 95% interval over images.",
        "- **AUC** (ROC area: how well P(COVID) ranks COVID above Normal; 0.5 is chance) and **Brier score** (mean "
        "squared distance of P(COVID) from the label; 0 is perfect, 0.25 a constant 0.5), with bootstrap 95% "
        "intervals: what the probabilities say beyond the threshold.",
        f"- **McNemar's exact test** between two models on the same images: significant when p < {SIGNIFICANCE}.",
        "- **Why these:** the paper reports the four threshold metrics without intervals; with a test set of tens "
        "of images an interval is what tells a difference from chance.",
    ]
    if methods:
        lines.append("- **Interval methods in this run's files:** " + "; ".join(methods) + ".")
    return lines + [""]


def evaluation_data(run: CardRun) -> list[str]:
    lines = ["## Evaluation data", ""]
    if run.split is not None:
        test = run.split[run.split["split"] == "test"]
        counts = test["class"].value_counts()
        lines.append(f"- **The split's test set:** {len(test)} images ({counts.get('COVID', 0)} COVID, "
                     f"{counts.get('Normal', 0)} Normal) of the run's sample, never used in training or model "
                     f"selection; the paper's test set had {PAPER_TEST_IMAGES}.")
    if run.extended:
        counts = class_counts(run.extended["confusions"])
        n = int(run.extended["metrics"]["n"].max())
        text = (f"- **The extended test set:** {n} images"
                + (f" ({counts[0]} COVID, {counts[1]} Normal)" if counts else "")
                + " of the database that the run did not sample")
        if run.manifest is not None and run.split is not None and "duplicate_group" in run.manifest:
            eligible = extended_set.extended_test_set(run.manifest, run.split)
            excluded_count = eligible.attrs["excluded_as_duplicates"]
            text += (f": of the {len(eligible) + excluded_count} images outside the sample, "
                     f"{counted(excluded_count, 'copy', 'copies')} (duplicate group) of a training or validation "
                     f"image excluded, leaving {len(eligible)}")
            size = run.settings.get("extended_test_size")
            if size is not None and len(eligible) > n:
                text += f"; a seeded, class-balanced subset of {n} was scored (extended_test_size={size})"
        lines.append(text + ".")
    else:
        lines.append("- **The extended test set:** not evaluated in this run.")
    for name, evaluated in run.external.items():
        counts = evaluated["record"].get("counts", {})
        record = evaluated["record"]
        lines.append(
            f"- **External folder `{name}`** (`{record.get('source_name', name)}`, layout "
            f"{record.get('layout', '?')}): {counts.get('files', '?')} files, {counts.get('unreadable', '?')} "
            f"unreadable, {counts.get('excluded', '?')} excluded as copies of the run's training or validation "
            f"images ({counts.get('excluded_exact', '?')} byte-identical, {counts.get('excluded_near', '?')} within "
            f"{record.get('max_hamming', '?')} bits of perceptual hash), {counts.get('refused_size', 0)} refused by "
            f"size ({image_checks.RULE}); {counts.get('evaluated', '?')} evaluated "
            f"({counts.get('evaluated_COVID', '?')} COVID, {counts.get('evaluated_Normal', '?')} Normal), "
            f"{record.get('created_utc', '')}.")
    if not run.external:
        lines.append("- **External data:** none evaluated yet (`python -m cxr_utils.external DIR --run "
                     "RESULTS_DIR` adds a folder here).")
    return lines + [""]


def training_data(run: CardRun) -> list[str]:
    lines = ["## Training data", "", f"- **Source:** {DATABASE}. {SOURCES}"]
    if run.manifest is not None:
        counts = run.manifest["class"].value_counts()
        lines.append(f"- **The run's copy:** {len(run.manifest):,} images ({counts.get('COVID', 0):,} COVID, "
                     f"{counts.get('Normal', 0):,} Normal) indexed; each decoded in full once, its SHA-256 and a "
                     f"{data.PHASH_BITS}-bit perceptual hash recorded.")
    if run.split is not None:
        n_per_class = run.settings.get("n_per_class", run.sample_settings.get("n_per_class"))
        seed = run.sample_settings.get("seed", run.seed)
        lines += [f"- **The sample:** {n_per_class} images per class drawn at random (seed {seed}), split "
                  "stratified into training, validation and test:", "",
                  data.split_summary(run.split).to_markdown(), ""]
    if run.manifest is not None and "duplicate_group" in run.manifest:
        report = data.duplicate_report(run.manifest)
        text = (f"- **Duplicates:** in the run's copy, {counted(report['groups'], 'group')} of 2+ images are copies "
                "of each other "
                f"({report['exact_groups']} byte-identical, {report['near_groups']} near copies found by the "
                f"perceptual hash; {report['cross_class_groups']} span both classes).")
        if run.split is not None and "duplicate_group" in run.split:
            try:
                leak = data.leakage_report(run.split)
                text += (f" Each group is kept inside one split: of {counted(int(leak.iloc[0]), 'group')} of 2+ "
                         f"images in the sample, {int(leak.iloc[1])} lie in more than one split.")
            except data.DatasetError as error:
                text += f" **The split leaks:** {error}."
        lines.append(text + " The extended and external sets leave out copies of training and validation images.")
    lines.append("- **Preprocessing:** grey, resized, divided by 255, three identical channels; no augmentation.")
    return lines + [""]


def quantitative(run: CardRun) -> list[str]:
    names = list(run.names.values())
    lines = ["## Quantitative analyses", "", "### The split's test set", ""]
    if run.test.empty:
        lines += ["No test metrics recorded (notebooks/06_evaluation.ipynb has not run).", ""]
    else:
        sources = ", ".join(f"`{s}`" for s in dict.fromkeys(run.test["source"].dropna()))
        computed = ("" if not run.computed else f" (AUC and Brier score computed for this card from predictions.csv, "
                    f"seed {run.seed}, as chapter 6 computes them: the run did not record them)")
        lines += [f"95% intervals in brackets; from {sources}{computed}.", "", metrics_table(run.test, names), ""]
    confusions = {}
    for model_id, name in run.names.items():
        table = optional_csv(run.dir / evaluation.EVALUATION_DIR / f"confusion_{name}.csv")
        if table is not None:
            confusions[name] = table.set_index(table.columns[0])
    if confusions:
        lines += ["Confusion counts (COVID positive):", "", confusion_table(confusions), ""]
    lines += [mcnemar_text(run.test_mcnemar), ""]

    lines += ["### The extended test set", ""]
    if run.extended:
        note = "" if run.extended["has_probability"] else " (AUC and Brier score not recorded for this set)"
        lines += folded(f"Metrics, confusion counts and McNemar, from `{evaluation.EXTENDED_DIR}/`{note}",
                        [metrics_table(run.extended["metrics"], names), "", confusion_table(run.extended["confusions"]),
                         "", mcnemar_text(run.extended["mcnemar"])])
    else:
        lines += ["Not evaluated in this run.", ""]

    lines += ["### External data", ""]
    if not run.external:
        lines += ["None evaluated yet.", ""]
    for name, evaluated in run.external.items():
        if evaluated.get("metrics") is None:
            continue
        lines += [f"**`{name}`**, from `{external.EXTERNAL_DIR}/{name}/`:", "",
                  metrics_table(evaluated["metrics"], names), "", confusion_table(evaluated["confusions"]), "",
                  mcnemar_text(evaluated["mcnemar"]), ""]

    lines += ["### Shortcut analysis", ""]
    tables = [(relative, optional_csv(run.dir / relative)) for relative in
              (shortcut_run.BASELINES_CSV, shortcut_run.BLANKED_CSV, shortcut_run.GRADCAM_CSV)]
    tables = [(relative, table) for relative, table in tables if table is not None]
    if not tables:
        lines += [f"No shortcut analysis has been run for this run (notebooks/08_shortcuts.ipynb writes "
                  f"`{shortcut_run.SHORTCUTS_DIR}/`). Until one is, nothing here shows that the models respond to the "
                  "lungs rather than to where an image comes from.", ""]
    else:
        # Its headings as bold lines: a heading inside a folded block would stand in the page's contents.
        summary = re.sub(r"^#+ (.+)$", r"**\1**", shortcut_run.summary_markdown(run.dir), flags=re.MULTILINE)
        lines += folded("What the shortcut tests show (chapter 8's summary)", [summary])
    behind = []
    for relative, table in tables:
        behind += [f"`{relative}`:", "", table_markdown(table.round(4)), ""]
    if behind:
        lines += folded("The tables behind it: " + ", ".join(f"`{relative}`" for relative, _ in tables), behind)
    return lines


def ethics(run: CardRun) -> list[str]:
    lines = [
        "## Ethical considerations", "",
        "- **Data:** public, de-identified chest X-rays; no patient identifiers are published, so follow-up films of "
        "one patient cannot be linked and may fall into different splits (only copies of the same image are "
        "found, by hash).",
        "- **Risks:** a probability from these models could be mistaken for a diagnosis: a false Normal could "
        "delay care, a false COVID could lead to needless isolation or treatment. Models trained on this kind of "
        f"data have repeatedly been found unfit for clinical use ({PITFALLS}).",
        "- **Mitigations here:** the notice above on every output of `predict`, `external` and this card; "
        "intervals beside every number; copies of training images excluded from every test set; the shortcut "
        "question stated as open.",
    ]
    if run.manifest is not None and "duplicate_group" in run.manifest:
        cross = data.duplicate_report(run.manifest)["cross_class_groups"]
        if cross:
            lines.append(f"- **Label conflicts:** {cross} duplicate groups of the run's copy hold images of both "
                         "classes: the same radiograph labelled COVID and Normal.")
    return lines + [""]


def caveats(run: CardRun) -> list[str]:
    lines, names = ["## Caveats and recommendations", ""], list(run.names.values())
    weights = run.weights
    if weights is None:
        lines.append("- **Trained from scratch** (`weights=None`), not with the paper's ImageNet weights: this run "
                     "does not test the paper's claims in its setting; a ResNet50 trained from scratch on a few "
                     "hundred images usually does worse than a pretrained one.")
    elif weights not in ("unrecorded", "mixed"):
        lines.append(f"- **Backbone:** {config.weights_label(weights)}, frozen (feature extraction), the paper's "
                     "setting.")
    size = run.image_size
    if size is not None and size != PROTOCOL.image_size:
        lines.append(f"- **Image size {size} px**, not the paper's {PROTOCOL.image_size}: a reduced protocol.")
    first = next(iter(run.models))
    epochs = run.model_setting(first, "training", "epochs")
    n_per_class = run.settings.get("n_per_class", run.sample_settings.get("n_per_class"))
    reduced_epochs = epochs is not None and epochs != PROTOCOL.epochs
    if reduced_epochs or (n_per_class is not None and n_per_class != PROTOCOL.n_per_class):
        lines.append(f"- **Reduced protocol:** {n_per_class} images per class and {counted(epochs or 0, 'epoch')} "
                     "(the paper: "
                     f"{PROTOCOL.n_per_class} and {PROTOCOL.epochs}); its numbers show that the pipeline works, not "
                     "how good the models can be.")
    test = run.test
    if not test.empty:
        accuracy = test[test["metric"] == "accuracy"]
        n = int(accuracy["n"].max()) if len(accuracy) and not pd.isna(accuracy["n"].max()) else None
        widths = (accuracy["high"] - accuracy["low"]).dropna()
        if n is not None and len(widths):
            lines.append(f"- **Test set size:** {n} images (the paper: {PAPER_TEST_IMAGES}); the accuracy intervals "
                         f"are up to {widths.max():.3f} wide, so differences smaller than that are not evidence.")
        chance = [row["model"] for _, row in accuracy.iterrows()
                  if not pd.isna(row["low"]) and row["low"] <= 0.5 <= row["high"]]
        if chance:
            lines.append(f"- **Not distinguishable from chance on the test set:** {', '.join(chance)} (the 95% "
                         "interval of accuracy includes 0.5).")
        auc = test[test["metric"] == "auc"]
        ranking = [row["model"] for _, row in auc.iterrows()
                   if not pd.isna(row["low"]) and row["low"] <= 0.5 <= row["high"]]
        if ranking:
            lines.append(f"- **Ranking not distinguishable from chance:** {', '.join(ranking)} (the AUC interval "
                         "includes 0.5).")
    if run.test_mcnemar is not None and not run.test_mcnemar.empty:
        significant = run.test_mcnemar[run.test_mcnemar["p_value"] < SIGNIFICANCE]
        if significant.empty:
            lines.append(f"- **No model beats another significantly** on the test set (McNemar exact p ≥ "
                         f"{SIGNIFICANCE} for every pair, smallest p = {run.test_mcnemar['p_value'].min():.3g}).")
        else:
            pairs = "; ".join(f"{r.model_a} vs {r.model_b} (p = {r.p_value:.3g})" for r in significant.itertuples())
            lines.append(f"- **Significant differences on the test set:** {pairs}.")
    comparisons = [("the extended test set", run.extended)] + [(f"external folder `{k}`", v)
                                                                for k, v in run.external.items()]
    for label, evaluated in comparisons:
        if not evaluated or evaluated.get("metrics") is None or test.empty:
            continue
        parts = []
        for name in names:
            here, there = metric_row(test, name, "accuracy"), metric_row(evaluated["metrics"], name, "accuracy")
            if here is not None and there is not None:
                parts.append(f"{name} {number_or_na(here['value'])} → {number_or_na(there['value'])}")
        if parts:
            lines.append(f"- **Test set → {label}, accuracy:** " + "; ".join(parts) + ".")
    lines += [
        "- **The threshold 0.5 is not calibrated** for any population: the Brier score and the reliability "
        "diagram (figures/reliability.png, where chapter 6 drew it) show how far the probabilities are from "
        "frequencies.",
        "- **Recommendations:** evaluate on data from other hospitals before believing any number "
        "(`python -m cxr_utils.external`); run a shortcut analysis before claiming the models see disease; report "
        "intervals and paired tests with every comparison; never use these models on a patient.", "",
    ]
    return lines
