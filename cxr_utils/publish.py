"""Publish a run into the book: executed notebooks, run record, tables and verdicts copied into
``book/executed/`` with portable image paths; the drift check between a published run and the
notebook sources; the Jupyter Book build, with launch links that open the source notebooks.

Explained in book/reproducibility.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from cxr_utils.atomic import replace_folder
from cxr_utils.run import NOTEBOOKS_DIR, REPO_ROOT, SeriesError, code_hash, series

BOOK_EXECUTED_DIR = REPO_ROOT / "book" / "executed"


def _hide_injected_parameters(notebook_path: Path) -> None:
    # The settings line at the top of each page shows the values; the raw cell is noise.
    notebook = json.loads(notebook_path.read_text())
    for cell in notebook["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    notebook_path.write_text(json.dumps(notebook, indent=1) + "\n")


def _tables_markdown(results_dir: Path) -> str:
    """The paper's tables beside this run's, as Markdown for the replication report."""
    from cxr_utils import comparison

    try:
        tables = comparison.compare_with_paper(results_dir)
    except FileNotFoundError as error:
        return f"No tables: {error}\n"
    parts = []
    for title, key in (
        ("Table 2: training and validation at the best epoch", "table2"),
        ("Tables 3-5: confusion counts on the test set", "confusion"),
        ("Table 6: test metrics with 95% intervals", "table6"),
        ("Table 7: earlier work, with this run added", "table7"),
    ):
        table = tables[key]
        if isinstance(table.columns, pd.MultiIndex):
            table = table.copy()
            table.columns = [" ".join(map(str, c)) for c in table.columns]
        parts.append(f"**{title}**\n\n{table.round(4).to_markdown()}\n")
    return "\n".join(parts)


def _findings_markdown(results_dir: Path) -> str:
    """What the run shows, written from its numbers, for the replication report."""
    from cxr_utils import comparison, evaluation, report

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


PUBLISH_IGNORE = ("*.keras", "notebooks", "figures", "*.md", ".*", "__pycache__", "*.settings.json")


def dataset_relative_paths(results: Path) -> str | None:
    """Rewrite the image paths in every CSV under ``results`` relative to the dataset folder.

    A run's tables name each image by its absolute path on the machine that ran it; published
    copies name it by where it lies in the dataset ("COVID/images/COVID-1.png"), which is the
    same on every machine that has the dataset. The dataset folder is the deepest folder
    holding every image of ``manifest.csv`` (the whole dataset listing). Only the ``path``
    column changes: every other field is copied as text, so no number or hash is re-formatted.
    Returns the dataset folder, or None when there is no manifest (nothing is rewritten).
    """
    manifest = Path(results) / "manifest.csv"
    if not manifest.is_file():
        return None
    with manifest.open(newline="") as handle:
        paths = [row["path"] for row in csv.DictReader(handle)]
    if not paths or not all(os.path.isabs(path) for path in paths):
        return None  # already relative (published before), or nothing to anchor on
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    for table in sorted(Path(results).rglob("*.csv")):
        with table.open(newline="") as handle:
            rows = list(csv.reader(handle))
        if not rows or "path" not in rows[0]:
            continue
        column = rows[0].index("path")
        for row in rows[1:]:
            if os.path.isabs(row[column]) and os.path.commonpath([root, row[column]]) == root:
                row[column] = Path(os.path.relpath(row[column], root)).as_posix()
        with table.open("w", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(rows)
    return root


def publish_to_book(results_dir: Path, book_dir: Path = BOOK_EXECUTED_DIR) -> Path:
    """Copy the executed notebooks, the run record and the verdicts where the book renders them."""
    from cxr_utils import summaries

    results_dir = Path(results_dir)
    record = json.loads((results_dir / "run.json").read_text())
    staging = book_dir.with_name(book_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(results_dir / "notebooks", staging)
    for notebook_path in staging.glob("*.ipynb"):
        _hide_injected_parameters(notebook_path)
    shutil.copy2(results_dir / "run.json", staging / "run.json")
    (staging / "run_record.md").write_text(summaries.run_record_markdown(record))
    (staging / "tables.md").write_text(_tables_markdown(results_dir))
    (staging / "findings.md").write_text(_findings_markdown(results_dir))
    if (results_dir / "figures").is_dir():
        shutil.copytree(results_dir / "figures", staging / "figures")
    # The numbers behind the pages (histories, predictions, metrics, confusion matrices, the
    # sample and split), so readers can check them without retraining. Not the model weights
    # (hundreds of MB) and not the notebooks and figures, which are copied above.
    shutil.copytree(results_dir, staging / "results",
                    ignore=shutil.ignore_patterns(*PUBLISH_IGNORE))
    dataset_relative_paths(staging / "results")  # image paths that hold on any machine
    for name in ("report.md", "report_extended.md"):
        verdicts = results_dir / name
        (staging / name).write_text(
            verdicts.read_text() if verdicts.is_file() else "No verdicts: notebook 07 did not run.\n"
        )
    return replace_folder(staging, book_dir)  # the earlier run stays until this one is complete


def drift(book_dir: Path = BOOK_EXECUTED_DIR, notebooks_dir: Path | None = None) -> list[str]:
    """Where a published run no longer matches the notebook sources it claims to come from.

    Compares the SHA-256 of each source notebook's code cells with the one recorded in the
    published run.json, and checks every notebook of the series was executed. Empty: in sync.
    """
    notebooks_dir = Path(notebooks_dir or NOTEBOOKS_DIR)
    record_path = Path(book_dir) / "run.json"
    if not record_path.is_file():
        return [f"{record_path} is missing: publish a run with `python -m cxr_utils.run --book`"]
    recorded = json.loads(record_path.read_text()).get("notebooks", {})
    problems = []
    for name in series():
        entry = recorded.get(name)
        if entry is None or entry.get("status") != "ok":
            problems.append(f"{name}: not executed successfully in the published run")
        elif entry["code_sha256"] != code_hash(notebooks_dir / f"{name}.ipynb"):
            problems.append(
                f"{name}: its code changed since the published run was made; re-run the series "
                "(python -m cxr_utils.run --profile paper --book) and commit book/executed/"
            )
        elif not (Path(book_dir) / f"{name}.ipynb").is_file():
            problems.append(f"{name}: executed notebook missing from {book_dir}")
    return problems


def setup(app):
    """Sphinx extension (``_config.yml``: ``sphinx: extra_extensions: [cxr_utils.publish]``): the
    launch buttons (Colab, Binder, ...) of a chapter page open its source notebook,
    ``notebooks/<name>.ipynb`` (the paper's settings, ImageNet weights, ``data_dir=None``),
    not the executed copy the page renders (``book/executed/<name>.ipynb``, whose injected
    parameters hold the folders of the machine that ran it). sphinx-book-theme builds each
    link from the page's path in the repository (its ``add_launch_buttons``, priority 501);
    this runs after it and swaps that path. The repository's address stays in _config.yml."""
    from urllib.parse import quote

    executed = BOOK_EXECUTED_DIR.relative_to(REPO_ROOT).as_posix() + "/"
    sources = NOTEBOOKS_DIR.relative_to(REPO_ROOT).as_posix() + "/"

    def launch_source_notebooks(app, pagename, templatename, context, doctree):
        name = pagename[len(executed):] if pagename.startswith(executed) else None
        if name not in series():
            return
        book = app.config.html_theme_options.get("path_to_docs", "").strip("/")
        book = f"{book}/" if book else ""
        old, new = f"{book}{pagename}.ipynb", f"{book}{sources}{name}.ipynb"
        for group in context.get("header_buttons", []):
            if group.get("label") != "launch-buttons":
                continue
            for button in group.get("buttons", []):
                if "url" in button:  # plain (Colab, Binder) and percent-encoded (Deepnote) forms
                    button["url"] = button["url"].replace(old, new).replace(quote(old, safe=""), quote(new, safe=""))

    app.connect("html-page-context", launch_source_notebooks, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def build_book(root: Path = REPO_ROOT, log=print) -> Path:
    """Build the Jupyter Book at ``root`` offline, warnings as errors; returns the HTML folder."""
    script = Path(sys.executable).parent / "jupyter-book"
    command = [str(script) if script.exists() else "jupyter-book", "build", str(root),
               "--warningiserror", "--keep-going", "--quiet"]
    log("building the book ...")
    completed = subprocess.run(command, cwd=root)
    if completed.returncode != 0:
        raise SeriesError("the book build failed (warnings count as errors); see the messages above")
    return Path(root) / "_build" / "html"
