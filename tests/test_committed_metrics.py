"""The committed run's recorded metrics, recomputed from its committed predictions: every number the
book shows of a model's test set follows from predictions.csv, and one figure has one interval
wherever it is written (a model's metrics.json and the evaluation tables)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_utils import config, evaluation, metrics
from cxr_utils.study import adopt
from cxr_utils.study.common import ADOPTED, STUDY_RECORD, seed_dir
from cxr_utils.study.publish import BOOK_STUDIES_DIR

RESULTS = Path(__file__).resolve().parents[1] / "book" / "executed" / "results"


@pytest.fixture(scope="module")
def committed():
    if not (RESULTS / evaluation.EVALUATION_DIR / "metrics.csv").is_file():
        pytest.fail(f"{RESULTS} holds no evaluated run: make the committed run (README)")
    return {spec.paper_name: (pd.read_csv(RESULTS / spec.id / "predictions.csv"),
                              json.loads((RESULTS / spec.id / "metrics.json").read_text()))
            for spec in config.REGISTRY.values()}


def test_metrics_json_follows_from_the_predictions(committed):
    for name, (predictions, record) in committed.items():
        assert (predictions["predicted"] == metrics.labels_from_probabilities(predictions["probability"])).all()
        recomputed = metrics.classification_metrics(predictions["label"], predictions["predicted"])
        for key, value in recomputed.items():
            assert record["test"][key] == pytest.approx(value), (name, key)


def test_the_evaluation_tables_follow_from_the_predictions_with_the_runs_seed(committed):
    seed = evaluation.run_seed(RESULTS)
    table = pd.read_csv(RESULTS / evaluation.EVALUATION_DIR / "metrics.csv").set_index(["model", "metric"])
    probability = pd.read_csv(RESULTS / evaluation.EVALUATION_DIR / "probability_metrics.csv")
    probability = probability.set_index(["model", "metric"])
    for name, (predictions, _) in committed.items():
        again = metrics.metrics_with_intervals(predictions["label"], predictions["predicted"], seed=seed)
        again_probability = metrics.probability_metrics(predictions["label"], predictions["probability"], seed=seed)
        for recomputed, saved in ((again, table), (again_probability, probability)):
            for metric, row in recomputed.iterrows():
                stored = saved.loc[(name, metric), ["value", "low", "high"]].to_numpy(dtype=float)
                np.testing.assert_allclose(stored, row[["value", "low", "high"]].to_numpy(dtype=float),
                                           rtol=1e-6, equal_nan=True, err_msg=f"{name} {metric}")


def test_one_interval_per_figure_in_metrics_json_and_the_evaluation_tables(committed):
    probability = pd.read_csv(RESULTS / evaluation.EVALUATION_DIR / "probability_metrics.csv")
    probability = probability.set_index(["model", "metric"])
    for name, (_, record) in committed.items():
        for metric, written in record["test_probability"].items():
            saved = probability.loc[(name, metric)]
            # The same probabilities, bootstrapped with the same seed and resamples: the same interval.
            assert (written["low"], written["high"]) == pytest.approx((saved["low"], saved["high"]), rel=1e-6), (
                name, metric)


def test_the_seed_study_shows_the_committed_run_for_its_seed_when_the_protocols_agree():
    """One run behind every number: a committed run of the seed study's protocol is the study's seed
    (``python -m cxr_utils.study adopt book/executed/results``), with the same predictions and metrics."""
    run = json.loads((RESULTS / "run.json").read_text())["settings"]
    study = json.loads((BOOK_STUDIES_DIR / "seeds" / STUDY_RECORD).read_text())
    if any(run.get(name) != study["settings"].get(name) for name in adopt.SAME):
        pytest.skip(f"the committed run is the {run.get('profile')!r} profile, not the seed study's protocol")
    seed = int(run["seed"])
    assert str(seed) in study.get(ADOPTED, {}), (
        f"the seed study trained seed {seed} apart from the committed run: python -m cxr_utils.study adopt {RESULTS}")
    adopted = seed_dir(BOOK_STUDIES_DIR / "seeds", seed)
    for spec in config.REGISTRY.values():
        pd.testing.assert_frame_equal(pd.read_csv(adopted / spec.id / "predictions.csv"),
                                      pd.read_csv(RESULTS / spec.id / "predictions.csv"), obj=spec.id)
    pd.testing.assert_frame_equal(pd.read_csv(adopted / evaluation.EVALUATION_DIR / "metrics.csv"),
                                  pd.read_csv(RESULTS / evaluation.EVALUATION_DIR / "metrics.csv"))
