"""The pages of a published run, written from the run's files: no number in them is typed by hand.

``glance_markdown`` is the book's "Results at a glance" (the paper's claims, this run's numbers with
95% intervals, the verdicts and what they mean); ``tables_markdown`` the paper's tables beside this
run's (``glance.paper_tables``); ``reproduce_markdown`` how to make the run again, from its run
record; ``findings_markdown``, ``verdicts_page`` and ``shortcuts_page`` what the run shows, its
verdicts (``glance.verdicts_markdown``) and chapter 8's summary, for the report.
``cxr_utils.publish`` writes them into ``book/executed/``. Explained in book/intro, book/report and
book/reproducibility.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cxr_utils import config, evaluation, extended_set, paper, report, shortcut_run
from cxr_utils.evaluation import EVALUATION_DIR, EXTENDED_DIR
from cxr_utils.glance import MISSING, interval, markdown_table, number, paper_tables, verdict_text, verdicts_markdown
from cxr_utils.paths import repository_url
from cxr_utils.series import PROFILES

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


# -- reading a run ----------------------------------------------------------------------------------


def _read_csv(path: Path, **options) -> pd.DataFrame | None:
    return pd.read_csv(path, **options) if Path(path).is_file() else None


def _verdicts(results_dir: Path, suffix: str = "") -> pd.DataFrame | None:
    return _read_csv(Path(results_dir) / EVALUATION_DIR / f"verdicts{suffix}.csv", dtype={"claim": str})


def _metrics(results_dir: Path, folder: str) -> pd.DataFrame | None:
    table = _read_csv(Path(results_dir) / folder / "metrics.csv")
    return None if table is None else table.set_index(["model", "metric"])


def _settings(results_dir: Path) -> dict:
    path = Path(results_dir) / "run.json"
    return json.loads(path.read_text()).get("settings", {}) if path.is_file() else {}


# -- the paper's tables beside this run's ------------------------------------------------------------


def tables_markdown(results_dir) -> str:
    """The paper's Tables 2-7 beside this run's, and the paired tests, as Markdown for the report:
    ``paper_tables`` of the run's ``comparison.compare_with_paper``, one after the other."""
    from cxr_utils import comparison  # imports Keras (through runtime): only when a run is published

    results_dir = Path(results_dir)
    try:
        tables = comparison.compare_with_paper(results_dir)
    except FileNotFoundError as error:
        return f"No tables: {error}\n"
    return "\n".join(paper_tables(tables, _read_csv(results_dir / EXTENDED_DIR / "mcnemar.csv")).values())


# -- results at a glance ----------------------------------------------------------------------------


def setting_sentence(settings: dict) -> str:
    """What this run did, in one or two short sentences, from its settings; says plainly when it is
    not the paper's setting."""
    parts = []
    if settings.get("n_per_class") is not None:
        parts.append(f"{settings['n_per_class']} + {settings['n_per_class']} images")
    for name, label in (("epochs", "{} epochs"), ("batch_size", "batch {}"), ("seed", "seed {}")):
        if settings.get(name) is not None:
            parts.append(label.format(settings[name]))
    profile = f" (profile `{settings['profile']}`)" if settings.get("profile") else ""
    text = f"**This run**{profile}: " + ", ".join(parts)
    smaller = {name: label for name, label in (("n_per_class", "{0} + {0} images"), ("epochs", "{} epochs"))
               if settings.get(name) is not None and settings[name] < getattr(config.PROTOCOL, name)}
    if smaller:
        text += (", **smaller than the paper's protocol** (" + ", ".join(
            label.format(getattr(config.PROTOCOL, name)) for name, label in smaller.items())
            + "): its numbers show that the pipeline works, not how good the models are")
    if "weights" not in settings:
        return text + "."
    if config.is_paper_setting(settings["weights"]):
        return text + f"; ResNet50 with {config.weights_label(settings['weights'])}, as in the paper."
    return text + (". ResNet50 **trained from scratch** (`weights=None`), not from the paper's ImageNet weights: "
                   "no verdict below tests the paper's own setting.")


def glance_markdown(results_dir) -> str:
    """"Results at a glance", from a run's saved files: its setting, each model's accuracy beside the
    paper's with 95% intervals (test set and extended test set), each claim's verdict on both (its
    figures and reasons are the report's, ``verdicts_markdown``), and what the verdicts mean.
    Compact, so that the book's first screen shows the accuracies and the verdicts. Reads
    run.json, evaluation/ and extended/evaluation/."""
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
    # The two tables first and close together, so that a reader's first screen holds both; what
    # their figures are follows them.
    parts += [markdown_table(header, rows, ["l"] + ["r"] * (len(header) - 1))]
    notes = ("Accuracy with its 95% interval in brackets"
             + (f"; the extended test set is {extended_set.description(extended_size)}" if extended is not None else "")
             + ".")

    verdicts, verdicts_extended = _verdicts(results_dir), _verdicts(results_dir, "_extended")
    if verdicts is None:
        return "\n".join(parts + ["", notes]) + "\n\nNo verdicts yet: notebook 07 did not run.\n"
    # The verdicts alone: each claim's figures beside the paper's, and the reasons, are in the
    # report (verdicts_markdown), a click away.
    header = ["the paper's claim", f"verdict: test set (n={n_of(test)})"]
    on_extended = {}
    if verdicts_extended is not None and extended is not None:
        header.append(f"verdict: extended test set (n={n_of(extended)})")
        on_extended = {row.claim: verdict_text(row.verdict, row.reason) for row in verdicts_extended.itertuples()}
    rows = [[f"**{row.claim}** {row.text}", verdict_text(row.verdict, row.reason)]
            + ([on_extended.get(row.claim, MISSING)] if on_extended else [])
            for row in verdicts.itertuples()]
    parts += [markdown_table(header, rows), notes]

    shown = list(dict.fromkeys(list(verdicts["verdict"]) + (list(verdicts_extended["verdict"])
                                                             if verdicts_extended is not None else [])))
    indicated = {report.indicated_verdict(v, r) for v, r in zip(verdicts["verdict"], verdicts["reason"])}
    outcomes = [o for o in report.OUTCOMES if o in shown or (report.NOT_PAPER_SETTING in shown and o in indicated)]
    if outcomes:
        parts += ["", "**What the verdicts mean**", ""]
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
    settings = record.get("settings", {})
    profile = settings.get("profile") or record.get("profile") or "paper"
    defaults = PROFILES[profile].parameters() if profile in PROFILES else {}
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
        url = repository_url()
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


# -- the report's pages -----------------------------------------------------------------------------


def findings_markdown(results_dir: Path) -> str:
    """What the run shows, written from its numbers, for the replication report."""
    from cxr_utils import comparison  # imports Keras (through runtime): only when a run is published

    try:
        findings = comparison.training_findings(results_dir)
    except FileNotFoundError as error:
        return f"No findings: {error}\n"

    def optional(relative):
        path = results_dir / relative
        return pd.read_csv(path) if path.is_file() else None

    return report.findings_markdown(
        findings,
        mcnemar_extended=optional(f"{evaluation.EXTENDED_DIR}/mcnemar.csv"),
        verdicts=optional(f"{evaluation.EVALUATION_DIR}/verdicts.csv"),
        verdicts_extended=optional(f"{evaluation.EVALUATION_DIR}/verdicts_extended.csv"),
    )


def verdicts_page(results_dir: Path, name: str) -> str:
    """A verdicts page of the report (report.md, report_extended.md): the compact table of
    ``glance.verdicts_markdown`` from the run's verdicts CSV, else the run's own page."""
    suffix = name.removeprefix("report").removesuffix(".md")
    table = results_dir / EVALUATION_DIR / f"verdicts{suffix}.csv"
    if table.is_file():
        return verdicts_markdown(pd.read_csv(table, dtype={"claim": str}))
    page = results_dir / name
    return page.read_text() if page.is_file() else "No verdicts: notebook 07 did not run.\n"


def shortcuts_page(results_dir: Path) -> str:
    """Chapter 8's summary for the report, written from the run's shortcut tables."""
    if not (results_dir / shortcut_run.SHORTCUTS_DIR).is_dir():
        return "No shortcut analysis: notebook 8 did not run.\n"
    return shortcut_run.summary_markdown(results_dir) + "\n"
