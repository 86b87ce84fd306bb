"""The tables the chapters show (cxr_utils.glance.reader_table and show_table): the columns a reader
needs, figures rounded, a value and its interval in one cell "0.83 [0.74, 0.89]", and a link to the
whole CSV that resolves on the executed page."""

import ast
import importlib
import json
import re

import numpy as np
import pandas as pd
import pytest

from cxr_utils import glance, publish, run, run_pages

PUBLISHED = publish.BOOK_EXECUTED_DIR / glance.PUBLISHED_RESULTS
INTERVAL = re.compile(r"^\d\.\d\d \[\d\.\d\d, \d\.\d\d\]$")
VALUE = {"value [95% interval]": ("value", "low", "high")}


def _published(relative: str) -> pd.DataFrame:
    path = PUBLISHED / relative
    if not path.is_file():
        pytest.skip("no run published in book/executed/ yet")
    return pd.read_csv(path)


def test_metrics_show_four_columns_with_each_interval_in_one_cell():
    metrics = _published("evaluation/metrics.csv")  # model, metric, value, low, high, method, successes, trials, n
    shown = glance.reader_table(metrics, ["model", "metric", "value [95% interval]", "n"], intervals=VALUE)
    assert list(shown.columns) == ["model", "metric", "value [95% interval]", "n"]
    assert len(shown) == len(metrics) and isinstance(shown.index, pd.RangeIndex)
    assert all(INTERVAL.match(cell) for cell in shown["value [95% interval]"]), shown
    first = metrics.iloc[0]
    assert shown.loc[0, "value [95% interval]"] == glance.interval(first["value"], first["low"], first["high"])
    assert shown["n"].tolist() == [str(n) for n in metrics["n"]]  # whole numbers as they are
    # Three decimals when asked, never more.
    three = glance.reader_table(metrics, ["value [95% interval]"], intervals=VALUE, digits=3)
    assert all(re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", cell) for cell in three["value [95% interval]"])


def test_a_wide_table_becomes_the_few_columns_its_page_needs():
    blanked = _published("shortcuts/blanked/results.csv")  # 19 columns
    assert len(blanked.columns) >= 14
    shown = glance.reader_table(
        blanked,
        {"model": "model", "n": "test images", "intact": "accuracy, intact", "blanked": "accuracy, lungs blanked",
         "mcnemar_p": "p (McNemar)"},
        intervals={"intact": ("intact_accuracy", "intact_accuracy_low", "intact_accuracy_high"),
                   "blanked": ("blanked_accuracy", "blanked_accuracy_low", "blanked_accuracy_high")})
    assert list(shown.columns) == ["model", "test images", "accuracy, intact", "accuracy, lungs blanked", "p (McNemar)"]
    complete = blanked["status"] == "complete"
    assert all(INTERVAL.match(cell) for cell in shown.loc[complete, "accuracy, intact"])
    assert shown["p (McNemar)"].tolist() == [glance.p_value(p) for p in blanked["mcnemar_p"]]  # 2 significant digits


def test_history_rounds_to_three_decimals_and_says_which_epoch_was_kept():
    history = _published("lstm/history.csv")
    shown = glance.reader_table(history, {"epoch": "epoch", "accuracy": "training accuracy", "val_loss": "validation loss",
                                          "is_best": "kept"}, digits=3)
    assert list(shown.columns) == ["epoch", "training accuracy", "validation loss", "kept"]
    assert all(re.fullmatch(r"\d+\.\d{3}", cell) for cell in shown["validation loss"])
    assert shown["kept"].tolist().count("yes") == 1 and set(shown["kept"]) <= {"yes", "no"}
    assert shown["epoch"].tolist() == [str(e) for e in history["epoch"]]


def test_without_columns_each_interval_takes_its_value_columns_place():
    metrics = _published("evaluation/metrics.csv")
    shown = glance.reader_table(metrics, intervals=VALUE)
    assert list(shown.columns) == ["model", "metric", "value [95% interval]", "method", "successes", "trials", "n"]


def test_the_index_is_a_column_and_missing_values_are_dashes():
    one_model = _published("evaluation/metrics.csv").query("model == 'LSTM'").set_index("metric")
    shown = glance.reader_table(one_model, ["metric", "value [95% interval]"], intervals=VALUE)
    assert shown["metric"].tolist() == ["accuracy", "precision", "recall", "f1"]
    unnamed = pd.DataFrame({"paper": [0.509, 0.765], "this run": [0.6895, np.nan]}, index=["train_loss", "train_accuracy"])
    shown = glance.reader_table(unnamed, digits=3)
    assert list(shown.columns) == ["", "paper", "this run"]
    assert shown.values.tolist() == [["train_loss", "0.509", "0.690"], ["train_accuracy", "0.765", glance.MISSING]]
    gaps = pd.DataFrame({"value": [np.nan, 0.5], "low": [np.nan, np.nan], "high": [np.nan, np.nan]})
    assert glance.reader_table(gaps, intervals=VALUE)["value [95% interval]"].tolist() == [glance.MISSING, "0.50 [–, –]"]


def test_an_unknown_column_is_named():
    with pytest.raises(KeyError, match="accuracy_lo"):
        glance.reader_table(pd.DataFrame({"accuracy": [0.5]}), intervals={"a": ("accuracy", "accuracy_lo", "accuracy")})


def test_show_table_is_markdown_aligned_with_the_whole_csv_linked():
    metrics = _published("evaluation/metrics.csv")
    text = glance.show_table(metrics, ["model", "metric", "value [95% interval]", "n"], intervals=VALUE,
                             csv="evaluation/metrics.csv", rows=5).data
    lines = text.splitlines()
    assert re.fullmatch(r"\| model +\| metric +\| +value \[95% interval\] \| +n \|", lines[0]), lines[0]
    rule = [cell.strip() for cell in lines[1].strip("|").split("|")]
    assert [cell.startswith(":") for cell in rule] == [True, True, False, False]  # text left, figures right
    assert [cell.endswith(":") for cell in rule] == [False, False, True, True]
    assert len([line for line in lines if line.startswith("| ")]) == 1 + 5
    assert f"The first 5 of {len(metrics)} rows." in text
    assert f"[`evaluation/metrics.csv`]({glance.PUBLISHED_RESULTS}/evaluation/metrics.csv)" in text
    piped = glance.show_table(pd.DataFrame({"files": ["a|b"]})).data
    assert "a\\|b" in piped


def _linked_csvs(path) -> list:
    """Every CSV a chapter links: the ``csv=`` of its show_table calls and the paths given to
    csv_note, evaluated with the package's modules."""
    cells = json.loads(path.read_text())["cells"]
    tree = ast.parse("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr == "show_table":
            found += [k.value for k in node.keywords if k.arg == "csv"]
        elif node.func.attr == "csv_note":
            found += node.args[:1]
    linked = []
    for expression in found:
        names = {n.id for n in ast.walk(expression) if isinstance(n, ast.Name)}
        namespace = {}
        for name in names:
            try:
                namespace[name] = importlib.import_module(f"cxr_utils.{name}")
            except ModuleNotFoundError:
                pass  # a comprehension's own variable
        value = eval(compile(ast.Expression(expression), path.name, "eval"), namespace)
        linked += [value] if isinstance(value, str) else list(value)
    return linked


@pytest.mark.parametrize("chapter", ["01_data_collection", "02_preprocessing", "04_lstm", "06_evaluation",
                                     "07_comparison", "08_shortcuts"])
def test_every_csv_a_chapter_links_is_in_the_published_run(chapter):
    if not (PUBLISHED / "run.json").is_file():
        pytest.skip("no run published in book/executed/ yet")
    linked = _linked_csvs(run.NOTEBOOKS_DIR / f"{chapter}.ipynb")
    assert linked, f"{chapter} links no CSV"
    # The link is relative to the executed page, which lies beside the published results folder.
    missing = [csv for csv in linked if not (publish.BOOK_EXECUTED_DIR / glance.PUBLISHED_RESULTS / csv).is_file()]
    assert not missing, f"{chapter} links {missing}, not in the published run"


def test_the_report_tables_are_the_chapters_tables_joined():
    from cxr_utils import comparison

    if not (PUBLISHED / "evaluation" / "metrics.csv").is_file():
        pytest.skip("no run published in book/executed/ yet")
    parts = glance.paper_tables(comparison.compare_with_paper(PUBLISHED),
                                pd.read_csv(PUBLISHED / "extended" / "evaluation" / "mcnemar.csv"))
    assert list(parts) == ["table2", "confusion", "table6", "table7", "mcnemar"]
    assert run_pages.tables_markdown(PUBLISHED) == "\n".join(parts.values())
