"""Publish a run into the book: executed notebooks, run record, tables and verdicts copied into
``book/executed/``, made portable (no folder of the machine that ran, no log lines), with the
pages written from the run (``cxr_utils.run_pages``); the drift check between a published run and the
notebook sources; the Jupyter Book build, with launch links that open the source notebooks.

    python -m cxr_utils.publish results/paper            # publish a run, then build the book
    python -m cxr_utils.publish --republish              # publish book/executed/ again, as now

Explained in book/reproducibility.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cxr_utils import blanked, command, glance, model_card, run_pages
from cxr_utils.atomic import replace_folder
from cxr_utils.paths import BOOK_EXECUTED_DIR, NOTEBOOKS_DIR, REPO_ROOT
from cxr_utils.portable import (
    placeholder_note, portable_notebook, dataset_relative_paths, machine_folders, machine_paths, make_portable,
    portable_record, portable_text, results_of_published,
)
from cxr_utils.series import SeriesError, code_hash, series

PUBLISH_IGNORE = ("*.keras", "notebooks", "figures", "*.md", ".*", "__pycache__", "*.settings.json")


def publish_to_book(results_dir: Path, book_dir: Path = BOOK_EXECUTED_DIR, log=print) -> Path:
    """Copy a run where the book renders it, portable: the executed notebooks without their stderr
    outputs, the run record, the pages written from the run (results at a glance, findings,
    tables, verdicts, how to reproduce it), the figures and the numbers behind them; every folder
    of the machine that ran replaced by a placeholder (``machine_folders``), image paths made
    relative to the dataset. The results folder keeps everything as it was."""
    results_dir = Path(results_dir)
    record = json.loads((results_dir / "run.json").read_text())
    folders = machine_folders(record, sorted((results_dir / "notebooks").glob("*.ipynb")))
    portable = portable_text(folders)
    staging = book_dir.with_name(book_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(results_dir / "notebooks", staging)
    for notebook_path in staging.glob("*.ipynb"):
        portable_notebook(notebook_path, portable)
    published = portable_record(record, folders)
    (staging / "run.json").write_text(json.dumps(published, indent=2) + "\n")
    (staging / "run_record.md").write_text(run_pages.run_record_markdown(published) + placeholder_note(published))
    beside_s = blanked.trained_beside(results_dir)
    (staging / "reproduce.md").write_text(run_pages.reproduce_markdown(published, beside_s))
    (staging / "glance.md").write_text(run_pages.glance_markdown(results_dir))
    (staging / "tables.md").write_text(run_pages.tables_markdown(results_dir))
    (staging / "findings.md").write_text(run_pages.findings_markdown(results_dir))
    (staging / "shortcuts.md").write_text(run_pages.shortcuts_page(results_dir))
    for name in ("report.md", "report_extended.md"):
        (staging / name).write_text(run_pages.verdicts_page(results_dir, name))
    if (results_dir / "figures").is_dir():
        shutil.copytree(results_dir / "figures", staging / "figures")
    # The numbers behind the pages (histories, predictions, metrics, confusion matrices, the
    # sample and split), so readers can check them without retraining. Not the model weights
    # (hundreds of MB) and not the notebooks and figures, which are copied above.
    # Beside the pages, so a chapter links them (glance.csv_note) and the book offers them for download.
    numbers = staging / glance.PUBLISHED_RESULTS
    shutil.copytree(results_dir, numbers, ignore=shutil.ignore_patterns(*PUBLISH_IGNORE))
    dataset_relative_paths(numbers)  # image paths that hold on any machine
    # The model card, from the published numbers (no weights, paths within the dataset).
    model_card.write(numbers, staging / "model_card.md")
    make_portable(staging, folders)
    left = machine_paths(staging, folders)
    if left:
        log(f"warning: {len(left)} machine path(s) left in the published copy, e.g. " + "; ".join(left[:5]))
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
    parameters hold the run's settings, its folders as placeholders such as ``DATA_DIR``). sphinx-book-theme builds each
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


def main(argv: list[str] | None = None) -> int:
    parser = command.parser(
        "cxr_utils.publish", "Publish a run into the book (portable copies in book/executed/), then build the book.",
        "0 published (and built); 1 a folder of the machine is left in the published copy (listed), or the "
        "book build failed; 2 bad arguments.")
    parser.add_argument("results_dir", nargs="?", type=Path,
                        help="the run's results folder (results/<profile>), as python -m cxr_utils.run wrote it")
    parser.add_argument("--republish", action="store_true",
                        help="publish the run already in --book-dir again, with this publishing code")
    parser.add_argument("--book-dir", type=Path, default=BOOK_EXECUTED_DIR, help="default: book/executed")
    parser.add_argument("--no-build", action="store_true", help="publish only; do not build the book")
    args = parser.parse_args(argv)
    if (args.results_dir is None) == (not args.republish):
        parser.error("give a results folder, or --republish")
    with tempfile.TemporaryDirectory() as scratch:
        results = results_of_published(args.book_dir, Path(scratch) / "results") if args.republish else args.results_dir
        published = publish_to_book(results, args.book_dir)
    print(f"published into {published}")
    left = machine_paths(published)
    for path in left[:20]:
        print(f"  {path}")
    if left:
        return command.fail(f"{len(left)} folder(s) of this machine left in the published copy (listed above)",
                            command.EXIT_FAILED)
    if not args.no_build:
        root = Path(args.book_dir).resolve().parents[1]
        try:
            print(f"the book: {build_book(root) / 'index.html'}")
        except SeriesError as error:
            return command.fail(error, command.EXIT_FAILED)
    return command.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
