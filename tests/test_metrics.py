"""cxr_utils.metrics: the paper's confusion orientation, metrics, intervals and McNemar's test."""

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics

from cxr_utils import config, metrics


def labels_from_counts(tp, fn, fp, tn):
    """Label pairs with the given confusion counts (COVID = 1 first, then Normal = 0)."""
    y_true = np.array([1] * (tp + fn) + [0] * (fp + tn))
    y_pred = np.array([1] * tp + [0] * fn + [1] * fp + [0] * tn)
    return y_true, y_pred


HYBRID = labels_from_counts(47, 3, 2, 48)  # the paper's Table 5


def test_labels_from_probabilities_threshold_is_inclusive():
    assert metrics.labels_from_probabilities([0.0, 0.49, 0.5, 0.51, 1.0]).tolist() == [0, 0, 1, 1, 1]
    assert metrics.labels_from_probabilities([[0.2], [0.8]], threshold=0.9).tolist() == [0, 0]


@pytest.mark.parametrize("probabilities, message", [
    ([], "empty"), ([0.2, 1.5], r"\[0, 1\]"), ([0.2, np.nan], "NaN"), ([-3.0, 2.0], "logits"),
])
def test_labels_from_probabilities_rejects_non_probabilities(probabilities, message):
    with pytest.raises(ValueError, match=message):
        metrics.labels_from_probabilities(probabilities)


def test_confusion_matrix_has_the_paper_orientation():
    table = metrics.confusion_matrix(*HYBRID)
    assert table.index.name == "actual" and table.columns.name == "predicted"
    assert list(table.index) == list(table.columns) == ["COVID", "Normal"]
    assert table.to_numpy().tolist() == [[47, 3], [2, 48]]  # [[TP, FN], [FP, TN]]


def test_confusion_matrix_keeps_both_classes_when_one_is_absent():
    table = metrics.confusion_matrix([1, 1, 1], [1, 0, 1])
    assert table.to_numpy().tolist() == [[2, 1], [0, 0]]


def test_classification_metrics_match_the_formulas():
    result = metrics.classification_metrics(*HYBRID)
    assert (result["tp"], result["fn"], result["fp"], result["tn"], result["n"]) == (47, 3, 2, 48, 100)
    assert result["accuracy"] == pytest.approx(0.95)
    assert result["precision"] == pytest.approx(47 / 49)
    assert result["recall"] == pytest.approx(47 / 50)
    assert result["f1"] == pytest.approx(2 * 47 / (2 * 47 + 3 + 2))


def test_classification_metrics_reports_undefined_precision_as_zero():
    result = metrics.classification_metrics([1, 0, 0], [0, 0, 0])
    assert result["precision"] == 0 and result["recall"] == 0 and result["f1"] == 0
    assert result["accuracy"] == pytest.approx(2 / 3)


def test_metrics_from_counts_equals_metrics_from_labels():
    from_labels = metrics.classification_metrics(*labels_from_counts(42, 8, 8, 42))
    from_counts = metrics.metrics_from_counts(tp=42, fn=8, fp=8, tn=42)
    assert from_counts == {name: from_labels[name] for name in config.METRICS}


@pytest.mark.parametrize("counts, message", [
    ((1, -1, 0, 0), "fn must be a non-negative"), ((1.5, 0, 0, 0), "tp must be"), ((0, 0, 0, 0), "at least one"),
])
def test_metrics_from_counts_rejects_impossible_counts(counts, message):
    with pytest.raises(ValueError, match=message):
        metrics.metrics_from_counts(*counts)


@pytest.mark.parametrize("y_true, y_pred, message", [
    ([], [], "y_true is empty"),
    ([1, 0], [1], "y_true has 2 labels but y_pred has 1"),
    ([1, 2], [1, 0], r"y_true must hold labels 0 \(Normal\) and 1 \(COVID\) only, but holds \[2\]"),
    ([1, 0], ["COVID", "Normal"], "y_pred must hold labels 0"),
    ([1, np.nan], [1, 0], "y_true must hold labels 0"),
])
def test_bad_labels_are_named(y_true, y_pred, message):
    for function in (metrics.confusion_matrix, metrics.classification_metrics, metrics.metrics_with_intervals):
        with pytest.raises(ValueError, match=message):
            function(y_true, y_pred)


def test_intervals_table_shape_and_wilson_values():
    table = metrics.metrics_with_intervals(*HYBRID)
    assert table.index.name == "metric" and list(table.index) == ["accuracy", "precision", "recall", "f1"]
    assert list(table.columns) == ["value", "low", "high", "method", "successes", "trials"]
    assert table.loc["precision", ["successes", "trials"]].tolist() == [47, 49]
    assert table.loc["recall", ["successes", "trials"]].tolist() == [47, 50]
    # Wilson 95% for 95/100, worked by hand: centre (p + z^2/2n) / (1 + z^2/n), half-width below.
    z, p, n = 1.959964, 0.95, 100
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert table.loc["accuracy", "low"] == pytest.approx(centre - half, abs=1e-6)
    assert table.loc["accuracy", "high"] == pytest.approx(centre + half, abs=1e-6)
    assert (table["low"] <= table["value"]).all() and (table["value"] <= table["high"]).all()
    assert table.loc["f1", "method"].startswith("paired percentile bootstrap")


def test_intervals_are_reproducible_and_seeded():
    first = metrics.metrics_with_intervals(*HYBRID, seed=3)
    pd.testing.assert_frame_equal(first, metrics.metrics_with_intervals(*HYBRID, seed=3))
    other = metrics.metrics_with_intervals(*HYBRID, seed=4)
    assert other.loc["f1", ["low", "high"]].tolist() != first.loc["f1", ["low", "high"]].tolist()


def test_wider_confidence_gives_wider_intervals():
    narrow = metrics.metrics_with_intervals(*HYBRID, confidence=0.8)
    wide = metrics.metrics_with_intervals(*HYBRID, confidence=0.99)
    assert ((wide["high"] - wide["low"]) > (narrow["high"] - narrow["low"])).all()


def test_bootstrap_f1_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 2, size=(2, 40))
    assert metrics._f1_from_pairs(y_true, y_pred) == pytest.approx(sklearn.metrics.f1_score(y_true, y_pred))
    assert metrics._f1_from_pairs(np.zeros(5), np.zeros(5)) == 0  # zero_division=0, as sklearn here


@pytest.mark.parametrize("y_true, y_pred, metric, reason", [
    ([1] * 10, [1] * 10, "f1", "all 2000 bootstrap resamples gave F1 = 1"),
    ([0] * 10, [0] * 10, "f1", "no COVID images and no COVID predictions"),
    ([0] * 10, [0] * 10, "precision", "denominator 0"),
    ([1], [1], "f1", "at least 2 images"),
])
def test_degenerate_cases_give_nan_intervals_with_a_reason(y_true, y_pred, metric, reason):
    table = metrics.metrics_with_intervals(y_true, y_pred)
    assert np.isnan(table.loc[metric, "low"]) and np.isnan(table.loc[metric, "high"])
    assert reason in table.loc[metric, "method"]
    assert table.loc["accuracy", "low"] > 0  # the accuracy interval still exists


@pytest.mark.parametrize("options, message", [
    ({"confidence": 95}, "confidence must lie strictly between 0 and 1"),
    ({"n_bootstrap": 10}, "n_bootstrap must be a whole number of at least 100"),
])
def test_interval_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        metrics.metrics_with_intervals(*HYBRID, **options)


def test_mcnemar_counts_discordant_images_and_matches_the_binomial():
    y_true = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0])
    pred_a = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 1])  # wrong on the last two
    pred_b = np.array([0, 0, 0, 1, 0, 1, 0, 0, 1, 0])  # wrong on the first three and the sixth
    result = metrics.mcnemar_test(y_true, pred_a, pred_b)
    assert result["table"].to_numpy().tolist() == [[4, 4], [2, 0]]
    assert (result["a_only_correct"], result["b_only_correct"], result["n"]) == (4, 2, 10)
    # Exact two-sided test: 2 * P(X <= 2) for X ~ Binomial(6, 1/2) = 2 * 22/64.
    assert result["p_value"] == pytest.approx(44 / 64)
    assert result["statistic"] == 2


def test_mcnemar_is_symmetric_and_one_when_models_agree():
    y_true, pred = HYBRID
    other = pred.copy()
    other[:10] = 1 - other[:10]
    forward, backward = metrics.mcnemar_test(y_true, pred, other), metrics.mcnemar_test(y_true, other, pred)
    assert forward["a_only_correct"] == backward["b_only_correct"]
    assert forward["p_value"] == pytest.approx(backward["p_value"])
    assert metrics.mcnemar_test(y_true, pred, pred)["p_value"] == 1


def test_mcnemar_names_the_prediction_of_the_wrong_length():
    with pytest.raises(ValueError, match="pred_b has 2"):
        metrics.mcnemar_test([1, 0, 1], [1, 0, 1], [1, 0])


# Beyond the threshold: per-image cross-entropy, the loss gap, AUC and Brier score.

def test_binary_cross_entropy_is_keras_loss_per_image():
    labels = np.array([1, 0, 1, 0])
    probabilities = np.array([0.9, 0.2, 0.0, 1.0])  # the last two: certain and wrong, clipped like Keras
    losses = metrics.binary_cross_entropy(labels, probabilities)
    eps = metrics.KERAS_EPSILON
    expected = [-np.log(0.9), -np.log(0.8), -np.log(eps), -np.log(eps)]
    assert losses == pytest.approx(expected)
    assert np.isfinite(losses).all()


def _fit(rng, n, right):
    """``n`` images, half COVID, with probabilities on the right side of 0.5 for a share ``right``."""
    labels = np.repeat([1, 0], n // 2)
    confident = rng.uniform(0.6, 0.95, n)
    probabilities = np.where(rng.random(n) < right, confident, 1 - confident)
    return labels, np.where(labels == 1, probabilities, 1 - probabilities)


def test_loss_gap_interval_means_gap_and_a_seeded_bootstrap():
    rng = np.random.default_rng(0)
    train, val = _fit(rng, 800, 0.95), _fit(rng, 100, 0.75)
    result = metrics.loss_gap_interval(*train, *val)
    assert result["train_loss"] == pytest.approx(metrics.binary_cross_entropy(*train).mean())
    assert result["val_loss"] == pytest.approx(metrics.binary_cross_entropy(*val).mean())
    assert result["gap"] == pytest.approx(result["val_loss"] - result["train_loss"])
    assert 0 < result["low"] < result["gap"] < result["high"]  # a clear overfit: the interval lies above 0
    assert (result["n_train"], result["n_val"], result["confidence"]) == (800, 100, 0.95)
    assert result["method"] == "percentile bootstrap (2000 resamples, seed 0)"  # the parts resampled apart
    assert metrics.loss_gap_interval(*train, *val) == result
    assert metrics.loss_gap_interval(*train, *val, seed=1)["low"] != result["low"]


def test_loss_gap_interval_straddles_zero_when_the_parts_fit_alike():
    rng = np.random.default_rng(1)
    train, val = _fit(rng, 800, 0.85), _fit(rng, 100, 0.85)
    result = metrics.loss_gap_interval(*train, *val)
    assert result["low"] < 0 < result["high"]
    swapped = metrics.loss_gap_interval(*val, *train)  # the gap is val minus train
    assert swapped["gap"] == pytest.approx(-result["gap"]) and swapped["n_val"] == 800


def test_loss_gap_interval_checks_its_inputs():
    with pytest.raises(ValueError, match="val_labels has 3 entries but val_probabilities has 2"):
        metrics.loss_gap_interval([1, 0], [0.9, 0.1], [1, 0, 1], [0.9, 0.1])
    with pytest.raises(ValueError, match=r"train_probabilities must lie in \[0, 1\]"):
        metrics.loss_gap_interval([1, 0], [1.9, 0.1], [1, 0], [0.9, 0.1])
    single = metrics.loss_gap_interval([1, 0], [0.9, 0.1], [1], [0.6])
    assert np.isnan(single["low"]) and "at least 2 images in each part" in single["method"]
    assert single["gap"] == pytest.approx(-np.log(0.6) + np.log(0.9))


def test_probability_metrics_match_sklearn_with_seeded_intervals():
    rng = np.random.default_rng(2)
    labels, probabilities = _fit(rng, 100, 0.85)
    table = metrics.probability_metrics(labels, probabilities)
    assert list(table.index) == ["auc", "brier"] and table.index.name == "metric"
    assert list(table.columns) == ["value", "low", "high", "method"]
    assert table.loc["auc", "value"] == pytest.approx(sklearn.metrics.roc_auc_score(labels, probabilities))
    assert table.loc["brier", "value"] == pytest.approx(sklearn.metrics.brier_score_loss(labels, probabilities))
    assert (table["low"] < table["value"]).all() and (table["value"] < table["high"]).all()
    assert (table["method"] == "paired percentile bootstrap (2000 resamples, seed 0)").all()
    pd.testing.assert_frame_equal(table, metrics.probability_metrics(labels, probabilities))
    other = metrics.probability_metrics(labels, probabilities, seed=5)
    assert other.loc["auc", "low"] != table.loc["auc", "low"]
    wide = metrics.probability_metrics(labels, probabilities, confidence=0.99)
    assert ((wide["high"] - wide["low"]) > (table["high"] - table["low"])).all()


def test_vectorised_auc_agrees_with_sklearn_ties_included():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=(5, 40))
    probabilities = rng.integers(0, 6, size=(5, 40)) / 5  # many ties
    expected = [sklearn.metrics.roc_auc_score(y, p) for y, p in zip(labels, probabilities)]
    assert metrics._auc_from_pairs(labels, probabilities) == pytest.approx(expected)
    assert np.isnan(metrics._auc_from_pairs(np.ones(4), np.linspace(0, 1, 4)))  # one class: undefined


def test_probability_metrics_with_one_class_give_no_auc_and_say_why():
    table = metrics.probability_metrics([1, 1, 1, 1], [0.9, 0.8, 0.4, 0.7], n_bootstrap=200)
    assert np.isnan(table.loc["auc", ["value", "low", "high"]].astype(float)).all()
    assert table.loc["auc", "method"] == "no value: only COVID images, and the AUC needs both classes"
    assert table.loc["brier", "value"] == pytest.approx(np.mean((1 - np.array([0.9, 0.8, 0.4, 0.7])) ** 2))
    assert table.loc["brier", "low"] < table.loc["brier", "high"]


def test_bootstrap_leaves_out_resamples_where_the_auc_is_undefined():
    table = metrics.probability_metrics([1, 0, 1, 0, 1], [0.9, 0.2, 0.6, 0.7, 0.8], n_bootstrap=500)
    assert "resamples with AUC undefined left out" in table.loc["auc", "method"]
    assert 0 <= table.loc["auc", "low"] < table.loc["auc", "high"] <= 1
    perfect = metrics.probability_metrics([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.1], n_bootstrap=200)
    assert np.isnan(perfect.loc["auc", "low"]) and "gave AUC = 1" in perfect.loc["auc", "method"]


@pytest.mark.parametrize("args, message", [
    (([1, 0], [0.2]), "labels has 2 entries but probabilities has 1"),
    (([1, 2], [0.2, 0.4]), "labels must hold labels 0"),
    (([1, 0], [0.2, np.nan]), "NaN"),
])
def test_probability_metrics_name_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        metrics.probability_metrics(*args)
