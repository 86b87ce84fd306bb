"""Execute the notebook series with papermill, under a named profile, and record the run.

    python -m cxr_utils.run --profile sample --data-dir /path/to/COVID-19_Radiography_Dataset
    python -m cxr_utils.run --profile paper            # downloads the data and ImageNet weights
    python -m cxr_utils.run --profile paper -p weights=None -p epochs=5

Each notebook is executed in order into ``RESULTS_DIR/notebooks/``; the first failing cell stops
the series with the notebook and cell named. ``RESULTS_DIR/run.json`` records the profile, the
parameters, package versions, hardware, git commit, a hash of each notebook's code and the wall
time per notebook. With ``--book``, the executed notebooks and the run record are copied into
``book/executed/`` and the Jupyter Book is built from them. Explained in book/reproducibility.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from cxr_utils.config import PROTOCOL, REGISTRY, parse_weights

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BOOK_EXECUTED_DIR = REPO_ROOT / "book" / "executed"

def series() -> tuple[str, ...]:
    """The notebooks in reading order: data, preprocessing, one chapter per model of
    ``config.REGISTRY``, evaluation, comparison."""
    return ("01_data_collection", "02_preprocessing", *(spec.chapter for spec in REGISTRY.values()),
            "06_evaluation", "07_comparison")


# Every knob a profile may set; each notebook receives the ones its parameters cell declares.
PROFILES = {
    # The paper's protocol (config.PROTOCOL): 500 + 500 images, 80/10/10, 15 epochs, batch 32,
    # ResNet50 with ImageNet weights.
    "paper": {
        "n_per_class": PROTOCOL.n_per_class,
        "epochs": PROTOCOL.epochs,
        "batch_size": PROTOCOL.batch_size,
        "seed": PROTOCOL.seed,
        "weights": PROTOCOL.weights,
        "image_size": PROTOCOL.image_size,
        "extended_test_size": None,  # every image the run did not use
    },
    # What CI runs: the same code on a small real subset, from scratch, in minutes on 2 CPU cores.
    # Its numbers show that the pipeline works, not how good the models are.
    "sample": {
        "n_per_class": 60,
        "epochs": 2,
        "batch_size": 16,
        "seed": PROTOCOL.seed,
        "weights": None,
        "image_size": PROTOCOL.image_size,
        "extended_test_size": 60,
    },
}


def install_cell_source(config_path: Path = REPO_ROOT / "_config.yml") -> str:
    """The first code cell of every notebook: on Google Colab, install this project from the
    repository that ``_config.yml`` names (the one place its address is written); everywhere,
    say which accelerator Keras sees. tests/test_notebooks.py keeps the notebooks in step."""
    import yaml

    url = yaml.safe_load(Path(config_path).read_text())["repository"]["url"]
    return (
        "# On Google Colab, install this project first; then say which accelerator Keras sees.\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        "    import subprocess\n"
        "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\",\n"
        f"                    \"git+{url}.git\"], check=True)\n"
        "from cxr_utils import runtime\n"
        "print(runtime.accelerator_summary())"
    )


class SeriesError(RuntimeError):
    """A notebook of the series failed; the message names the notebook and the cell."""


def parse_value(text: str):
    """``-p name=value`` values: Python literals (None, 15, 0.5, 'x'), anything else a string."""
    if text.lower() == "none":
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def code_hash(notebook_path: Path) -> str:
    """SHA-256 of a notebook's code cells (sources only), to tell when results and code drift."""
    notebook = json.loads(Path(notebook_path).read_text())
    digest = hashlib.sha256()
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = cell["source"]
            digest.update(("".join(source) if isinstance(source, list) else source).encode())
            digest.update(b"\0")
    return digest.hexdigest()


def profile_parameters(profile: str, data_dir=None, results_dir=None, overrides=None) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    parameters = dict(PROFILES[profile])
    parameters["data_dir"] = None if data_dir is None else str(Path(data_dir).resolve())
    parameters["results_dir"] = str(Path(results_dir or REPO_ROOT / "results" / profile).resolve())
    parameters["cache_dir"] = str((REPO_ROOT / ".cache" / "images").resolve())
    parameters["profile"] = profile
    unknown = set(overrides or {}) - set(parameters)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(parameters))}"
        )
    parameters.update(overrides or {})
    parameters["weights"] = parse_weights(parameters["weights"])
    return parameters


def _notebook_parameters(path: Path, parameters: dict) -> dict:
    import papermill

    declared = papermill.inspect_notebook(str(path))
    return {name: value for name, value in parameters.items() if name in declared}


def execute_series(
    parameters: dict, notebooks=None, progress: bool = True, log=print
) -> dict:
    """Execute ``notebooks`` (default: the whole ``series()``) in order with papermill; write
    and return the run record."""
    notebooks = notebooks or series()
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from cxr_utils import runtime

    results_dir = Path(parameters["results_dir"])
    executed_dir = results_dir / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    record = runtime.run_record(parameters, notebooks={}, profile=parameters.get("profile"))
    saved_env = {name: os.environ.get(name) for name in ("PATH", "MPLBACKEND", "TF_CPP_MIN_LOG_LEVEL")}
    # The kernel must be this interpreter's, also when the virtual environment is not activated.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), saved_env["PATH"] or ""])
    # Figures must land in the executed notebooks, whatever backend the caller's shell sets.
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    # TensorFlow's C++ log lines (start-up notes, harmless graph warnings) would land in every executed
    # notebook; Python errors still raise.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    start = time.perf_counter()
    try:
        for index, name in enumerate(notebooks, 1):
            source = NOTEBOOKS_DIR / f"{name}.ipynb"
            if not source.is_file():
                raise SeriesError(f"notebook {source} is missing; restore it from git")
            log(f"[{index}/{len(notebooks)}] {name} ...")
            notebook_start = time.perf_counter()
            entry = {"code_sha256": code_hash(source), "status": "running"}
            record["notebooks"][name] = entry
            try:
                papermill.execute_notebook(
                    str(source),
                    str(executed_dir / f"{name}.ipynb"),
                    parameters=_notebook_parameters(source, parameters),
                    kernel_name="python3",
                    cwd=str(NOTEBOOKS_DIR),
                    progress_bar=progress,
                )
            except PapermillExecutionError as error:
                entry.update(status="failed", wall_time_s=round(time.perf_counter() - notebook_start, 1))
                raise SeriesError(
                    f"{name}.ipynb failed in cell {error.cell_index} (execution count "
                    f"{error.exec_count}): {error.ename}: {error.evalue}. The executed notebook "
                    f"with the traceback is {executed_dir / f'{name}.ipynb'}"
                ) from None
            entry.update(status="ok", wall_time_s=round(time.perf_counter() - notebook_start, 1))
            log(f"    done in {entry['wall_time_s']:.0f} s")
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        record["wall_time_s"] = round(time.perf_counter() - start, 1)
        runtime.write_json(record, results_dir / "run.json")
    return record


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
    shutil.rmtree(book_dir, ignore_errors=True)
    staging.rename(book_dir)
    return book_dir


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
    """Sphinx extension (``_config.yml``: ``sphinx: extra_extensions: [cxr_utils.run]``): the
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cxr_utils.run", description="Execute the notebook series with papermill."
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="paper")
    parser.add_argument("--data-dir", help="dataset folder (default: download from Kaggle)")
    parser.add_argument("--results-dir", help="where results go (default: results/<profile>)")
    parser.add_argument(
        "-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
        help="override a profile parameter, e.g. -p epochs=5 -p weights=None",
    )
    parser.add_argument("--only", nargs="+", choices=series(), help="execute only these notebooks")
    parser.add_argument("--book", action="store_true", help="publish the run into the book and build it")
    args = parser.parse_args(argv)

    try:
        overrides = {}
        for item in args.parameter:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"-p {item!r}: write NAME=VALUE, e.g. -p epochs=5")
            overrides[name.strip()] = parse_value(value.strip())
        parameters = profile_parameters(args.profile, args.data_dir, args.results_dir, overrides)
        record = execute_series(parameters, notebooks=args.only)
        print(f"executed notebooks and run.json in {parameters['results_dir']} "
              f"({record['wall_time_s']:.0f} s)")
        if args.book:
            publish_to_book(Path(parameters["results_dir"]))
            html = build_book()
            print(f"book: {html / 'index.html'}")
    except (SeriesError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
