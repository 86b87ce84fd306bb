"""Chapter 8 on a run's files (cxr_utils.shortcut_run): the lung_box parameter, the summary and
its costs, read from the run published in the book and from constructed records."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cxr_utils import config, shortcut_run
from cxr_utils.report import duration_text
from cxr_utils.shortcuts import LungBox

PUBLISHED = Path(__file__).resolve().parents[1] / "book" / "executed" / "results"


def test_lung_box_parameter_becomes_a_box_or_is_refused():
    assert shortcut_run.lung_box((0.1, 0.2, 0.5, 0.6)) == LungBox(0.1, 0.2, 0.5, 0.6)
    box = LungBox()
    assert shortcut_run.lung_box(box) is box
    for bad in ((0.1, 0.2, 0.5), "box", (0.1, 0.2, 0.95, 0.5)):
        with pytest.raises(ValueError):
            shortcut_run.lung_box(bad)


def _record(path: Path, seconds: float, cpu: str = "Test CPU", batchnorm_check: bool = False) -> None:
    """A model's run record; with ``batchnorm_check``, a history with the paired check's columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"wall_time_s": seconds, "hardware": {"cpu": cpu, "cpu_count": 2,
                                                                      "accelerator": "CPU only"}}))
    columns = ["val_accuracy", *(config.PAIRED_CHECK_COLUMNS if batchnorm_check else ())]
    pd.DataFrame([[0.5] * len(columns)], columns=columns).to_csv(path.parent / "history.csv", index=False)


def test_costs_are_read_from_the_models_run_records(tmp_path):
    assert shortcut_run.costs_markdown(tmp_path) == ""  # nothing blanked: nothing said
    for k, spec in enumerate(config.REGISTRY.values(), 1):
        _record(tmp_path / spec.id / "run.json", 100.0 * k, batchnorm_check=k == 1)
        _record(tmp_path / shortcut_run.BLANKED_DIR / spec.id / "run.json", 90.0 * k)
    (tmp_path / "run.json").write_text(json.dumps({"notebooks": {"08_shortcuts": {"wall_time_s": 1234.0}}}))
    text = shortcut_run.costs_markdown(tmp_path)
    n = len(config.REGISTRY)
    total = n * (n + 1) / 2
    assert f"took {duration_text(90 * total)}" in text
    assert f"against {duration_text(100 * total)} for the intact models" in text
    assert "Test CPU, 2 cores, CPU only" in text and "The chapter's notebook took 20 min 34 s (the run record)." in text
    first = next(iter(config.REGISTRY.values())).paper_name
    assert f"{first} 1 min 30 s against 1 min 40 s intact" in text
    assert f"The intact {first} times include the paired BatchNorm check" in text  # only the first was checked
    # Trained beside the run (study blanked's record holds their times), before the chapter's 17 s.
    (tmp_path / shortcut_run.BLANKED_DIR / "blanked.json").write_text(
        json.dumps({"runs": {spec.id: {"wall_time_s": 90.0 * k} for k, spec in enumerate(config.REGISTRY.values(), 1)}}))
    (tmp_path / "run.json").write_text(json.dumps({"notebooks": {"08_shortcuts": {"wall_time_s": 17.0}}}))
    text = shortcut_run.costs_markdown(tmp_path)
    assert "took 17 s (the run record): the blanked models were trained before it" in text


def test_the_published_runs_summary_uses_its_own_box_and_tables(tmp_path):
    if not (PUBLISHED / shortcut_run.BASELINES_CSV).is_file():
        pytest.skip("the published run has no chapter 8")
    run = Path(shutil.copytree(PUBLISHED, tmp_path / "run"))
    text = shortcut_run.summary_markdown(run)
    for heading in ("What this means for the paper's claims", "Simple baselines",
                    "The models with the lungs blanked", "Where Grad-CAM looks", "What a fixed box cannot tell",
                    "What it cost"):
        assert f"### {heading}" in text
    # A box saved with the run (another size) is the one the summary measures against.
    saved = json.loads((run / shortcut_run.BOX_JSON).read_text())
    (run / shortcut_run.BOX_JSON).write_text(json.dumps({**saved, "height": 0.3, "width": 0.3}))
    area = LungBox(saved["top"], saved["left"], 0.3, 0.3).area_fraction(saved["image_size"])
    assert f"lung box ({area:.0%} of the image)" in shortcut_run.summary_markdown(run)


def test_each_model_is_paired_with_the_border_baseline_on_the_same_images(tmp_path):
    import numpy as np
    import pandas as pd

    from cxr_utils import baselines, metrics

    labels = np.repeat([1, 0], 20)
    paths = [f"x{i}.png" for i in range(40)]
    baseline_right = np.arange(40) < 24  # the first 24 images
    baseline = np.where(baseline_right, labels, 1 - labels)
    (tmp_path / "shortcuts").mkdir()
    pd.DataFrame({"baseline": "border", "test_set": "test", "path": paths[::-1], "label": labels[::-1],
                  "probability": baseline[::-1], "predicted": baseline[::-1]}).to_csv(
        tmp_path / baselines.PREDICTIONS_CSV, index=False)  # in another order: joined on the path
    assert shortcut_run.baseline_pairs(tmp_path) is None  # no model predictions yet
    for k, spec in enumerate(config.REGISTRY.values()):
        right = np.arange(40) >= 4 * k  # all right, then fewer
        predicted = np.where(right, labels, 1 - labels)
        (tmp_path / spec.id).mkdir()
        pd.DataFrame({"path": paths, "label": labels, "probability": predicted, "predicted": predicted}).to_csv(
            tmp_path / spec.id / "predictions.csv", index=False)
    pairs = shortcut_run.baseline_pairs(tmp_path).set_index("model")
    first = next(iter(config.REGISTRY.values())).paper_name
    # All 40 right against the baseline's 24: the model alone on the 16 the baseline got wrong.
    assert (pairs.loc[first, "model_only"], pairs.loc[first, "baseline_only"]) == (16, 0)
    expected = metrics.mcnemar_test(labels, labels, baseline)["p_value"]
    assert pairs.loc[first, "p_value"] == pytest.approx(expected) and expected < 0.001
    assert pairs.loc[first, "accuracy"] == 1.0
    other = pd.read_csv(tmp_path / "lstm" / "predictions.csv").head(30)
    other.to_csv(tmp_path / "lstm" / "predictions.csv", index=False)
    with pytest.raises(ValueError, match="different test images"):
        shortcut_run.baseline_pairs(tmp_path)
