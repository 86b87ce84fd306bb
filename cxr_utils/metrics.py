"""Confusion matrices, test metrics with confidence intervals, McNemar's test between two models,
and what the probabilities say beyond the threshold: AUC, Brier score and the per-image loss gap.

COVID (label 1) is the positive class, as in the paper's Tables 3-6. Explained in
notebooks/06_evaluation.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import sklearn.metrics
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from cxr_utils.config import CHOICES, METRICS, PAPER_ORDER


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


def _probabilities(values, name: str = "probabilities") -> np.ndarray:
    array = np.asarray(values, dtype=float).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty; pass one probability per image")
    if not np.all((array >= 0) & (array <= 1)):  # also rejects NaN
        raise ValueError(
            f"{name} must lie in [0, 1] (a sigmoid output); got values from "
            f"{np.nanmin(array):g} to {np.nanmax(array):g} or NaN; apply a sigmoid to logits first"
        )
    return array


def _scored(labels, probabilities, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of the same images, checked (``name`` prefixes the argument names)."""
    labels, probabilities = _labels(labels, f"{name}labels"), _probabilities(probabilities, f"{name}probabilities")
    if len(labels) != len(probabilities):
        raise ValueError(
            f"{name}labels has {len(labels)} entries but {name}probabilities has {len(probabilities)}; "
            "pass one probability per image"
        )
    return labels, probabilities


def labels_from_probabilities(probabilities, threshold: float = 0.5) -> np.ndarray:
    """P(COVID) to labels: 1 where it reaches ``threshold``, else 0. Explained in notebooks/06_evaluation."""
    array = _probabilities(probabilities)
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    return (array >= threshold).astype(int)


def confusion_matrix(y_true, y_pred) -> pd.DataFrame:
    """2x2 counts as in the paper's Tables 3-5: rows actual, columns predicted, both ordered COVID, Normal,
    so ``[0, 0]`` is TP, ``[0, 1]`` FN, ``[1, 0]`` FP and ``[1, 1]`` TN. Explained in notebooks/06_evaluation.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    counts = sklearn.metrics.confusion_matrix(y_true, y_pred, labels=[1, 0])
    return pd.DataFrame(
        counts,
        index=pd.Index(PAPER_ORDER, name="actual"),
        columns=pd.Index(PAPER_ORDER, name="predicted"),
    )


def classification_metrics(y_true, y_pred) -> dict:
    """Accuracy, precision, recall and F1 (COVID positive; 0 if undefined). Explained in notebooks/06_evaluation."""
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
    """The four metrics from confusion counts: how the paper's Table 6 follows from Tables 3-5."""
    counts = {"tp": tp, "fn": fn, "fp": fp, "tn": tn}
    for name, count in counts.items():
        if int(count) != count or count < 0:
            raise ValueError(f"{name} must be a non-negative whole number, got {count!r}")
    if sum(counts.values()) == 0:
        raise ValueError("all four counts are 0; a confusion matrix needs at least one image")
    # Rebuild the label pairs so that the same scikit-learn code scores counts and predictions.
    repeats = [int(tp), int(fn), int(fp), int(tn)]
    values = classification_metrics(np.repeat([1, 1, 0, 0], repeats), np.repeat([1, 0, 1, 0], repeats))
    return {name: values[name] for name in METRICS}


def _f1_from_pairs(y_true, y_pred, axis=-1):
    # Vectorised over bootstrap resamples (sklearn's f1_score would take seconds for 2000 of them);
    # the same formula and zero_division=0 convention as classification_metrics, tested against it.
    tp = np.sum((y_true == 1) & (y_pred == 1), axis=axis)
    errors = np.sum(y_true != y_pred, axis=axis)
    denominator = 2 * tp + errors
    return np.divide(2 * tp, denominator, out=np.zeros(np.shape(tp)), where=denominator > 0)


def _check_interval_options(confidence, n_bootstrap) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence}")
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 100:
        raise ValueError(f"n_bootstrap must be a whole number of at least 100 resamples, got {n_bootstrap}")


def _bootstrap_interval(samples, statistic, name: str, confidence, n_bootstrap, seed, paired=True,
                        batch=None) -> tuple[float, float, str]:
    """Low, high and method of a seeded percentile bootstrap of ``statistic`` (vectorised, with ``axis``).

    ``paired``: each image's values (label, prediction) are resampled together; otherwise each sample
    on its own. Resamples where the statistic is NaN (an AUC on one class) are left out and counted in
    the method; with no interval the bounds are NaN and the method says why.
    """
    with warnings.catch_warnings():  # degenerate and undefined resamples are handled below
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            samples, statistic, paired=paired, vectorized=True, n_resamples=n_bootstrap, batch=batch,
            confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
        )
    distribution = np.asarray(result.bootstrap_distribution)
    kept = distribution[np.isfinite(distribution)]
    left_out = f"; {distribution.size - kept.size} resamples with {name} undefined left out"
    left_out = left_out if kept.size < distribution.size else ""
    if kept.size == 0:
        return np.nan, np.nan, f"no interval: {name} undefined on every bootstrap resample"
    if np.ptp(kept) == 0:
        # e.g. every prediction right: each resample gives the same value, a zero-width "interval".
        return np.nan, np.nan, f"no interval: all {kept.size} bootstrap resamples gave {name} = {kept[0]:g}{left_out}"
    method = f"{'paired ' if paired else ''}percentile bootstrap ({n_bootstrap} resamples, seed {seed}){left_out}"
    tail = 50 * (1 - confidence)
    low, high = np.percentile(kept, [tail, 100 - tail]) if left_out else result.confidence_interval
    return float(low), float(high), method


def mean_with_interval(values, confidence: float = 0.95, n_bootstrap: int = CHOICES.bootstrap_resamples,
                       seed: int = 0) -> dict:
    """The mean of ``values`` (one per image; NaN left out) with a seeded percentile bootstrap
    interval over the images: {"mean", "low", "high", "n", "method"}; NaN bounds with the reason
    when there is no interval (fewer than two values, or all equal)."""
    _check_interval_options(confidence, n_bootstrap)
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2:
        mean = float(values.mean()) if values.size else np.nan
        return {"mean": mean, "low": np.nan, "high": np.nan, "n": int(values.size),
                "method": f"no interval: {values.size} value{'' if values.size == 1 else 's'}"}
    low, high, method = _bootstrap_interval((values,), np.mean, "the mean", confidence, int(n_bootstrap), seed,
                                            paired=False)
    return {"mean": float(values.mean()), "low": low, "high": high, "n": int(values.size), "method": method}


def _f1_interval(y_true, y_pred, confidence, n_bootstrap, seed) -> tuple[float, float, str]:
    if len(y_true) < 2:
        return np.nan, np.nan, "no interval: the bootstrap needs at least 2 images"
    if not (y_true.any() or y_pred.any()):
        return np.nan, np.nan, "no interval: no COVID images and no COVID predictions, F1 undefined"
    return _bootstrap_interval((y_true, y_pred), _f1_from_pairs, "F1", confidence, n_bootstrap, seed)


def metrics_with_intervals(
    y_true, y_pred, confidence: float = 0.95, n_bootstrap: int = CHOICES.bootstrap_resamples,
    seed: int = 0,
) -> pd.DataFrame:
    """Each metric with a ``confidence`` interval: index metric; columns value, low, high, method, successes, trials.

    Accuracy, precision and recall are proportions (successes / trials) with Wilson score intervals;
    F1 is not, and gets a seeded paired percentile bootstrap over test images (successes NaN, trials
    n). With no interval (an empty denominator, a degenerate bootstrap) low and high are NaN and
    ``method`` says why. Explained in notebooks/06_evaluation.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    _check_interval_options(confidence, n_bootstrap)
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

    Only the discordant images (exactly one model right) carry information; the exact binomial form
    suits the small counts of a 100-image test set. ``table``: the 2x2 correctness counts (rows A
    right/wrong, columns B right/wrong); ``statistic``: the smaller discordant count; ``p_value``:
    two-sided. Explained in notebooks/06_evaluation.
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


KERAS_EPSILON = 1e-7  # keras.config.epsilon(): how far Keras clips probabilities from 0 and 1 in its losses
_BOOTSTRAP_VALUES_PER_BATCH = 2_000_000  # bounds the memory of a bootstrap on a large test set


def _batch(n_images: int) -> int:
    return max(1, _BOOTSTRAP_VALUES_PER_BATCH // max(1, n_images))


def binary_cross_entropy(labels, probabilities, epsilon: float = KERAS_EPSILON) -> np.ndarray:
    """Each image's binary cross-entropy, as Keras computes its loss: probabilities clipped to
    [epsilon, 1 - epsilon], then -(y log p + (1 - y) log(1 - p)). Their mean is Keras' loss."""
    labels, probabilities = _scored(labels, probabilities)
    clipped = np.clip(probabilities, epsilon, 1 - epsilon)
    return -(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))


def _auc_from_pairs(labels, probabilities, axis=-1):
    # The ROC AUC as the Mann-Whitney statistic (ties count half, as in roc_auc_score), vectorised
    # over bootstrap resamples; NaN where a resample holds one class only. Tested against sklearn.
    labels, probabilities = np.moveaxis(labels, axis, -1), np.moveaxis(probabilities, axis, -1)
    ranks = stats.rankdata(probabilities, axis=-1)
    positives = labels.sum(axis=-1)
    negatives = labels.shape[-1] - positives
    rank_sum = np.sum(ranks * labels, axis=-1)
    pairs = positives * negatives
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2) / pairs
    return np.where(pairs > 0, auc, np.nan)


def _brier_from_pairs(labels, probabilities, axis=-1):
    return np.mean((probabilities - labels) ** 2, axis=axis)


def probability_metrics(labels, probabilities, confidence: float = 0.95,
                        n_bootstrap: int = CHOICES.bootstrap_resamples,
                        seed: int = 0) -> pd.DataFrame:
    """What the predicted probabilities say beyond the 0.5 threshold, with ``confidence`` intervals.

    Rows (index metric) "auc" (how well the probabilities rank COVID above Normal; 0.5 is chance;
    NaN with one class only) and "brier" (the mean squared distance of each probability from its
    label; 0 is perfect, 0.25 a constant 0.5); columns value, low, high, method. The intervals are
    paired, seeded percentile bootstraps over images.
    """
    labels, probabilities = _scored(labels, probabilities)
    _check_interval_options(confidence, n_bootstrap)
    scores = {
        "auc": (sklearn.metrics.roc_auc_score, _auc_from_pairs, "AUC"),
        "brier": (sklearn.metrics.brier_score_loss, _brier_from_pairs, "Brier score"),
    }
    rows = []
    for metric, (score, vectorised, name) in scores.items():
        if metric == "auc" and len(np.unique(labels)) < 2:
            value, low, high = np.nan, np.nan, np.nan
            method = f"no value: only {'COVID' if labels[0] == 1 else 'Normal'} images, and the AUC needs both classes"
        else:
            value = float(score(labels, probabilities))
            if len(labels) < 2:
                low, high, method = np.nan, np.nan, "no interval: the bootstrap needs at least 2 images"
            else:
                low, high, method = _bootstrap_interval(
                    (labels, probabilities), vectorised, name, confidence, int(n_bootstrap), seed,
                    batch=_batch(len(labels)))
        rows.append({"metric": metric, "value": value, "low": low, "high": high, "method": method})
    return pd.DataFrame(rows).set_index("metric")


def accuracy_and_auc(labels, predicted, probabilities=None, seed: int = 0, prefix: str = "") -> dict:
    """A test's accuracy (95% Wilson interval) as flat values ``{prefix}accuracy``, ``_low``,
    ``_high``; with ``probabilities`` also its AUC (95% bootstrap interval) as ``{prefix}auc``,
    ``_low``, ``_high`` and ``{prefix}auc_method``: the columns of chapter 8's tables."""
    accuracy = metrics_with_intervals(labels, predicted, seed=seed).loc["accuracy"]
    values = {"accuracy": accuracy["value"], "accuracy_low": accuracy["low"], "accuracy_high": accuracy["high"]}
    if probabilities is not None:
        auc = probability_metrics(labels, probabilities, seed=seed).loc["auc"]
        values.update(auc=auc["value"], auc_low=auc["low"], auc_high=auc["high"], auc_method=auc["method"])
    return {prefix + name: value for name, value in values.items()}


def _mean_gap(val_losses, train_losses, axis=-1):
    return np.mean(val_losses, axis=axis) - np.mean(train_losses, axis=axis)


def loss_gap_interval(train_labels, train_probabilities, val_labels, val_probabilities,
                      confidence: float = 0.95, n_bootstrap: int = CHOICES.bootstrap_resamples,
                      seed: int = 0) -> dict:
    """Validation minus training loss of one model, per image and in inference mode, with an interval.

    Each part's loss is the mean ``binary_cross_entropy`` (clipped like Keras). The seeded percentile
    bootstrap resamples the training and the validation images independently (they are different
    images). Returns train_loss, val_loss, gap (val_loss - train_loss), low, high, confidence, n_train,
    n_val and method; with fewer than 2 images in a part, low and high are NaN and method says why.
    """
    _check_interval_options(confidence, n_bootstrap)
    train = binary_cross_entropy(*_scored(train_labels, train_probabilities, "train_"))
    val = binary_cross_entropy(*_scored(val_labels, val_probabilities, "val_"))
    if min(len(train), len(val)) < 2:
        low, high, method = np.nan, np.nan, "no interval: the bootstrap needs at least 2 images in each part"
    else:
        low, high, method = _bootstrap_interval(
            (val, train), _mean_gap, "the loss gap", confidence, int(n_bootstrap), seed, paired=False,
            batch=_batch(len(train) + len(val)))
    return {
        "train_loss": float(train.mean()), "val_loss": float(val.mean()),
        "gap": float(val.mean() - train.mean()), "low": low, "high": high, "confidence": confidence,
        "n_train": int(len(train)), "n_val": int(len(val)), "method": method,
    }
