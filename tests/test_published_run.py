"""The run the book renders (book/executed/) must come from the notebook sources as they are."""

import csv
import json
import os
import shutil

import pytest

from cxr_utils import portable, publish, run


def test_published_run_matches_the_notebook_sources():
    if not (publish.BOOK_EXECUTED_DIR / "run.json").is_file():
        pytest.skip("no run published in book/executed/ yet (python -m cxr_utils.run --profile paper --book)")
    assert publish.drift() == []


def test_each_page_shows_the_parameters_the_run_used():
    """Not the notebook's defaults (the paper's): a page never shows epochs = 15 above a 2-epoch run."""
    record_path = publish.BOOK_EXECUTED_DIR / "run.json"
    if not record_path.is_file():
        pytest.skip("no run published in book/executed/ yet")
    settings = json.loads(record_path.read_text())["settings"]
    for name in run.series():
        notebook = json.loads((publish.BOOK_EXECUTED_DIR / f"{name}.ipynb").read_text())
        shown = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
        assert shown["source"][0] == portable.RUN_VALUES_NOTE, name
        assert "remove-cell" not in shown["metadata"]["tags"], name
        for line in shown["source"][1:]:
            parameter, _, value = line.partition(" = ")
            if parameter in settings and parameter not in ("data_dir", "results_dir", "cache_dir"):
                assert value.split("  #")[0].strip() == repr(settings[parameter]).replace("'", '"'), (name, line)


def test_the_shown_parameters_are_the_injected_ones_comments_kept():
    notebook = {"cells": [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]},
         "source": ["seed = 42\n", "epochs = 15  # paper: 15\n", "weights = \"imagenet\"  # the paper's\n",
                    "drive_folder = None"]},
        {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]},
         "source": ["# Parameters\n", "epochs = 2\n", "weights = None\n", "profile = \"sample\"\n"]}]}
    shown = portable.show_run_parameters(notebook)["cells"]
    assert shown[0]["source"] == [portable.RUN_VALUES_NOTE, "seed = 42\n", "epochs = 2  # paper: 15\n",
                                  "weights = None  # the paper's\n", "drive_folder = None"]
    assert "remove-cell" in shown[1]["metadata"]["tags"]
    assert portable.show_run_parameters(notebook)["cells"][0]["source"][1] == "seed = 42\n"  # twice: the same


def _fake_published_run(tmp_path):
    notebooks = tmp_path / "notebooks"
    shutil.copytree(run.NOTEBOOKS_DIR, notebooks)
    book = tmp_path / "executed"
    book.mkdir()
    record = {"notebooks": {}}
    for name in run.series():
        shutil.copy2(notebooks / f"{name}.ipynb", book / f"{name}.ipynb")
        record["notebooks"][name] = {"status": "ok", "code_sha256": run.code_hash(notebooks / f"{name}.ipynb")}
    (book / "run.json").write_text(json.dumps(record))
    return notebooks, book


def test_drift_check_fails_when_a_notebooks_code_changes(tmp_path):
    notebooks, book = _fake_published_run(tmp_path)
    assert publish.drift(book, notebooks) == []
    path = notebooks / "05_resnet50_lstm.ipynb"
    notebook = json.loads(path.read_text())
    code = next(c for c in notebook["cells"] if c["cell_type"] == "code" and "prepare_inputs" in "".join(c["source"]))
    code["source"] = "".join(code["source"]).replace("cache_dir=cache_dir", "cache_dir=None")
    path.write_text(json.dumps(notebook))
    problems = publish.drift(book, notebooks)
    assert len(problems) == 1 and problems[0].startswith("05_resnet50_lstm: its code changed")


def test_drift_check_ignores_prose_and_reports_missing_runs(tmp_path):
    notebooks, book = _fake_published_run(tmp_path)
    path = notebooks / "01_data_collection.ipynb"
    notebook = json.loads(path.read_text())
    notebook["cells"][0]["source"] = "# A new title"
    path.write_text(json.dumps(notebook))
    assert publish.drift(book, notebooks) == []
    record = json.loads((book / "run.json").read_text())
    record["notebooks"]["07_comparison"]["status"] = "failed"
    (book / "run.json").write_text(json.dumps(record))
    assert publish.drift(book, notebooks) == ["07_comparison: not executed successfully in the published run"]
    (book / "run.json").unlink()
    assert "missing" in publish.drift(book, notebooks)[0]


def test_the_book_renders_the_published_run_without_retraining(book_copy):
    if not (publish.BOOK_EXECUTED_DIR / "run.json").is_file():
        pytest.skip("no run published in book/executed/ yet")
    root = book_copy()
    html = publish.build_book(root)
    record = json.loads((publish.BOOK_EXECUTED_DIR / "run.json").read_text())
    report = (html / "book" / "report.html").read_text()
    # The findings, claims and tables of the published run are on the page; its figures (the
    # paper's Figures 3-5 drawn again, the paper beside this run) are published, and shown by the
    # chapters the report links.
    for text in ("Ranking", "Selection optimism", "ResNet50-LSTM reaches 95% accuracy", "Table 7"):
        assert text in report, text
    for figure in ("curves_resnet50", "curves_lstm", "curves_resnet50_lstm", "paper_vs_ours"):
        assert (root / "book" / "executed" / "figures" / f"{figure}.png").is_file()
    for chapter in ("03_resnet50", "04_lstm", "05_resnet50_lstm", "07_comparison"):
        assert f'href="executed/{chapter}.html"' in report, chapter
        assert "<img" in (html / "book" / "executed" / f"{chapter}.html").read_text(), chapter
    if record["settings"].get("weights") is None:
        assert "trained from scratch" in report
        import papermill

        for name in run.series()[2:]:
            if "weights" not in papermill.inspect_notebook(str(run.NOTEBOOKS_DIR / f"{name}.ipynb")):
                continue  # the banner goes with the weights setting: chapters 3 and 5
            page = (html / "book" / "executed" / f"{name}.html").read_text()
            assert "Trained from scratch" in page, name
    reproducibility = (html / "book" / "reproducibility.html").read_text()
    assert str(record["wall_time_s"]) in reproducibility
    # The measured benchmark tables (benchmarks/speed.py --markdown) are on the appendix page.
    appendix = (html / "book" / "appendix_benchmarks.html").read_text()
    assert "way (frozen backbone in fit, every epoch) vs fast path" in appendix
    assert "train_images_per_s" in appendix


def test_published_tables_name_images_within_the_dataset(real_data):
    tables = sorted((publish.BOOK_EXECUTED_DIR / "results").rglob("*.csv"))
    if not tables:
        pytest.skip("no run published in book/executed/ yet")
    checked = 0
    for table in tables:
        with table.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows if rows and "path" in rows[0] else []:
            assert not os.path.isabs(row["path"]), f"{table}: absolute path {row['path']}"
            checked += 1
    assert checked
    with (publish.BOOK_EXECUTED_DIR / "results" / "manifest.csv").open(newline="") as handle:
        manifest = list(csv.DictReader(handle))
    assert all((real_data / row["path"]).is_file() for row in manifest)


def test_dataset_relative_paths_rewrites_only_the_path_column(tmp_path):
    data = tmp_path / "data"
    results = tmp_path / "results"
    (results / "model").mkdir(parents=True)
    covid, normal = data / "COVID" / "images" / "COVID-1.png", data / "Normal" / "images" / "Normal, 2.png"
    (results / "manifest.csv").write_text(
        f"path,class,phash\n{covid},COVID,1e5\n\"{normal}\",Normal,00ab\n")
    (results / "model" / "predictions.csv").write_text(f"path,probability\n{covid},0.073815696\n/elsewhere/x.png,0.5\n")
    (results / "metrics.csv").write_text("model,value\nLSTM,0.61\n")

    assert portable.dataset_relative_paths(results) == str(data)
    assert (results / "manifest.csv").read_text() == (
        'path,class,phash\nCOVID/images/COVID-1.png,COVID,1e5\n"Normal/images/Normal, 2.png",Normal,00ab\n')
    # Numbers keep their text; a path outside the dataset is left as it was.
    assert (results / "model" / "predictions.csv").read_text() == (
        "path,probability\nCOVID/images/COVID-1.png,0.073815696\n/elsewhere/x.png,0.5\n")
    assert (results / "metrics.csv").read_text() == "model,value\nLSTM,0.61\n"
    # Published once already: nothing to anchor on, nothing changes.
    assert portable.dataset_relative_paths(results) is None
    assert (results / "manifest.csv").read_text().startswith("path,class,phash\nCOVID/images/")
