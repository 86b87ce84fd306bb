"""The committed run's recorded metrics, recomputed from its committed predictions: every number the
book shows of a model's test set follows from predictions.csv, and one figure has one interval
wherever it is written (a model's metrics.json and the evaluation tables)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_utils import config, evaluation, metrics

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
