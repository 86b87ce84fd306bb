"""What a reader sees first of a run, and the report's tables, written from the run's saved files.

``glance_markdown`` is the book's "Results at a glance" (the paper's claims, this run's numbers with
95% intervals, the verdicts and what they mean); ``verdicts_markdown`` the claims as a compact table
with the reasons listed below it; ``tables_markdown`` the paper's tables beside this run's, numbers
formatted for reading; ``reproduce_markdown`` how to make the run again, from its run record.
``cxr_utils.publish`` writes them into ``book/executed/``; no number in them is typed by hand.
Explained in book/intro, book/report and book/reproducibility.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from cxr_utils import config, extended_set, report
from cxr_utils.config import METRICS

# What each outcome of report.claim_verdicts means, in a reader's words.
OUTCOME_MEANING = {
    report.SUPPORTED: "this run's numbers agree with the claim beyond their uncertainty",
    report.CONTRADICTED: "this run's numbers disagree with the claim beyond their uncertainty",
    report.INCONCLUSIVE: "the uncertainty of this run's numbers is too wide to say either",
    report.NOT_PAPER_SETTING: (
        "this run trained ResNet50 from scratch, so it cannot test a claim about the paper's ImageNet "
        "transfer learning; the outcome its own numbers would give is shown beside it, as context only"
    ),
}
MISSING = "–"


# -- formatting -------------------------------------------------------------------------------------


def number(value, digits: int = 2) -> str:
    """A figure to ``digits`` decimals; a missing one as a dash."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return MISSING if value is None else str(value)
    return MISSING if math.isnan(value) else f"{value:.{digits}f}"


def interval(value, low, high, digits: int = 2) -> str:
    """"0.73 [0.64, 0.81]": a value with its 95% interval."""
    return f"{number(value, digits)} [{number(low, digits)}, {number(high, digits)}]"


def p_value(value) -> str:
    """A p-value to two significant digits: 0.087, 5.9e-05."""
    value = float(value)
    return MISSING if math.isnan(value) else f"{value:.2g}"


def markdown_table(header: list[str], rows: list[list], align: list[str] | None = None) -> str:
    """A Markdown pipe table with no index column; ``align`` per column: "l", "r" or "c"."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    align = align or ["l"] * len(header)
    lines = ["| " + " | ".join(map(cell, header)) + " |",
             "|" + "|".join(rule[a] for a in align) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def verdict_text(verdict: str, reason: str) -> str:
    """A verdict as a table cell: outside the paper's setting, with what the numbers indicate."""
    indicated = report.indicated_verdict(verdict, reason)
    if verdict == report.NOT_PAPER_SETTING and indicated != verdict:
        return f"**{verdict}** (its numbers alone: *{indicated}*)"
    return f"**{verdict}**"


# -- reading a run ----------------------------------------------------------------------------------


def _read_csv(path: Path, **options) -> pd.DataFrame | None:
    return pd.read_csv(path, **options) if Path(path).is_file() else None


def _verdicts(results_dir: Path, suffix: str = "") -> pd.DataFrame | None:
    from cxr_utils.evaluation import EVALUATION_DIR

    return _read_csv(Path(results_dir) / EVALUATION_DIR / f"verdicts{suffix}.csv", dtype={"claim": str})


def _metrics(results_dir: Path, folder: str) -> pd.DataFrame | None:
    table = _read_csv(Path(results_dir) / folder / "metrics.csv")
    return None if table is None else table.set_index(["model", "metric"])


def _settings(results_dir: Path) -> dict:
    path = Path(results_dir) / "run.json"
    return json.loads(path.read_text()).get("settings", {}) if path.is_file() else {}


# -- the verdicts, compact --------------------------------------------------------------------------


def verdicts_markdown(verdicts: pd.DataFrame) -> str:
    """The claims as a compact table (claim, verdict, this run, the paper), the reasons as a list
    below it, and the disclaimer: the long reasons never stretch a table column."""
    rows = [[f"**{row.claim}** {row.text}", verdict_text(row.verdict, row.reason), row.ours, row.paper]
            for row in verdicts.itertuples()]
    lines = [markdown_table(["claim", "verdict", "this run", "the paper"], rows), "Why:", ""]
    lines += [f"- **Claim {row.claim}**: {row.reason}" for row in verdicts.itertuples()]
    return "\n".join(lines) + f"\n\n{report.DISCLAIMER}\n"


# -- the paper's tables beside this run's ------------------------------------------------------------


def tables_markdown(results_dir) -> str:
    """The paper's Tables 2-7 beside this run's, and the paired tests, as Markdown for the report:
    each cell "the paper / this run", losses to 3 decimals, other metrics to 2 with their 95%
    intervals, p-values to 2 significant digits, no index column."""
    from cxr_utils import comparison
    from cxr_utils.evaluation import EXTENDED_DIR

    results_dir = Path(results_dir)
    try:
        tables = comparison.compare_with_paper(results_dir)
    except FileNotFoundError as error:
        return f"No tables: {error}\n"
    paper_side, ours_side = "paper", "this run"
    parts = []

    table2 = tables["table2"]
    columns = [("train_loss", "training loss", 3), ("train_accuracy", "training accuracy", 2),
               ("val_loss", "validation loss", 3), ("val_accuracy", "validation accuracy", 2)]
    rows = [[model] + [f"{number(table2.loc[model, (paper_side, key)], digits)} / "
                       f"{number(table2.loc[model, (ours_side, key)], digits)}" for key, _, digits in columns]
            for model in table2.index]
    parts.append("**Table 2: training and validation at the best epoch** (each cell: the paper / this run)\n\n"
                 + markdown_table(["model"] + [label for _, label, _ in columns], rows, ["l"] + ["r"] * 4))

    confusion = tables["confusion"]
    keys = (("tp", "TP"), ("fn", "FN"), ("fp", "FP"), ("tn", "TN"))
    rows = [[model] + [f"{number(confusion.loc[model, (paper_side, key)], 0)} / "
                       f"{number(confusion.loc[model, (ours_side, key)], 0)}" for key, _ in keys]
            for model in confusion.index]
    n_test = int(tables["ours_long"]["n"].max())
    parts.append(f"**Tables 3-5: confusion counts on the test set** ({n_test} images here; each cell: the paper / "
                 "this run; COVID is the positive class)\n\n"
                 + markdown_table(["model"] + [label for _, label in keys], rows, ["l"] + ["r"] * 4))

    ours = tables["ours_long"].set_index(["model", "metric"])
    table6 = tables["table6"]
    rows = [[model] + [f"{number(table6.loc[model, (paper_side, metric)])} / "
                       + (interval(*ours.loc[(model, metric), ["value", "low", "high"]])
                          if (model, metric) in ours.index else MISSING) for metric in METRICS]
            for model in table6.index]
    parts.append("**Table 6: test metrics** (each cell: the paper / this run with its 95% interval)\n\n"
                 + markdown_table(["model", "accuracy", "precision", "recall", "F1"], rows, ["l"] + ["r"] * 4))

    table7 = tables["table7"]
    rows = [[row.author, row.data, row.method] + [number(getattr(row, m)) for m in METRICS]
            for row in table7.itertuples()]
    parts.append("**Table 7: earlier work, with this run added**\n\n"
                 + markdown_table(["study", "data", "method", "accuracy", "precision", "recall", "F1"], rows,
                                  ["l", "l", "l", "r", "r", "r", "r"]))

    extended = _read_csv(results_dir / EXTENDED_DIR / "mcnemar.csv")
    paired = tables["mcnemar"]
    if len(paired):
        def described(row) -> str:
            return f"{int(row.a_only_correct)} vs {int(row.b_only_correct)}, p = {p_value(row.p_value)}"

        header = ["models (A vs B)", f"test set, n={int(paired['n'].max()) if 'n' in paired else n_test}"]
        lookup = {}
        if extended is not None and len(extended):
            header.append(f"extended test set, n={int(extended['n'].max())}")
            lookup = {(r.model_a, r.model_b): described(r) for r in extended.itertuples()}
        rows = [[f"{row.model_a} vs {row.model_b}", described(row)]
                + ([lookup.get((row.model_a, row.model_b), MISSING)] if lookup else [])
                for row in paired.itertuples()]
        parts.append("**Paired comparisons** (McNemar's exact test; each cell: images only A got right vs only B, "
                     "and p)\n\n" + markdown_table(header, rows))
    return "\n".join(parts)


# -- results at a glance ----------------------------------------------------------------------------


def setting_sentence(settings: dict) -> str:
    """What this run did, in one sentence, from its settings; says plainly when it is not the
    paper's setting."""
    parts = []
    if settings.get("n_per_class") is not None:
        parts.append(f"{settings['n_per_class']} + {settings['n_per_class']} images of the database")
    for name, label in (("epochs", "{} epochs"), ("batch_size", "batch {}"), ("seed", "seed {}")):
        if settings.get(name) is not None:
            parts.append(label.format(settings[name]))
    profile = f" (profile `{settings['profile']}`)" if settings.get("profile") else ""
    text = f"**This run**{profile}: " + ", ".join(parts) + "; "
    smaller = [name for name in ("n_per_class", "epochs")
               if settings.get(name) is not None and settings[name] < getattr(config.PROTOCOL, name)]
    if smaller:
        text += ("**smaller than the paper's protocol** (" + ", ".join(
            f"{name} {settings[name]} where the paper has {getattr(config.PROTOCOL, name)}" for name in smaller)
            + "), so its numbers show that the pipeline works, not how good the models are; ")
    if "weights" not in settings:
        return text.rstrip("; ") + "."
    if config.is_paper_setting(settings["weights"]):
        return text + f"ResNet50 with {config.weights_label(settings['weights'])}, as in the paper."
    return text + ("ResNet50 **trained from scratch** (`weights=None`), where the paper used ImageNet weights: "
                   "no verdict below tests the paper's own setting.")


def glance_markdown(results_dir) -> str:
    """"Results at a glance", from a run's saved files: its setting, each model's accuracy beside the
    paper's with 95% intervals (test set and extended test set), each claim's verdict on both, and
    what the verdicts mean. Reads run.json, evaluation/ and extended/evaluation/."""
    from cxr_utils import paper
    from cxr_utils.evaluation import EVALUATION_DIR, EXTENDED_DIR

    results_dir = Path(results_dir)
    parts = [setting_sentence(_settings(results_dir)), ""]

    test, extended = _metrics(results_dir, EVALUATION_DIR), _metrics(results_dir, EXTENDED_DIR)
    if test is None:
        return "\n".join(parts) + "\nNo results yet: notebook 06 did not run.\n"
    paper_scores = paper.table6()

    def n_of(table) -> int:
        return int(table["n"].max())

    header = ["model", "the paper's accuracy", f"this run: test set (n={n_of(test)})"]
    if extended is not None:
        header.append(f"this run: extended test set (n={n_of(extended)})")
    rows = []
    for name in config.paper_names().values():
        row = [name, number(paper_scores.loc[name, "accuracy"]) if name in paper_scores.index else MISSING]
        for table in (test, extended) if extended is not None else (test,):
            key = (name, "accuracy")
            row.append(interval(*table.loc[key, ["value", "low", "high"]]) if key in table.index else MISSING)
        rows.append(row)
    extended_size = _settings(results_dir).get("extended_test_size")
    parts += [f"**Accuracy** (95% intervals in brackets; the extended test set is {extended_set.description(extended_size)})", "",
              markdown_table(header, rows, ["l"] + ["r"] * (len(header) - 1))]

    verdicts, verdicts_extended = _verdicts(results_dir), _verdicts(results_dir, "_extended")
    if verdicts is None:
        return "\n".join(parts) + "\nNo verdicts yet: notebook 07 did not run.\n"
    header = ["the paper's claim", "the paper", f"this run (n={n_of(test)})", "verdict"]
    on_extended = {}
    if verdicts_extended is not None and extended is not None:
        header.append(f"verdict on the extended test set (n={n_of(extended)})")
        on_extended = {row.claim: verdict_text(row.verdict, row.reason) for row in verdicts_extended.itertuples()}
    rows = [[f"**{row.claim}** {row.text}", row.paper, row.ours, verdict_text(row.verdict, row.reason)]
            + ([on_extended.get(row.claim, MISSING)] if on_extended else [])
            for row in verdicts.itertuples()]
    parts += ["**The paper's claims**", "", markdown_table(header, rows)]

    shown = list(dict.fromkeys(list(verdicts["verdict"]) + (list(verdicts_extended["verdict"])
                                                             if verdicts_extended is not None else [])))
    indicated = {report.indicated_verdict(v, r) for v, r in zip(verdicts["verdict"], verdicts["reason"])}
    outcomes = [o for o in report.OUTCOMES if o in shown or (report.NOT_PAPER_SETTING in shown and o in indicated)]
    if outcomes:
        parts += ["**What the verdicts mean**", ""]
        parts += [f"- *{outcome}*: {OUTCOME_MEANING[outcome]}." for outcome in outcomes]
    return "\n".join(parts).rstrip() + "\n"


# -- reproducing the run ----------------------------------------------------------------------------


def _duration(seconds) -> str:
    seconds = float(seconds)
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 90:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} s"


def reproduce_markdown(record: dict) -> str:
    """How to make this run again, from its run record: the command (``make run`` where the
    Makefile's variables say it, ``python -m cxr_utils.run`` otherwise), the git commit, the
    seed, and how long it took where."""
    from cxr_utils import run

    settings = record.get("settings", {})
    profile = settings.get("profile") or record.get("profile") or "paper"
    defaults = run.PROFILES.get(profile, {})
    overrides = {name: value for name, value in settings.items()
                 if name in defaults and name != "weights" and value != defaults[name]}
    weights = settings.get("weights", defaults.get("weights"))
    data = settings.get("data_dir") is not None
    one_thread = bool(record.get("one_thread"))
    if not overrides and not one_thread:
        command = "make run" + (" DATA_DIR=/path/to/COVID-19_Radiography_Dataset" if data else "")
        if profile != "paper":
            command += f" PROFILE={profile}"
        if weights != defaults.get("weights"):
            kind = config.weights_kind(weights)
            command += f" WEIGHTS={'None' if kind == 'scratch' else 'imagenet' if kind == 'imagenet' else '/path/to/' + Path(str(weights)).name}"
    else:
        command = f"python -m cxr_utils.run --profile {profile}"
        if data:
            command += " --data-dir /path/to/COVID-19_Radiography_Dataset"
        for name, value in {**overrides, **({"weights": weights} if weights != defaults.get("weights") else {})}.items():
            command += f" -p {name}={value!r}" if isinstance(value, str) else f" -p {name}={value}"
        command += " --one-thread --book" if one_thread else " --book"
    commit = record.get("git_commit")
    hardware = record.get("hardware", {})
    machine = ", ".join(str(hardware[k]) for k in ("cpu", "accelerator") if hardware.get(k))
    if hardware.get("cpu_count"):
        machine += f" ({hardware['cpu_count']} cores)"
    lines = ["```bash"]
    if commit:
        import yaml

        url = yaml.safe_load((run.REPO_ROOT / "_config.yml").read_text())["repository"]["url"]
        lines += [f"git clone {url}", f"cd {url.rstrip('/').rsplit('/', 1)[-1]}", f"git checkout {commit}"]
    lines += [command, "```", ""]
    text = (f"This reruns the series with the committed run's settings (seed {settings.get('seed')}); "
            "`DATA_DIR` is your copy of the COVID-19 Radiography Database. ")
    if record.get("wall_time_s") is not None:
        text += f"The committed run took {_duration(record['wall_time_s'])} in all"
        slow = sorted(((entry.get("wall_time_s") or 0, name) for name, entry in record.get("notebooks", {}).items()),
                      reverse=True)[:2]
        if slow and slow[0][0]:
            text += ", most of it in " + " and ".join(f"{name} ({_duration(s)})" for s, name in slow if s)
        text += f", on {machine}" if machine else ""
        text += (", TensorFlow on one thread (`--one-thread`: the same weights on every run)."
                 if one_thread else ".")
    return "\n".join(lines) + text + "\n"
