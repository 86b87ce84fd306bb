"""The model card: Mitchell et al.'s sections, written from a run's files only (a results folder
or a published copy), external and shortcut results when present, and written by the series."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pandas as pd
import pytest

from cxr_utils import config, external, model_card, model_card_run, predict, prose, report, shortcut_run

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = REPO_ROOT / "book" / "executed" / "results"


@pytest.fixture
def published_copy(tmp_path):
    """A copy of the run published in the book (no model weights, dataset-relative image paths)."""
    if not (PUBLISHED / "run.json").is_file():
        pytest.skip("no published run in book/executed/results")
    return Path(shutil.copytree(PUBLISHED, tmp_path / "published"))


def _headings(text: str, level: str = "##") -> list[str]:
    return re.findall(rf"^{level} (.+)$", text, flags=re.MULTILINE)


def _interval_texts(table: pd.DataFrame) -> list[str]:
    return [predict.interval_text(r.value, r.low, r.high) for r in table.itertuples()]


def _check_card(text: str, results_dir: Path) -> None:
    """What every card holds: the sections in order, the notice, no folder of the machine."""
    assert _headings(text) == list(model_card.SECTIONS)
    assert text.startswith("# Model card") and text.count(report.DISCLAIMER) >= 2
    assert str(results_dir) not in text and "/work/" not in text and "/tmp/" not in text
    for spec in config.REGISTRY.values():
        assert spec.paper_name in text and f"`{spec.builder}`" in text


def test_the_card_of_a_published_run_reads_its_files(published_copy):
    path = model_card.write(published_copy)
    assert path == published_copy / model_card.CARD_FILE
    text = path.read_text()
    _check_card(text, published_copy)
    for table in ("metrics.csv", "mcnemar.csv"):
        assert (published_copy / "evaluation" / table).is_file()
    for row in pd.read_csv(published_copy / "evaluation" / "mcnemar.csv").itertuples():  # p as every page writes it
        p_value = re.escape(report.p_value(row.p_value))
        assert re.search(rf"\| +{row.a_only_correct} +\| +{row.b_only_correct} +\| +{p_value} \|", text)
    for value in _interval_texts(pd.read_csv(published_copy / "evaluation" / "metrics.csv")):
        assert value in text
    for value in _interval_texts(pd.read_csv(published_copy / "extended" / "evaluation" / "metrics.csv")):
        assert value in text
    for model_id in config.REGISTRY:
        record = json.loads((published_copy / model_id / "run.json").read_text())
        metrics = json.loads((published_copy / model_id / "metrics.json").read_text())
        assert f"{record['settings']['parameters']:,}" in text
        test = metrics["test"]
        assert f"| {test['tp']} | {test['fn']} | {test['fp']} | {test['tn']} |" in re.sub(r" +", " ", text)
    assert "auc" in text and "brier" in text
    has_shortcuts = (published_copy / shortcut_run.SHORTCUTS_DIR / "baselines.csv").is_file()
    assert ("No shortcut analysis has been run" in text) is not has_shortcuts
    assert "External data:** none evaluated yet" in text


def test_shortcut_results_appear_when_present(published_copy):
    shutil.rmtree(published_copy / shortcut_run.SHORTCUTS_DIR, ignore_errors=True)
    assert "No shortcut analysis has been run" in model_card.markdown(published_copy)
    (published_copy / shortcut_run.SHORTCUTS_DIR).mkdir()
    pd.DataFrame({"model": ["ResNet50"], "n": [100], "mean_lung_share": [0.61234], "box_area_share": [0.53]}).to_csv(
        published_copy / shortcut_run.GRADCAM_CSV, index=False)
    text = model_card.markdown(published_copy)
    assert "No shortcut analysis has been run" not in text
    assert f"`{shortcut_run.GRADCAM_CSV}`" in text and "0.6123" in text
    assert "Where Grad-CAM looks" in text  # the chapter's summary, written from the table


def test_the_card_without_its_notice_is_an_error_not_a_card():
    """StrictUndefined: a value the card's template names and its caller leaves out raises. (That
    every template is used and given exactly the values it names: tests/test_prose.py.)"""
    values = {"title": True, "models": ["LSTM"], "profile": None, "recorded": None, "sections": []}
    with pytest.raises(jinja2.UndefinedError, match="disclaimer"):
        prose.render("card.md.j2", **values)  # the notice left out: an error, not a card without it
    assert report.DISCLAIMER in prose.render("card.md.j2", **values, disclaimer=report.DISCLAIMER)


def test_a_folder_without_trained_models_has_no_card(tmp_path):
    with pytest.raises(model_card.ModelCardError, match="no trained model"):
        model_card.write(tmp_path)
    assert model_card.main([str(tmp_path / "nowhere")]) == 2


def test_builder_defaults_are_read_without_importing_keras(published_copy):
    assert model_card_run.builder_defaults(config.REGISTRY["lstm"]) == {"lstm_units": "(32, 16, 8)", "dropout": "0.2"}
    code = ("import sys; from cxr_utils import model_card; model_card.markdown(sys.argv[1]); "
            "assert 'keras' not in sys.modules, 'keras imported'")
    result = subprocess.run([sys.executable, "-c", code, str(published_copy)], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_series_writes_the_card_after_chapter_7_only(published_copy, monkeypatch):
    import papermill

    from cxr_utils import run

    monkeypatch.setattr(papermill, "execute_notebook", lambda *args, **kwargs: None)
    monkeypatch.setattr(run, "_notebook_parameters", lambda path, parameters: {})
    parameters = run.profile_parameters("sample", results_dir=published_copy)
    (published_copy / "run.json").unlink()  # a run of its own, not a continuation of the published one
    run.execute_series(parameters, notebooks=("06_evaluation",), progress=False, log=lambda line: None)
    assert not (published_copy / model_card.CARD_FILE).exists()
    logged = []
    run.execute_series(parameters, notebooks=("06_evaluation", "07_comparison"), progress=False, log=logged.append)
    card = published_copy / model_card.CARD_FILE
    assert card.is_file() and f"model card: {card}" in logged
    assert "profile `sample`" in card.read_text()  # read from the run.json the series just wrote


@pytest.mark.slow
def test_the_card_of_a_run_holds_its_numbers_and_its_external_evaluation(small_run_copy, external_folder):
    run = small_run_copy
    external.evaluate(external_folder["folder"], run, name="hospital-x", models=["lstm"], log=lambda line: None)
    text = model_card.write(run).read_text()
    _check_card(text, run)
    for folder in ("evaluation", "extended/evaluation", "external/hospital-x/evaluation"):
        for table in ("metrics.csv", "probability_metrics.csv"):
            for value in _interval_texts(pd.read_csv(run / folder / table)):
                assert value in text, (folder, table, value)
    counts = json.loads((run / "external" / "hospital-x" / "external.json").read_text())["counts"]
    assert (f"{counts['files']} files, {counts['unreadable']} unreadable, {counts['excluded']} excluded" in text)
    settings = json.loads((run / "resnet50" / "run.json").read_text())["settings"]
    assert f"| image size (px) | {settings['image_size']} | {config.PROTOCOL.image_size} |" in text
    assert f"{settings['parameters']:,}" in text and "ImageNet weights from file" in text
    assert "Test set → external folder `hospital-x`, accuracy" in text
