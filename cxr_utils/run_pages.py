"""The pages of a published run, written from the run's files: no number in them is typed by hand.

``glance_markdown`` is the book's "Results at a glance" (the paper's claims, this run's numbers with
95% intervals, the verdicts and what they mean); ``tables_markdown`` the paper's tables beside this
run's (``glance.paper_tables``); ``reproduce_markdown`` how to make the run again, from its run
record, and ``run_record_markdown`` the record itself; ``findings_markdown``, ``verdicts_page``
and ``shortcuts_page`` what the run shows, its verdicts (``glance.verdicts_markdown``) and
chapter 8's summary, for the report.
``cxr_utils.publish`` writes them into ``book/executed/``. Explained in book/intro, book/report and
book/reproducibility.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cxr_utils import claims, config, evaluation, extended_set, findings, paper, prose, shortcut_run
from cxr_utils.evaluation import EVALUATION_DIR, EXTENDED_DIR
from cxr_utils.glance import MISSING, interval, markdown_table, number, paper_tables, verdict_text, verdicts_markdown
from cxr_utils.paths import repository_url
from cxr_utils.series import PROFILES
from cxr_utils.summaries import shown_value

# The outcomes of claims.claim_verdicts as the glance template compares them (it explains each in
# a reader's words).
OUTCOMES = {"supported": claims.SUPPORTED, "contradicted": claims.CONTRADICTED,
            "inconclusive": claims.INCONCLUSIVE, "not_paper_setting": claims.NOT_PAPER_SETTING}
# The settings the glance page's first sentence names, in its order; those compared with the paper's
# protocol say so when they are smaller.
DESCRIBED_SETTINGS = ("n_per_class", "epochs", "batch_size", "seed")
COMPARED_WITH_PROTOCOL = ("n_per_class", "epochs")


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


def _setting_values(settings: dict) -> dict:
    """What the glance page's first sentence says of a run's settings: those given, those smaller
    than the paper's protocol (with the protocol's values), and how ResNet50 started."""
    given = {name: settings[name] for name in DESCRIBED_SETTINGS if settings.get(name) is not None}
    smaller = {name: getattr(config.PROTOCOL, name) for name in COMPARED_WITH_PROTOCOL
               if name in given and given[name] < getattr(config.PROTOCOL, name)}
    weighted = "weights" in settings
    return {"profile": settings.get("profile"), "given": given, "smaller": smaller,
            "weights_label": config.weights_label(settings["weights"]) if weighted else None,
            "paper_setting": weighted and config.is_paper_setting(settings["weights"])}


def _n_of(table: pd.DataFrame) -> int:
    return int(table["n"].max())


def _accuracy_table(test: pd.DataFrame, extended: pd.DataFrame | None) -> str:
    """Each model's accuracy beside the paper's, with 95% intervals, on the test set and (where the
    run has it) the extended test set."""
    paper_scores = paper.table6()
    tables = (test, extended) if extended is not None else (test,)
    header = ["model", "the paper's accuracy", f"this run: test set (n={_n_of(test)})"]
    if extended is not None:
        header.append(f"this run: extended test set (n={_n_of(extended)})")
    rows = []
    for name in config.paper_names().values():
        row = [name, number(paper_scores.loc[name, "accuracy"]) if name in paper_scores.index else MISSING]
        for table in tables:
            key = (name, "accuracy")
            row.append(interval(*table.loc[key, ["value", "low", "high"]]) if key in table.index else MISSING)
        rows.append(row)
    return markdown_table(header, rows, ["l"] + ["r"] * (len(header) - 1))


def _verdicts_table(verdicts: pd.DataFrame, verdicts_extended: pd.DataFrame | None, test: pd.DataFrame,
                    extended: pd.DataFrame | None) -> str:
    """Each claim's verdict on the test set and (where both exist) the extended test set; its
    figures beside the paper's, and the reasons, are in the report (``verdicts_markdown``)."""
    header = ["the paper's claim", f"verdict: test set (n={_n_of(test)})"]
    on_extended = {}
    if verdicts_extended is not None and extended is not None:
        header.append(f"verdict: extended test set (n={_n_of(extended)})")
        on_extended = {row.claim: verdict_text(row.verdict, row.reason) for row in verdicts_extended.itertuples()}
    rows = [[f"**{row.claim}** {row.text}", verdict_text(row.verdict, row.reason)]
            + ([on_extended.get(row.claim, MISSING)] if on_extended else [])
            for row in verdicts.itertuples()]
    return markdown_table(header, rows)


def _explained_outcomes(verdicts: pd.DataFrame, verdicts_extended: pd.DataFrame | None) -> list[str]:
    """The outcomes the verdicts show, in claims.OUTCOMES' order, and, where a verdict is "not the
    paper's setting", the outcomes its numbers alone indicate (shown beside it)."""
    shown = set(verdicts["verdict"]) | (set(verdicts_extended["verdict"]) if verdicts_extended is not None else set())
    indicated = {claims.indicated_verdict(v, r) for v, r in zip(verdicts["verdict"], verdicts["reason"])}
    return [o for o in claims.OUTCOMES if o in shown or (claims.NOT_PAPER_SETTING in shown and o in indicated)]


def glance_markdown(results_dir) -> str:
    """"Results at a glance", from a run's saved files: its setting (saying plainly when it is not
    the paper's), each model's accuracy beside the paper's with 95% intervals (test set and
    extended test set), each claim's verdict on both (its figures and reasons are the report's,
    ``verdicts_markdown``), and what the verdicts mean. Compact, so that the book's first screen
    shows the accuracies and the verdicts. Reads run.json, evaluation/ and extended/evaluation/;
    the words are in templates/run_glance.md.j2."""
    results_dir = Path(results_dir)
    settings = _settings(results_dir)
    test, extended = _metrics(results_dir, EVALUATION_DIR), _metrics(results_dir, EXTENDED_DIR)
    # Without metrics the page says notebook 06 did not run, whatever verdicts are left.
    verdicts, verdicts_extended = (None, None) if test is None else (
        _verdicts(results_dir), _verdicts(results_dir, "_extended"))
    return prose.render(
        "run_glance.md.j2", **_setting_values(settings), outcomes=OUTCOMES,
        accuracy_table=None if test is None else _accuracy_table(test, extended),
        extended_set=None if extended is None else extended_set.description(settings.get("extended_test_size")),
        verdicts_table=None if verdicts is None else _verdicts_table(verdicts, verdicts_extended, test, extended),
        explained=[] if verdicts is None else _explained_outcomes(verdicts, verdicts_extended),
    )


# -- reproducing the run ----------------------------------------------------------------------------


def _duration(seconds) -> str:
    seconds = float(seconds)
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 90:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} s"


def _command(record: dict, settings: dict, profile: str) -> str:
    """The command that makes the run again: ``make run`` where the Makefile's variables say it,
    ``python -m cxr_utils.run`` with the settings that differ from the profile's otherwise."""
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
        return command
    command = f"python -m cxr_utils.run --profile {profile}"
    if data:
        command += " --data-dir /path/to/COVID-19_Radiography_Dataset"
    for name, value in {**overrides, **({"weights": weights} if weights != defaults.get("weights") else {})}.items():
        command += f" -p {name}={value!r}" if isinstance(value, str) else f" -p {name}={value}"
    return command + (" --one-thread --book" if one_thread else " --book")


def passes(record: dict) -> list[dict]:
    """The passes that made a run (``python -m cxr_utils.run --only`` continues a record): the first
    from the record itself, then each of ``continued``, with its git commit and start time; each
    notebook belongs to the last pass that executed it (``notebooks``: those, in series order)."""
    steps = [{"git_commit": record.get("git_commit"), "created_utc": record.get("created_utc")},
             *[{"git_commit": step.get("git_commit"), "created_utc": step.get("created_utc"),
                "executed": list(step.get("notebooks", []))} for step in record.get("continued", [])]]
    for position, step in enumerate(steps, 1):
        step["number"], step["notebooks"] = position, []
    for name in record.get("notebooks", {}):
        last = max((step for step in steps[1:] if name in step["executed"]), key=lambda step: step["number"],
                   default=steps[0])
        last["notebooks"].append(name)
    return steps


def reproduce_markdown(record: dict, beside_s: float | None = None) -> str:
    """How to make this run again, from its run record: the command (``_command``), the git commit,
    the seed, and how long it took where; ``beside_s``: seconds of training done beside the run
    (``blanked.trained_beside``), which the command does inside it. The words are in
    templates/run_reproduce.md.j2."""
    settings = record.get("settings", {})
    hardware = record.get("hardware", {})
    slowest = sorted(((entry.get("wall_time_s") or 0, name) for name, entry in record.get("notebooks", {}).items()),
                     reverse=True)[:2]
    made_in = passes(record)
    # A run made in passes: the last pass's commit holds the package as it finished the run, and
    # the drift test holds the book's notebooks to the code every pass executed.
    commit = made_in[-1]["git_commit"] or record.get("git_commit")
    url = repository_url() if commit else None
    return prose.render(
        "run_reproduce.md.j2", command=_command(record, settings, settings.get("profile") or record.get("profile") or "paper"),
        commit=commit, url=url, folder=url and url.rstrip("/").rsplit("/", 1)[-1], n_passes=len(made_in),
        seed=settings.get("seed"),
        took=None if record.get("wall_time_s") is None else _duration(record["wall_time_s"]),
        slowest=[(name, _duration(seconds)) for seconds, name in slowest if seconds],
        machine=[str(hardware[key]) for key in ("cpu", "accelerator") if hardware.get(key)],
        cores=hardware.get("cpu_count"), one_thread=bool(record.get("one_thread")),
        beside=None if beside_s is None else _duration(beside_s),
    )


def run_record_markdown(record: dict) -> str:
    """The run record (run.json) as Markdown tables for the reproducibility page."""
    settings = [[name, f"`{shown_value(name, value)!r}`"] for name, value in record.get("settings", {}).items()]
    notebooks = []
    for name, entry in record.get("notebooks", {}).items():
        memory = entry.get("peak_memory_mb")  # recorded since runs sample their kernels' memory
        notebooks.append([name, entry.get("wall_time_s", ""), "" if memory is None else f"{memory:,}",
                          entry.get("status", ""), f"`{entry.get('code_sha256', '')[:12]}`"])
    hardware = record.get("hardware", {})
    machine = [[name, hardware.get(name, "")] for name in ("accelerator", "cpu", "cpu_count", "platform", "keras_backend")]
    if "tensorflow_threads" in hardware:
        machine.append(["tensorflow threads", ", ".join(f"{k}={v}" for k, v in hardware["tensorflow_threads"].items())])
    machine += [[name, version] for name, version in record.get("versions", {}).items()]
    return prose.render(
        "run_record.md.j2",
        settings_table=markdown_table(["setting", "value"], settings),
        notebooks_table=markdown_table(["notebook", "wall time (s)", "peak memory (MB)", "status", "code SHA-256"],
                                       notebooks, ["l", "r", "r", "l", "l"]),
        machine_table=markdown_table(["hardware / version", "value"], machine),
        git_commit=record.get("git_commit"), created_utc=record.get("created_utc"), wall_time_s=record.get("wall_time_s"),
        passes=passes(record) if record.get("continued") else [],
    )


# -- the report's pages -----------------------------------------------------------------------------


def findings_markdown(results_dir: Path) -> str:
    """What the run shows, written from its numbers, for the replication report."""
    try:
        table = findings.training_findings(results_dir)
    except FileNotFoundError as error:
        return f"No findings: {error}\n"

    def optional(relative):
        path = results_dir / relative
        return pd.read_csv(path) if path.is_file() else None

    return findings.findings_markdown(
        table,
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
