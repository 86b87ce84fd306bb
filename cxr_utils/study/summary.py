"""A study's summary over its seeds: metrics (mean, std, range) and verdict counts per claim.
See ``cxr_utils.study``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxr_utils import claims, config, evaluation, prose, report
from cxr_utils.atomic import atomic_write, read_json
from cxr_utils.evaluation import EVALUATION_DIR
from cxr_utils.claims import at_most
from cxr_utils.report import NEAR_CHANCE
from cxr_utils.study.common import ADOPTED, SEED_PREFIX, STUDY_RECORD, StudyError, evaluated, seed_folders

# The summary's metrics, in this order: Table 6's four (evaluation/metrics.csv), then AUC and
# Brier score (evaluation/probability_metrics.csv).
SUMMARY_METRICS = (*config.METRICS, "auc", "brier")
SUMMARY_FILES = ("summary_metrics.csv", "summary_verdicts.csv", "summary.md")


# -- the summary ----------------------------------------------------------------------------------


def _seed_tables(seeds: list[tuple[int, Path]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long tables over the seeds: (seed, model, metric, value) and (seed, claim, text, verdict, indicated)."""
    metric_parts, verdict_parts = [], []
    for seed, folder in seeds:
        evaluation_dir = folder / EVALUATION_DIR
        for name in ("metrics.csv", "probability_metrics.csv"):
            table = pd.read_csv(evaluation_dir / name, usecols=["model", "metric", "value"])
            metric_parts.append(table.assign(seed=seed))
        verdicts = pd.read_csv(evaluation_dir / "verdicts.csv", dtype={"claim": str})
        unknown = set(verdicts["verdict"]) - set(claims.OUTCOMES)
        if unknown:
            raise StudyError(f"{evaluation_dir / 'verdicts.csv'} holds verdicts that are not outcomes of "
                             f"claims.OUTCOMES ({', '.join(sorted(unknown))}): evaluate the seed again "
                             f"(delete {evaluation_dir} and rerun the study)")
        verdicts["indicated"] = [claims.indicated_verdict(verdict, reason)
                                 for verdict, reason in zip(verdicts["verdict"], verdicts["reason"])]
        verdict_parts.append(verdicts[["claim", "text", "verdict", "indicated"]].assign(seed=seed))
    metrics = pd.concat(metric_parts, ignore_index=True)
    metrics = metrics[metrics["metric"].isin(SUMMARY_METRICS)]
    return metrics[["seed", "model", "metric", "value"]], pd.concat(verdict_parts, ignore_index=True)


def metric_summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per model and metric, over the seeds: mean, std (sample, ddof 1), min, max, n_seeds; models
    in the paper's order, metrics in ``SUMMARY_METRICS``' order."""
    table = (per_seed.groupby(["model", "metric"])["value"]
             .agg(mean="mean", std="std", min="min", max="max", n_seeds="count").reset_index())
    names = list(config.paper_names().values())
    models = names + sorted(set(table["model"]) - set(names))
    table["model"] = pd.Categorical(table["model"], models, ordered=True)
    table["metric"] = pd.Categorical(table["metric"], SUMMARY_METRICS, ordered=True)
    table = table.sort_values(["model", "metric"]).reset_index(drop=True)
    table["model"], table["metric"] = table["model"].astype(str), table["metric"].astype(str)
    return table


def verdict_summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per claim: how many seeds give each outcome of ``claims.OUTCOMES``, n_seeds, and, for seeds
    outside the paper's setting, the outcome their numbers alone would indicate
    (``indicated_<outcome>``, ``claims.indicated_verdict``); claims in the verdicts' order."""
    claim_ids = list(dict.fromkeys(per_seed["claim"]))
    text = per_seed.drop_duplicates("claim").set_index("claim")["text"]
    counts = pd.crosstab(per_seed["claim"], per_seed["verdict"]).reindex(index=claim_ids, columns=list(claims.OUTCOMES),
                                                                         fill_value=0)
    direct = [o for o in claims.OUTCOMES if o != claims.NOT_PAPER_SETTING]
    indicated = pd.crosstab(per_seed["claim"], per_seed["indicated"]).reindex(index=claim_ids, columns=direct,
                                                                              fill_value=0)
    table = counts.copy()
    table.insert(0, "text", text.reindex(claim_ids))
    table["n_seeds"] = per_seed.groupby("claim")["seed"].nunique().reindex(claim_ids)
    for outcome in direct:
        table[f"indicated_{outcome}"] = indicated[outcome]
    table = table.rename_axis("claim").reset_index()
    table.columns.name = None
    return table


def stability_table(seeds: list[tuple[int, Path]]) -> pd.DataFrame:
    """Per model and seed that trained it (the registry's order, then the seeds'): how steady
    training was, ``remedy.run_figures``' columns (epochs near chance on validation, the validation
    accuracy's range, the lowest inference-mode accuracy on training images, the kept epoch, the
    test accuracy with its interval and the last epoch's) with seed, model and model_id in front.
    Empty when no seed folder holds a model's run (a summary of evaluation files alone)."""
    from cxr_utils import remedy  # imports matplotlib: only when a summary is written

    rows = [{"seed": seed, "model": spec.paper_name, "model_id": model_id,
             **remedy.run_figures(folder / model_id)}
            for model_id, spec in config.REGISTRY.items() for seed, folder in seeds
            if all((folder / model_id / name).is_file() for name in ("run.json", evaluation.HISTORY, "metrics.json"))]
    return pd.DataFrame(rows)


def stability_markdown(stability: pd.DataFrame) -> str:
    """``stability_table`` for a reader: per model, in how many seeds validation sat near chance in
    at least one epoch and the inference-mode check of the training images fell near chance, and
    how often the kept epoch was the last; then the table, one row per model and seed. The words
    are in ``cxr_utils/templates/study_seeds_stability.md.j2``."""
    from cxr_utils import remedy  # imports matplotlib: only when a summary is written

    def span(values) -> str:
        low, high = values.min(), values.max()
        return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}"

    models = []
    for model, rows in stability.groupby("model", sort=False):
        inference = rows["train_inference_accuracy_min"].dropna()
        models.append({
            "name": model, "seeds": len(rows), "seeds_near_chance": int((rows["epochs_near_chance"] > 0).sum()),
            "epochs_near_chance": int(rows["epochs_near_chance"].sum()), "epochs": int(rows["epochs"].sum()),
            "inference_seeds": len(inference), "inference_near_chance": int(at_most(inference, NEAR_CHANCE).sum()),
            "kept_last": int((rows["best_epoch"] == rows["epochs"]).sum()), "test_accuracy": span(rows["test_accuracy"]),
            "last_epoch_accuracy": span(rows["test_last_epoch_accuracy"])
            if rows["test_last_epoch_accuracy"].notna().all() else None,
        })
    shown = pd.DataFrame({"model": stability["model"], "seed": stability["seed"].astype(str),
                          **remedy.figure_columns(stability),
                          "last epoch's test accuracy": [f"{v:.2f}" for v in stability["test_last_epoch_accuracy"]]})
    return prose.render("study_seeds_stability.md.j2", models=models, near_chance=NEAR_CHANCE,
                        table=remedy.figures_markdown(shown, text_columns=1))


SEED_CURVES = (("val_accuracy", "validation accuracy"), ("train_inference_accuracy", "training images,\ninference mode"))


def plot_seed_curves(seeds: list[tuple[int, Path]], path=None):
    """Per model (columns) and seed (one line each, the same colour in every panel): validation
    accuracy (top row) and the training images' accuracy in inference mode (bottom row) per epoch,
    chance (0.5) and the near-chance bound dashed. Returns the Figure; saves it as PNG at ``path``
    when given (``cxr_utils.plots``). ValueError when no seed folder holds a model's history."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from cxr_utils.plots import MIN_POINTS, PAGE_WIDTH_IN, finish_figure, mark_chance  # matplotlib: only for a figure
    
    histories = {(seed, model_id): evaluation.read_history(folder / model_id)
                 for seed, folder in seeds for model_id in config.REGISTRY
                 if (folder / model_id / evaluation.HISTORY).is_file()}
    model_ids = [m for m in config.REGISTRY if any(key[1] == m for key in histories)]
    if not model_ids:
        raise ValueError("no seed folder holds a model's history.csv: nothing to plot")
    colours = {seed: f"C{i % 10}" for i, (seed, _) in enumerate(seeds)}
    figure, axes = plt.subplots(len(SEED_CURVES), len(model_ids), figsize=(PAGE_WIDTH_IN, 5.2),
                                layout="constrained", sharex=True, sharey=True, squeeze=False)
    for column, model_id in enumerate(model_ids):
        axes[0, column].set_title(config.model_spec(model_id).paper_name)
        for row, (name, label) in enumerate(SEED_CURVES):
            ax = axes[row, column]
            for (seed, trained), history in histories.items():
                if trained == model_id and name in history:
                    ax.plot(history["epoch"], history[name], color=colours[seed], linewidth=1.2, label=f"seed {seed}")
            mark_chance(ax)
            ax.set_ylim(0, 1.02)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if column == 0:
                ax.set_ylabel(label)
            if row == len(SEED_CURVES) - 1:
                ax.set_xlabel("epoch")
    handles = {}
    for ax in axes.flat:  # one legend entry per seed, whichever model it trained
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    seeds_first = sorted(handles, key=lambda label: (not label.startswith("seed"),))
    figure.legend([handles[label] for label in seeds_first], seeds_first, loc="outside lower center",
                  ncol=min(4, len(seeds_first)), fontsize=MIN_POINTS, frameon=False)
    return finish_figure(figure, path)


def _number(value: float, metric: str) -> str:
    if pd.isna(value):
        return "n/a"
    return f"{value:.3f}" if metric == "brier" else f"{value:.2f}"


def summary_markdown(metrics: pd.DataFrame, verdicts: pd.DataFrame, seeds: list[int], record: dict | None,
                     left_out: list[int] = (), level: int = 1, stability: pd.DataFrame | None = None,
                     figure: str = "") -> str:
    """summary.md: a sentence with the seeds, the profile and the weights, then both tables and,
    given a non-empty ``stability`` (``stability_table``), how steady training was per seed,
    followed by ``figure`` (Markdown showing ``plot_seed_curves``, as the page names it); its
    title a heading of ``level`` (1: ``#``), its sections one level below. The words are in
    ``cxr_utils/templates/study_seeds_summary.md.j2``."""
    settings = (record or {}).get("settings", {})
    shown_settings = None
    if settings:
        shown_settings = {"profile": str(settings.get("profile")), "weights_label": config.weights_label(
            settings.get("weights")), **{name: settings.get(name) for name in (
                "n_per_class", "epochs", "batch_size", "image_size", "dtype_policy")}}
    shown = pd.DataFrame({
        "model": metrics["model"], "metric": metrics["metric"],
        **{column: [_number(v, m) for v, m in zip(metrics[column], metrics["metric"])]
           for column in ("mean", "std", "min", "max")},
        "seeds": metrics["n_seeds"].astype(int),
    })
    outcomes = list(claims.OUTCOMES)
    indicated_table = None
    if verdicts[claims.NOT_PAPER_SETTING].sum():
        indicated = [c for c in verdicts.columns if c.startswith("indicated_")]
        indicated_table = (verdicts[["claim", *indicated, "n_seeds"]]
                           .rename(columns={**{c: c.removeprefix("indicated_") for c in indicated}, "n_seeds": "seeds"})
                           .to_markdown(index=False))
    has_stability = stability is not None and len(stability)
    return prose.render(
        "study_seeds_summary.md.j2", level=level, seeds=seeds, settings=shown_settings, study_record=STUDY_RECORD,
        adopted=sorted(int(seed) for seed in (record or {}).get(ADOPTED, {}) if int(seed) in seeds),
        left_out=left_out, metrics_table=shown.to_markdown(index=False, disable_numparse=True,
                                                           colalign=("left", "left", *["right"] * 5)),
        stability=stability_markdown(stability).rstrip() if has_stability else None,
        figure=figure.rstrip() if has_stability and figure else None,
        verdicts_table=verdicts[["claim", "text", *outcomes, "n_seeds"]].rename(columns={"n_seeds": "seeds"})
        .to_markdown(index=False),
        indicated_table=indicated_table, not_paper_setting=claims.NOT_PAPER_SETTING, disclaimer=report.DISCLAIMER,
    )


def summary_tables(study_dir) -> dict:
    """Each model's test metrics (mean, std, min, max, n_seeds) and each claim's outcome counts
    over the evaluated seeds of a study, and how steady each seed's training was, written nowhere.
    Returns {"metrics", "verdicts", "seeds", "left_out", "per_seed_metrics", "per_seed_verdicts",
    "record", "stability", "folders"}; folders: (seed, folder) of the evaluated seeds."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise StudyError(f"{study_dir} is not a folder; give the folder of a study (--out of `seeds`)")
    record = read_json(study_dir / STUDY_RECORD)
    folders = seed_folders(study_dir, record)
    done = [(seed, folder) for seed, folder in folders if evaluated(folder)]
    left_out = [seed for seed, folder in folders if not evaluated(folder)]
    if not done:
        raise StudyError(f"no seed in {study_dir} is evaluated yet ({SEED_PREFIX}N/evaluation/verdicts.csv): "
                         "run `python -m cxr_utils.study seeds` first")
    per_seed_metrics, per_seed_verdicts = _seed_tables(done)
    metrics, verdicts = metric_summary(per_seed_metrics), verdict_summary(per_seed_verdicts)
    return {"metrics": metrics, "verdicts": verdicts, "seeds": [seed for seed, _ in done], "left_out": left_out,
            "per_seed_metrics": per_seed_metrics, "per_seed_verdicts": per_seed_verdicts, "record": record,
            "stability": stability_table(done), "folders": done}


def write_summary_tables(study_dir) -> dict:
    """``summary_tables`` of ``study_dir``, written as summary_metrics.csv and summary_verdicts.csv
    there; returns the dict."""
    study_dir = Path(study_dir)
    result = summary_tables(study_dir)
    metrics, verdicts = result["metrics"], result["verdicts"]
    atomic_write(study_dir / SUMMARY_FILES[0], lambda path: metrics.to_csv(path, index=False))
    atomic_write(study_dir / SUMMARY_FILES[1], lambda path: verdicts.to_csv(path, index=False))
    return result


def summarise(study_dir) -> dict:
    """``summary_tables``, written as summary_metrics.csv, summary_verdicts.csv and summary.md in
    ``study_dir``; returns the same dict."""
    study_dir = Path(study_dir)
    result = write_summary_tables(study_dir)
    metrics, verdicts = result["metrics"], result["verdicts"]
    text = summary_markdown(metrics, verdicts, result["seeds"], result["record"], result["left_out"],
                            stability=result["stability"])
    atomic_write(study_dir / SUMMARY_FILES[2], lambda path: path.write_text(text))
    return result
