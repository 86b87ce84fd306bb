"""``python -m cxr_utils.study adopt``: the notebook run of the study's protocol becomes the study's seed,
so one run stands behind every seed-42 number. On a copy of the published seed study: seed 43's own
model folders, written as a run's results folder, adopted back with one prediction changed."""

import json
import shutil

import pandas as pd
import pytest

from cxr_utils import config
from cxr_utils.study import adopt, cli
from cxr_utils.study.common import ADOPTED
from cxr_utils.study.publish import BOOK_STUDIES_DIR
from cxr_utils.study.seeds import StudyError

SEED = 43


def _run_from_seed(study, seed: int, run):
    """A run's results folder made of the study's own folders for ``seed``, with a run record of the
    study's protocol."""
    run.mkdir()
    shutil.copy2(study / f"seed-{seed}" / "split.csv", run / "split.csv")
    for model_id in config.REGISTRY:
        shutil.copytree(study / f"seed-{seed}" / model_id, run / model_id)
    settings = json.loads((study / "study.json").read_text())["settings"]
    record = {"settings": {**{k: settings[k] for k in adopt.SAME}, "seed": seed, "profile": "paper"},
              "created_utc": "2026-12-03T00:00:00+00:00", "git_commit": "abc"}
    (run / "run.json").write_text(json.dumps(record))
    return run


def _forget_adoptions(study):
    """The copy of the book's seed study as it was before any run was adopted (the book's has adopted
    its committed run), so each test adopts from the same start."""
    record = json.loads((study / "study.json").read_text())
    if record.pop(ADOPTED, None):
        (study / "study.json").write_text(json.dumps(record, indent=2))


@pytest.fixture
def study_and_run(tmp_path):
    study = tmp_path / "seeds"
    shutil.copytree(BOOK_STUDIES_DIR / "seeds", study)
    _forget_adoptions(study)
    return study, _run_from_seed(study, SEED, tmp_path / "run")


def test_the_run_replaces_the_seed_and_the_summary_follows(study_and_run):
    study, run = study_and_run
    predictions = pd.read_csv(run / "resnet50" / "predictions.csv")
    wrong = predictions.index[predictions["predicted"] == predictions["label"]][0]
    predictions.loc[wrong, "predicted"] = 1 - predictions.loc[wrong, "label"]  # one right answer made wrong
    predictions.to_csv(run / "resnet50" / "predictions.csv", index=False)
    before = pd.read_csv(study / f"seed-{SEED}" / "evaluation" / "metrics.csv").set_index(["model", "metric"])

    assert cli.main(["adopt", str(run), "--out", str(study)]) == 0
    after = pd.read_csv(study / f"seed-{SEED}" / "evaluation" / "metrics.csv").set_index(["model", "metric"])
    assert after.loc[("ResNet50", "accuracy"), "value"] == pytest.approx(before.loc[("ResNet50", "accuracy"), "value"] - 0.01)
    assert after.loc[("LSTM", "accuracy"), "value"] == before.loc[("LSTM", "accuracy"), "value"]
    record = json.loads((study / "study.json").read_text())
    assert record[ADOPTED][str(SEED)]["git_commit"] == "abc"
    assert all(entry["adopted_from_run"] for entry in record["runs"][str(SEED)].values())
    summary = pd.read_csv(study / "summary_metrics.csv")
    accuracies = [pd.read_csv(study / f"seed-{s}" / "evaluation" / "metrics.csv").set_index(["model", "metric"])
                  .loc[("ResNet50", "accuracy"), "value"] for s in record["settings"]["seeds"]]
    row = summary[(summary["model"] == "ResNet50") & (summary["metric"] == "accuracy")].iloc[0]
    assert row["mean"] == pytest.approx(sum(accuracies) / len(accuracies))
    assert not list(study.glob("*/*/model.keras")) and not list(study.glob(".*adopting"))
    assert f"Seed {SEED} is the book's committed run" in (study / "summary.md").read_text()

    record[ADOPTED] = {"42": {}, **record[ADOPTED]}  # an earlier run adopted too: the sentence names both
    (study / "study.json").write_text(json.dumps(record))
    assert cli.main(["summarise", str(study)]) == 0
    assert f"Seeds 42 and {SEED} are runs of the notebook series" in (study / "summary.md").read_text()

    # In the book, the copy keeps what publish keeps: the pages are written from the numbers, not kept.
    from cxr_utils.study import publish
    publish.drop_left_out(study)
    assert not list(study.rglob("*.md")) and (study / f"seed-{SEED}" / "evaluation" / "metrics.csv").is_file()


def test_a_run_of_another_protocol_is_refused_and_nothing_changes(study_and_run, capsys):
    study, run = study_and_run
    record = json.loads((run / "run.json").read_text())
    record["settings"]["epochs"] = 2
    (run / "run.json").write_text(json.dumps(record))
    before = (study / f"seed-{SEED}" / "evaluation" / "metrics.csv").read_text()
    assert cli.main(["adopt", str(run), "--out", str(study)]) == 2
    assert "epochs=2" in capsys.readouterr().err
    assert (study / f"seed-{SEED}" / "evaluation" / "metrics.csv").read_text() == before

    record["settings"]["epochs"] = json.loads((study / "study.json").read_text())["settings"]["epochs"]
    (run / "run.json").write_text(json.dumps(record))
    model = json.loads((run / "lstm" / "run.json").read_text())
    model["settings"]["training"]["batch_size"] = 8  # one model trained otherwise than its run says
    (run / "lstm" / "run.json").write_text(json.dumps(model))
    with pytest.raises(StudyError, match="batch_size=8"):
        adopt.adopt_run(study, run)
    split = (run / "split.csv").read_text().splitlines()
    (run / "split.csv").write_text("\n".join([split[0], "/home/someone/" + split[1], *split[2:]]) + "\n")
    with pytest.raises(StudyError, match="published copy"):
        adopt.adopt_run(study, run)


def test_the_remedy_page_says_when_its_seed_is_the_committed_run_and_whose_times_hold_the_paired_check(tmp_path):
    from cxr_utils.batchnorm_check import COLUMNS
    from cxr_utils.study.publish import remedy_page

    studies = tmp_path / "studies"
    shutil.copytree(BOOK_STUDIES_DIR, studies)
    _forget_adoptions(studies / "seeds")
    seed = json.loads((studies / "remedy" / "study.json").read_text())["settings"]["seeds"][0]
    assert "the book's committed run" not in remedy_page(studies, figures=False)
    run = _run_from_seed(studies / "seeds", seed, tmp_path / "run")
    for model_id in config.REGISTRY:  # only ResNet50 ran the paired check (the hybrid's record may hold it too)
        history = pd.read_csv(run / model_id / "history.csv")
        history = history.drop(columns=[way["recomputed"] for way in COLUMNS.values()], errors="ignore")
        if model_id == "resnet50":  # as the chapter's paired check leaves it
            for way in COLUMNS.values():
                history[way["recomputed"]] = history[way["moving"]]
        history.to_csv(run / model_id / "history.csv", index=False)
    adopt.adopt_run(studies / "seeds", run, log=lambda _: None)

    text = remedy_page(studies, figures=False)
    assert "For this seed the paper's protocol is the book's committed run" in text
    assert "Its ResNet50 also scored every epoch's weights a second time" in text  # only the model that ran it
