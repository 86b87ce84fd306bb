"""The sections of a run's model card (Mitchell et al., FAT* 2019). Each function computes what its
section reports from the run (``cxr_utils.model_card_run`` reads it) and renders the section's
template, ``cxr_utils/templates/card_<section>.md.j2``, which holds the words. See
``cxr_utils.model_card``.
"""

from __future__ import annotations

import re

import pandas as pd

from cxr_utils import config, data, evaluation, extended_set, external, image_checks, prose, shortcut_run, summaries
from cxr_utils.config import PROTOCOL
from cxr_utils.model_card_run import (
    CardRun, builder_defaults, class_counts, confusion_table, mcnemar_table, metric_row, metrics_table, number_or_na,
    optional_csv, shown_options, shown_weights, table_markdown,
)
from cxr_utils.claims import PAPER_TEST_IMAGES, SIGNIFICANCE
from cxr_utils.report import DISCLAIMER

# The machine's fields the card lists, in this order, after the package versions.
MACHINE_FIELDS = ("keras_backend", "accelerator", "cpu", "cpu_count")


def _weights_label(run: CardRun) -> str | None:
    """How the ResNet50 backbones started, in words; None when the run did not record one setting."""
    return None if run.weights in ("unrecorded", "mixed") else config.weights_label(run.weights)


def _models_table(run: CardRun) -> str:
    """One row per model: its builder, the options the run set beside the builder's defaults, its
    size, backbone and kept epoch."""
    rows = []
    for model_id, entry in run.models.items():
        spec, record, metrics_json = entry["spec"], entry["record"], entry["metrics"]
        options = run.model_setting(model_id, "model_options", default={}) or {}
        if not spec.has_backbone:  # the builder drops backbone options (models.build_model)
            options = {k: v for k, v in options.items() if k not in config.BACKBONE_OPTIONS}
        epochs = run.model_setting(model_id, "training", "epochs")
        parameters = run.model_setting(model_id, "parameters")
        rows.append({
            "model": f"{spec.paper_name} (`{spec.id}`)",
            "builder": f"`{spec.builder if isinstance(spec.builder, str) else spec.builder.__name__}`",
            "options the run set": shown_options(options),
            "builder defaults": ", ".join(f"{k}={v}" for k, v in builder_defaults(spec).items() if k not in options)
            or "n/a",
            "parameters": f"{parameters:,}" if parameters is not None else "not recorded",
            "backbone": ("ResNet50, " + ("frozen" if run.model_setting(model_id, "fast_path") else "trained"))
            if spec.has_backbone else "none",
            "kept epoch": f"{metrics_json.get('best_epoch', '?')} of {epochs if epochs is not None else '?'}",
            "trained (UTC)": record.get("created_utc", "not recorded"),
        })
    return table_markdown(pd.DataFrame(rows))


def model_details(run: CardRun) -> str:
    first = next(iter(run.models))
    images = run.model_setting(first, "images", default={}) or {}
    hardware, weights_label = run.first_recorded("hardware", {}), _weights_label(run)
    return prose.render(
        "card_model_details.md.j2", models_table=_models_table(run), weights_label=weights_label,
        weights_shown=run.weights if weights_label is None else shown_weights(run.weights),
        profile=run.settings.get("profile", run.record.get("profile", "not recorded")), n_per_class=run.n_per_class,
        images_per_split=[images.get(split, "?") for split in data.SPLITS] if images else None,
        image_size=run.image_size, training=run.training, seed=run.seed,
        mixed_precision=run.model_setting(first, "mixed_precision"), paper=PROTOCOL,
        versions=run.first_recorded("versions", {}),
        hardware={name: hardware[name] for name in MACHINE_FIELDS if name in hardware},
        commit=run.first_recorded("git_commit", None), recorded=run.record.get("created_utc"),
    )


def intended_use(run: CardRun) -> str:
    return prose.render("card_intended_use.md.j2", disclaimer=DISCLAIMER)


def factors(run: CardRun) -> str:
    described = run.manifest is not None and {"class", "width", "height", "mode"} <= set(run.manifest.columns)
    return prose.render("card_factors.md.j2", image_size=run.image_size,
                        dataset_statement=summaries.dataset_statement(run.manifest) if described else None)


def metrics_section(run: CardRun) -> str:
    methods = sorted(set(run.test["method"].dropna())) if "method" in run.test else []
    return prose.render("card_metrics.md.j2", significance=SIGNIFICANCE, interval_methods=methods)


def _extended_set_counts(run: CardRun) -> dict | None:
    """The extended test set as the card describes it: images scored and per class, and how many
    of the images outside the sample were eligible, excluded as copies, and subsampled."""
    if not run.extended:
        return None
    scored = int(run.extended["metrics"]["n"].max())
    described = {"scored": scored, "classes": class_counts(run.extended["confusions"]),
                 "eligible": None, "excluded": None, "subset_size": None}
    if run.manifest is not None and run.split is not None and "duplicate_group" in run.manifest:
        eligible = extended_set.extended_test_set(run.manifest, run.split)
        size = run.settings.get("extended_test_size")
        described.update(eligible=len(eligible), excluded=eligible.attrs["excluded_as_duplicates"],
                         subset_size=size if size is not None and len(eligible) > scored else None)
    return described


def evaluation_data(run: CardRun) -> str:
    split_test = None
    if run.split is not None:
        test = run.split[run.split["split"] == "test"]
        counts = test["class"].value_counts()
        split_test = {"images": len(test), "covid": counts.get("COVID", 0), "normal": counts.get("Normal", 0)}
    return prose.render("card_evaluation_data.md.j2", split_test=split_test, paper_test_images=PAPER_TEST_IMAGES,
                        extended=_extended_set_counts(run), size_rule=image_checks.RULE,
                        external={name: evaluated["record"] for name, evaluated in run.external.items()})


def training_data(run: CardRun) -> str:
    database_copy = sample = duplicates = split_leak = groups_in_sample = groups_across_splits = None
    if run.manifest is not None:
        counts = run.manifest["class"].value_counts()
        database_copy = {"images": len(run.manifest), "covid": counts.get("COVID", 0),
                         "normal": counts.get("Normal", 0)}
    if run.split is not None:
        sample = {"n_per_class": run.n_per_class, "seed": run.sample_settings.get("seed", run.seed),
                  "table": data.split_summary(run.split).to_markdown()}
    if run.duplicates is not None:
        duplicates = run.duplicates
        if run.split is not None and "duplicate_group" in run.split:
            try:
                leak = data.leakage_report(run.split)
                groups_in_sample, groups_across_splits = int(leak.iloc[0]), int(leak.iloc[1])
            except data.DatasetError as error:
                split_leak = str(error)
    return prose.render(
        "card_training_data.md.j2", kaggle_url=data.KAGGLE_URL, phash_bits=data.PHASH_BITS,
        database_copy=database_copy, sample=sample, duplicates=duplicates, split_leak=split_leak,
        groups_in_sample=groups_in_sample, groups_across_splits=groups_across_splits,
    )


def _test_set_tables(evaluated: dict, names: list[str]) -> dict:
    """A test set's metrics, confusion counts and McNemar's tests, as Markdown tables."""
    return {"metrics": metrics_table(evaluated["metrics"], names), "confusions": confusion_table(evaluated["confusions"]),
            "mcnemar": mcnemar_table(evaluated["mcnemar"])}


def quantitative(run: CardRun) -> str:
    names = list(run.names.values())
    extended = None
    if run.extended:
        extended = {**_test_set_tables(run.extended, names), "has_probability": run.extended["has_probability"]}
    shortcut_tables = {}
    for relative in (shortcut_run.BASELINES_CSV, shortcut_run.BLANKED_CSV, shortcut_run.GRADCAM_CSV):
        table = optional_csv(run.dir / relative)
        if table is not None:
            shortcut_tables[relative] = table_markdown(table.round(4))
    # Chapter 8's headings as bold lines: a heading inside a folded block would stand in the page's contents.
    shortcut_summary = (re.sub(r"^#+ (.+)$", r"**\1**", shortcut_run.summary_markdown(run.dir), flags=re.MULTILINE)
                        if shortcut_tables else None)
    return prose.render(
        "card_quantitative_analyses.md.j2",
        test_metrics=None if run.test.empty else metrics_table(run.test, names),
        test_sources=list(dict.fromkeys(run.test["source"].dropna())) if not run.test.empty else [],
        computed=bool(run.computed), seed=run.seed,
        test_confusions=confusion_table(run.test_confusions) if run.test_confusions else None,
        test_mcnemar=mcnemar_table(run.test_mcnemar),
        extended=extended, extended_dir=evaluation.EXTENDED_DIR,
        no_external=not run.external, external_dir=external.EXTERNAL_DIR,
        external=[{"name": name, **_test_set_tables(evaluated, names)} for name, evaluated in run.external.items()
                  if evaluated.get("metrics") is not None],
        shortcut_tables=shortcut_tables, shortcut_summary=shortcut_summary, shortcuts_dir=shortcut_run.SHORTCUTS_DIR,
    )


def ethics(run: CardRun) -> str:
    return prose.render("card_ethical_considerations.md.j2",
                        label_conflicts=run.duplicates["cross_class_groups"] if run.duplicates is not None else 0)


def _at_chance(long: pd.DataFrame, metric: str) -> list[str]:
    """The models whose 95% interval of ``metric`` includes 0.5."""
    rows = long[long["metric"] == metric]
    return [row["model"] for _, row in rows.iterrows() if not pd.isna(row["low"]) and row["low"] <= 0.5 <= row["high"]]


def _accuracy_elsewhere(run: CardRun) -> list[dict]:
    """Each model's accuracy on the split's test set beside that on the extended set and each
    external folder, for the sets that have any."""
    if run.test.empty:
        return []
    comparisons = []
    for external_name, evaluated in [(None, run.extended), *run.external.items()]:
        if not evaluated or evaluated.get("metrics") is None:
            continue
        accuracies = []
        for name in run.names.values():
            here, there = metric_row(run.test, name, "accuracy"), metric_row(evaluated["metrics"], name, "accuracy")
            if here is not None and there is not None:
                accuracies.append((name, number_or_na(here["value"]), number_or_na(there["value"])))
        if accuracies:
            comparisons.append({"external": external_name, "accuracies": accuracies})
    return comparisons


def caveats(run: CardRun) -> str:
    test, epochs, n_per_class = run.test, run.training.get("epochs"), run.n_per_class
    test_images = widest_interval = None
    if not test.empty:
        accuracy = test[test["metric"] == "accuracy"]
        n = int(accuracy["n"].max()) if len(accuracy) and not pd.isna(accuracy["n"].max()) else None
        widths = (accuracy["high"] - accuracy["low"]).dropna()
        if n is not None and len(widths):
            test_images, widest_interval = n, widths.max()
    mcnemar = run.test_mcnemar if run.test_mcnemar is not None and not run.test_mcnemar.empty else None
    return prose.render(
        "card_caveats.md.j2", paper=PROTOCOL, paper_test_images=PAPER_TEST_IMAGES, significance=SIGNIFICANCE,
        from_scratch=run.weights is None, weights_label=_weights_label(run),
        other_image_size=run.image_size if run.image_size not in (None, PROTOCOL.image_size) else None,
        reduced_protocol=(epochs is not None and epochs != PROTOCOL.epochs)
        or (n_per_class is not None and n_per_class != PROTOCOL.n_per_class),
        n_per_class=n_per_class, epochs=epochs, test_images=test_images, widest_interval=widest_interval,
        accuracy_at_chance=[] if test.empty else _at_chance(test, "accuracy"),
        auc_at_chance=[] if test.empty else _at_chance(test, "auc"),
        significant_pairs=[] if mcnemar is None else list(mcnemar[mcnemar["p_value"] < SIGNIFICANCE].itertuples()),
        smallest_p=None if mcnemar is None else mcnemar["p_value"].min(),
        accuracy_elsewhere=_accuracy_elsewhere(run),
    )
