"""Confusion matrices, test metrics with confidence intervals, and McNemar's test between two models.

COVID (label 1) is the positive class, as in the paper's Tables 3-6. Explained in
notebooks/06_evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sklearn.metrics
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

CLASS_NAMES = {1: "COVID", 0: "Normal"}
PAPER_ORDER = ["COVID", "Normal"]
METRIC_NAMES = ("accuracy", "precision", "recall", "f1")


def _labels(values, name: str) -> np.ndarray:
    array = np.asarray(values).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty; pass at least one label")
    if not np.isin(array, (0, 1)).all():
        bad = pd.unique(array[~np.isin(array, (0, 1))])[:5].tolist()
        raise ValueError(
            f"{name} must hold labels 0 (Normal) and 1 (COVID) only, but holds {bad}; "
            "map class names with {'Normal': 0, 'COVID': 1} and threshold probabilities "
            "with labels_from_probabilities"
        )
    return array.astype(int)


def _pair(y_true, y_pred, pred_name: str = "y_pred") -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, pred_name)
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true has {len(y_true)} labels but {pred_name} has {len(y_pred)}; "
            "pass one prediction per test image"
        )
    return y_true, y_pred


def labels_from_probabilities(probabilities, threshold: float = 0.5) -> np.ndarray:
    """Turn P(COVID) into labels: 1 where the probability reaches ``threshold``, else 0.

    Explained in notebooks/06_evaluation.
    """
    array = np.asarray(probabilities, dtype=float).reshape(-1)
    if array.size == 0:
        raise ValueError("probabilities is empty; pass one probability per image")
    if not np.all((array >= 0) & (array <= 1)):  # also rejects NaN
        raise ValueError(
            "probabilities must lie in [0, 1] (a sigmoid output); got values from "
            f"{np.nanmin(array):g} to {np.nanmax(array):g} or NaN; apply a sigmoid to logits first"
        )
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    return (array >= threshold).astype(int)


def confusion_matrix(y_true, y_pred) -> pd.DataFrame:
    """2x2 counts in the paper's orientation (Tables 3-5): rows actual, columns predicted,
    both in the order COVID, Normal.

    So ``[0, 0]`` is TP, ``[0, 1]`` FN, ``[1, 0]`` FP and ``[1, 1]`` TN.
    Explained in notebooks/06_evaluation.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    counts = sklearn.metrics.confusion_matrix(y_true, y_pred, labels=[1, 0])
    return pd.DataFrame(
        counts,
        index=pd.Index(PAPER_ORDER, name="actual"),
        columns=pd.Index(PAPER_ORDER, name="predicted"),
    )


def classification_metrics(y_true, y_pred) -> dict:
    """Accuracy, precision, recall and F1 (COVID positive), plus the counts tp, fn, fp, tn and n.

    An undefined precision or recall (no positive predictions or images) is reported as 0.
    Explained in notebooks/06_evaluation.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    (tp, fn), (fp, tn) = confusion_matrix(y_true, y_pred).to_numpy()
    scores = {"pos_label": 1, "zero_division": 0}
    return {
        "accuracy": float(sklearn.metrics.accuracy_score(y_true, y_pred)),
        "precision": float(sklearn.metrics.precision_score(y_true, y_pred, **scores)),
        "recall": float(sklearn.metrics.recall_score(y_true, y_pred, **scores)),
        "f1": float(sklearn.metrics.f1_score(y_true, y_pred, **scores)),
        "tp": int(tp), "fn": int(fn), "fp": int(fp), "tn": int(tn), "n": int(len(y_true)),
    }


def metrics_from_counts(tp: int, fn: int, fp: int, tn: int) -> dict:
    """The four metrics from confusion counts: how the paper's Table 6 follows from Tables 3-5.

    Explained in notebooks/07_comparison.
    """
    counts = {"tp": tp, "fn": fn, "fp": fp, "tn": tn}
    for name, count in counts.items():
        if int(count) != count or count < 0:
            raise ValueError(f"{name} must be a non-negative whole number, got {count!r}")
    if sum(counts.values()) == 0:
        raise ValueError("all four counts are 0; a confusion matrix needs at least one image")
    # Rebuild the label pairs so that the same scikit-learn code scores counts and predictions.
    repeats = [int(tp), int(fn), int(fp), int(tn)]
    y_true = np.repeat([1, 1, 0, 0], repeats)
    y_pred = np.repeat([1, 0, 1, 0], repeats)
    values = classification_metrics(y_true, y_pred)
    return {name: values[name] for name in METRIC_NAMES}


def _f1_from_pairs(y_true, y_pred, axis=-1):
    # Vectorised over bootstrap resamples (sklearn's f1_score would take seconds for 2000 of them);
    # the same formula and zero_division=0 convention as classification_metrics, tested against it.
    tp = np.sum((y_true == 1) & (y_pred == 1), axis=axis)
    errors = np.sum(y_true != y_pred, axis=axis)
    denominator = 2 * tp + errors
    return np.divide(2 * tp, denominator, out=np.zeros(np.shape(tp)), where=denominator > 0)


def _f1_interval(y_true, y_pred, confidence, n_bootstrap, seed) -> tuple[float, float, str]:
    if len(y_true) < 2:
        return np.nan, np.nan, "no interval: the bootstrap needs at least 2 images"
    if not (y_true.any() or y_pred.any()):
        return np.nan, np.nan, "no interval: no COVID images and no COVID predictions, F1 undefined"
    # Resample test images with each (label, prediction) pair kept together.
    result = stats.bootstrap(
        (y_true, y_pred), _f1_from_pairs, paired=True, vectorized=True, n_resamples=n_bootstrap,
        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
    )
    distribution = result.bootstrap_distribution
    if np.ptp(distribution) == 0:
        # e.g. every prediction right: each resample gives the same F1, a zero-width "interval".
        reason = f"no interval: all {n_bootstrap} bootstrap resamples gave F1 = {distribution[0]:g}"
        return np.nan, np.nan, reason
    low, high = result.confidence_interval
    return float(low), float(high), f"paired percentile bootstrap ({n_bootstrap} resamples, seed {seed})"


def metrics_with_intervals(
    y_true, y_pred, confidence: float = 0.95, n_bootstrap: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Each metric with a ``confidence`` interval, one row per metric (index ``metric``).

    Columns: value, low, high, method, successes, trials. Accuracy, precision and recall are
    proportions (successes / trials) and get Wilson score intervals; F1 is not a proportion and
    gets a paired percentile bootstrap over test images, seeded (same seed, same numbers; its
    successes is NaN and trials is n). Where no interval exists (an empty denominator, a degenerate
    bootstrap) low and high are NaN and ``method`` says why. Explained in notebooks/06_evaluation.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence}")
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 100:
        raise ValueError(f"n_bootstrap must be a whole number of at least 100 resamples, got {n_bootstrap}")
    values = classification_metrics(y_true, y_pred)
    tp, fn, fp, tn, n = (values[k] for k in ("tp", "fn", "fp", "tn", "n"))
    proportions = {"accuracy": (tp + tn, n), "precision": (tp, tp + fp), "recall": (tp, tp + fn)}
    rows = []
    for name, (successes, trials) in proportions.items():
        if trials == 0:
            low = high = np.nan
            method = f"no interval: {name} undefined (denominator 0), value reported as 0"
        else:
            low, high = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
            method = "Wilson score"
        rows.append({"metric": name, "value": values[name], "low": float(low), "high": float(high),
                     "method": method, "successes": successes, "trials": trials})
    low, high, method = _f1_interval(y_true, y_pred, confidence, int(n_bootstrap), seed)
    rows.append({"metric": "f1", "value": values["f1"], "low": low, "high": high,
                 "method": method, "successes": np.nan, "trials": n})
    table = pd.DataFrame(rows).set_index("metric")
    return table.astype({"successes": "Int64", "trials": "Int64"})  # whole counts; F1 has none


def mcnemar_test(y_true, pred_a, pred_b) -> dict:
    """McNemar's exact test on the same test images: is one model right more often than the other?

    Only the discordant images (exactly one model right) carry information; the exact binomial
    form suits the small counts of a 100-image test set. Returns the 2x2 correctness ``table``
    (rows model A right/wrong, columns model B right/wrong), ``a_only_correct``,
    ``b_only_correct``, ``statistic`` (the smaller discordant count), ``p_value`` (two-sided) and
    ``n``. Explained in notebooks/06_evaluation.
    """
    y_true, pred_a = _pair(y_true, pred_a, "pred_a")
    _, pred_b = _pair(y_true, pred_b, "pred_b")
    a_right, b_right = pred_a == y_true, pred_b == y_true
    table = pd.DataFrame(
        [[int(np.sum(a_right & b_right)), int(np.sum(a_right & ~b_right))],
         [int(np.sum(~a_right & b_right)), int(np.sum(~a_right & ~b_right))]],
        index=pd.Index(["A right", "A wrong"], name="model A"),
        columns=pd.Index(["B right", "B wrong"], name="model B"),
    )
    result = mcnemar(table.to_numpy(), exact=True)
    return {
        "table": table,
        "a_only_correct": int(table.iloc[0, 1]),
        "b_only_correct": int(table.iloc[1, 0]),
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue),
        "n": int(len(y_true)),
    }
