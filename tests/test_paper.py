"""cxr_utils.paper: the paper's numbers, transcribed and checked against each other and the text."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_utils import config, metrics, paper

PAPER_TEXT = Path(__file__).resolve().parents[2] / "shared" / "paper" / "original-paper-text.txt"
NAMES = ["ResNet50", "LSTM", "ResNet50-LSTM"]


def test_models_map_our_ids_to_the_papers_names_in_order():
    assert list(config.paper_names()) == ["resnet50", "lstm", "resnet50_lstm"]
    assert list(config.paper_names().values()) == NAMES


@pytest.mark.parametrize("table", [paper.table2, paper.confusion_counts, paper.table6])
def test_tables_are_indexed_by_the_papers_model_names(table):
    assert list(table().index) == NAMES and table().index.name == "model"


def test_table6_follows_from_tables_3_to_5():
    derived = pd.DataFrame.from_dict(
        {model: metrics.metrics_from_counts(**row) for model, row in paper.confusion_counts().iterrows()},
        orient="index",
    ).rename_axis("model")
    pd.testing.assert_frame_equal(derived.round(2), paper.table6())


def test_each_confusion_table_has_100_images_50_per_class():
    for name in NAMES:
        table = paper.confusion_table(name)
        assert table.to_numpy().sum() == 100
        assert table.sum(axis=1).tolist() == [50, 50]  # actual COVID, actual Normal


def test_confusion_table_has_the_orientation_of_metrics_confusion_matrix():
    y_true = np.repeat([1, 1, 0, 0], [47, 3, 4, 46])
    y_pred = np.repeat([1, 0, 1, 0], [47, 3, 4, 46])
    pd.testing.assert_frame_equal(
        paper.confusion_table("resnet50"), metrics.confusion_matrix(y_true, y_pred), check_dtype=False
    )


def test_confusion_table_rejects_unknown_models():
    with pytest.raises(ValueError, match="unknown model 'VGG16'.*'resnet50' \\('ResNet50'\\)"):
        paper.confusion_table("VGG16")


@pytest.mark.skipif(not PAPER_TEXT.is_file(), reason=f"paper text not found at {PAPER_TEXT}")
def test_table2_matches_the_paper_text():
    text = PAPER_TEXT.read_text(encoding="utf-8")
    for name, row in paper.table2().iterrows():
        printed = re.search(rf"^{re.escape(name)} ([\d. ]+)$", text, flags=re.MULTILINE).group(1).split()
        assert [float(value) for value in printed] == row.tolist(), name


@pytest.mark.skipif(not PAPER_TEXT.is_file(), reason=f"paper text not found at {PAPER_TEXT}")
def test_confusion_counts_match_the_paper_text():
    text = PAPER_TEXT.read_text(encoding="utf-8")
    printed = [int(n) for pair in re.findall(r"^Aktual (?:Covid-19|Normal) (\d+) (\d+)", text, re.MULTILINE)
               for n in pair]
    assert printed == paper.confusion_counts().to_numpy().reshape(-1).tolist()


def test_table7_as_printed():
    table = paper.table7()
    assert list(table.columns) == ["author", "data", "method", "accuracy", "precision", "recall", "f1"]
    assert len(table) == 6
    swastika = table.set_index("author").loc["W. Swastika"]
    assert swastika[["accuracy", "precision", "recall"]].tolist() == [0.93, 1.0, 0.86]
    assert np.isnan(swastika["f1"])  # printed as "-"
    assert table["f1"].isna().sum() == 2
    # The paper's own row repeats its Table 6.
    proposed = table.iloc[-1][["accuracy", "precision", "recall", "f1"]].astype(float)
    assert proposed.tolist() == paper.table6().loc["ResNet50-LSTM"].tolist()


def test_claims_rest_on_the_tables():
    claims = paper.claims()
    assert claims["id"].tolist() == [1, 2, 3]
    assert list(claims.columns) == ["id", "claim", "source", "paper_values"]
    assert claims.loc[0, "paper_values"] == {
        "ResNet50-LSTM accuracy": 0.95, "ResNet50-LSTM precision": 0.96,
        "ResNet50-LSTM recall": 0.94, "ResNet50-LSTM f1": 0.95,
    }
    assert claims.loc[1, "paper_values"] == {
        "ResNet50-LSTM accuracy": 0.95, "ResNet50 accuracy": 0.93, "LSTM accuracy": 0.84,
    }
    overfit = claims.loc[2, "paper_values"]
    assert overfit["ResNet50-LSTM val_loss"] > overfit["ResNet50-LSTM train_loss"]


@pytest.mark.parametrize("function", [paper.table2, paper.confusion_counts, paper.table6, paper.table7,
                                      paper.claims])
def test_each_call_returns_a_fresh_copy(function):
    expected, changed = function().copy(deep=True), function()
    changed[changed.columns[-1]] = "changed"  # a caller overwriting a column
    pd.testing.assert_frame_equal(function(), expected)
