"""The rules that judge the paper's three claims, stated once and applied at any number of images.

Each rule returns one of ``OUTCOMES`` with a reason written from the numbers. The rules, as the
method page states them:

- **Claim 1** (the hybrid's four test metrics, Table 6): *contradicted* when a 95% interval of this
  run excludes the paper's value; *supported* only when every interval contains the paper's value
  and is narrow enough that its lower end lies within ``CLAIM1_MARGIN`` of it (so an interval wide
  enough to hold a far weaker model supports nothing); otherwise *inconclusive*.
- **Claim 2** (the hybrid beats each single model): McNemar's exact test on the images that only
  one of the two models got right (paired: the same test images), significant at ``SIGNIFICANCE``.
- **Claim 3** (the hybrid "overfits slightly"): the validation minus training loss of the kept
  weights, both per image and computed the same way (inference mode, BatchNorm statistics
  recomputed from training images where the model has trainable BatchNorm layers), with a 95%
  bootstrap interval. *Supported* when the interval lies above 0 and below
  ``SLIGHT_OVERFIT_MAX_GAP`` ("slightly"); *contradicted* when it lies below 0 (no overfitting) or
  above the bound (more than slightly); otherwise *inconclusive*.

Explained in notebooks/07_comparison and on the method page.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from cxr_utils import config, metrics, paper
from cxr_utils.report import p_value as p_text
from cxr_utils.config import METRICS, PROTOCOL

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
NOT_PAPER_SETTING = "not tested in the paper's setting"
OUTCOMES = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_PAPER_SETTING)
SETTING_NOTE = ("Setting differs from the paper: backbone trained from scratch, not ImageNet weights, so this "
                "run does not test the claim.")
SIGNIFICANCE = 0.05
# Claim 1 is supported only when every interval's lower end lies within this of the paper's value,
# i.e. the run rules out a model this much worse in every metric. 0.15 is the least margin the
# paper's own result meets on its own 100 test images (its recall, 47 of 50 COVID images: 0.94
# [0.84, 0.98]), so the rule asks no more precision than the paper's design can give.
CLAIM1_MARGIN = 0.15
# Claim 3's "slightly": a validation loss at most this much above the training loss (in nats of
# binary cross-entropy, per image). The paper's own gap is +0.021; 0.10 is about a third of its
# validation loss (0.315), the point past which few would call an overfit slight.
SLIGHT_OVERFIT_MAX_GAP = 0.10
# Stored numbers carry float32 noise (0.550000012 for 0.55): comparisons with a threshold allow this much.
TOLERANCE = 1e-6
PAPER_TEST_IMAGES = PROTOCOL.split_sizes()["test"]
HYBRID, RESNET, LSTM = (config.REGISTRY[model_id].paper_name for model_id in ("resnet50_lstm", "resnet50", "lstm"))


def at_most(value, bound):
    """``value <= bound`` up to float32 noise (``TOLERANCE``), on numbers and arrays alike."""
    return (np.asarray(value) <= bound) | np.isclose(value, bound, rtol=0, atol=TOLERANCE)


def at_least(value, bound):
    """``value >= bound`` up to float32 noise (``TOLERANCE``)."""
    return at_most(bound, value)


def _names(names: list[str]) -> str:
    return ", ".join(names)


def claim_1(hybrid: pd.DataFrame, paper_values: pd.Series) -> tuple[str, str]:
    """Claim 1's verdict and reason: the paper's four values against this run's 95% intervals.

    ``hybrid``: index metric, columns value, low, high and method (said when an interval is missing).
    At any number of test images: a small test set's wide intervals can still exclude the paper's
    value (contradicted) but cannot support it.
    """
    missing = [m for m in METRICS if not np.isfinite(hybrid.loc[m, ["low", "high"]].astype(float)).all()]
    judged = [m for m in METRICS if m not in missing]
    above = [m for m in judged if not at_most(paper_values[m], hybrid.loc[m, "high"])]
    below = [m for m in judged if not at_least(paper_values[m], hybrid.loc[m, "low"])]
    if above or below:
        parts = [f"the paper's {_names(names)} {'lies' if len(names) == 1 else 'lie'} {side} this run's "
                 f"95% interval{'' if len(names) == 1 else 's'}"
                 for names, side in ((above, "above"), (below, "below")) if names]
        return CONTRADICTED, "; ".join(parts) + "."
    if missing:
        return INCONCLUSIVE, (
            f"no interval for {_names(missing)} ({'; '.join(hybrid.loc[missing, 'method'].astype(str))}); "
            "the paper's other values lie inside this run's 95% intervals."
        )
    wide = [m for m in judged if not at_least(hybrid.loc[m, "low"], paper_values[m] - CLAIM1_MARGIN)]
    if wide:
        lows = ", ".join(f"{m} down to {hybrid.loc[m, 'low']:.2f}" for m in wide)
        return INCONCLUSIVE, (
            f"the paper's four values lie inside this run's 95% intervals, but the intervals reach more than "
            f"{CLAIM1_MARGIN:.2f} below them ({lows}): consistent with the paper, and with a model "
            "far weaker than it reports."
        )
    return SUPPORTED, (f"each of the paper's four values lies inside this run's 95% interval, and no interval "
                       f"reaches more than {CLAIM1_MARGIN:.2f} below it.")


def _best_case_p(gap: int, n: int) -> float:
    """McNemar's exact p on ``n`` images when one model alone is right on ``gap`` and the other on none."""
    truth = np.ones(n, dtype=int)
    other = truth.copy()
    other[:gap] = 0
    return metrics.mcnemar_test(truth, truth, other)["p_value"]


def claim_2(pair: pd.Series, other: str, paper_gap: int, n_test: int) -> tuple[str, str]:
    """Claim 2's verdict and reason for the hybrid against ``other``, from their row of
    ``evaluation.mcnemar_table``; ``paper_gap``: the paper's accuracy difference in points, said for the
    paper's test size."""
    hybrid_first = pair["model_a"] == HYBRID
    hybrid_only = int(pair["a_only_correct"] if hybrid_first else pair["b_only_correct"])
    other_only = int(pair["b_only_correct"] if hybrid_first else pair["a_only_correct"])
    p_value = float(pair["p_value"])
    counts = (f"the hybrid alone is right on {hybrid_only} images, {other} alone on {other_only} "
              f"(McNemar exact p = {p_text(p_value)}; significant when p < {SIGNIFICANCE})")
    if p_value < SIGNIFICANCE and hybrid_only > other_only:
        verdict, reason = SUPPORTED, f"{counts}: the hybrid is right significantly more often."
    elif p_value < SIGNIFICANCE and other_only > hybrid_only:
        verdict, reason = CONTRADICTED, f"{counts}: {other} is right significantly more often."
    else:
        verdict, reason = INCONCLUSIVE, f"{counts}: a difference chance alone could give."
    n = int(pair["n"]) if "n" in pair and pd.notna(pair["n"]) else n_test
    if n == PAPER_TEST_IMAGES and paper_gap > 0:
        best = _best_case_p(paper_gap, n)
        if best < SIGNIFICANCE:
            reason += (f" On {n} images the paper's {paper_gap}-point gap can reach significance only if the "
                       f"discordant images fall nearly all one way: {paper_gap} vs 0 gives p = {p_text(best)}.")
        else:
            reason += (f" On {n} images the paper's {paper_gap}-point gap could not reach significance: even "
                       f"{paper_gap} vs 0 discordant images gives p = {p_text(best)}.")
    return verdict, reason


# How the per-image losses of claim 3 were computed (``loss_gap["batchnorm"]``, from the model's run.json).
RECOMPUTED, MOVING, NO_BATCHNORM = "recomputed", "moving", "none"


def claim_3(loss_gap: dict | None, keras_gap: float) -> tuple[str, str, str]:
    """Claim 3's verdict, reason and this run's figure, from the per-image loss gap's interval.

    ``loss_gap``: ``comparison.loss_gap``'s dict; None for a run without per-image losses. Losses
    computed with BatchNorm's moving statistics in a model whose BatchNorm trains (runs from before the
    statistics were recomputed) are inconclusive: a stale statistic inflates the training loss as much
    as the validation loss or more, so the gap is biased. ``keras_gap``: Keras' epoch averages, context only.
    """
    context = (f"Keras' epoch averages give val - train loss = {keras_gap:+.3f}, shown as context only: its "
               "training loss is averaged over an epoch of changing weights with dropout on (training mode), "
               "so it is not evidence.")
    if loss_gap is None:
        return INCONCLUSIVE, (
            "the per-image losses are missing (no fit_predictions.csv: a run from before training wrote "
            f"them), so the gap has no interval. {context}"
        ), f"val - train loss = {keras_gap:+.3f} (Keras epoch averages, context only)"
    gap, low, high = (float(loss_gap[k]) for k in ("gap", "low", "high"))
    batchnorm = loss_gap.get("batchnorm", NO_BATCHNORM)
    how = {RECOMPUTED: "inference mode, BatchNorm statistics recomputed from training images",
           MOVING: "inference mode, BatchNorm's moving statistics",
           NO_BATCHNORM: "inference mode"}[batchnorm]
    shown = (f"val - train loss = {gap:+.3f} [{low:+.3f}, {high:+.3f}] (per image, {how}; "
             f"{int(loss_gap['n_train'])} training, {int(loss_gap['n_val'])} validation images)")
    level = f"{100 * float(loss_gap.get('confidence', 0.95)):.0f}%"
    bound = f"{SLIGHT_OVERFIT_MAX_GAP:.2f}"
    if not (np.isfinite(low) and np.isfinite(high)):
        verdict, reason = INCONCLUSIVE, f"the loss gap has no interval ({loss_gap.get('method', '')})."
    elif batchnorm == MOVING:
        verdict, reason = INCONCLUSIVE, (
            "the per-image losses were computed with BatchNorm's moving statistics, which can describe "
            "earlier weights than the kept ones and then inflate the training loss: the rule needs them "
            "recomputed from training images (runs made since this rule do so).")
    elif not at_least(high, 0):
        verdict, reason = CONTRADICTED, (
            f"the {level} interval of the loss gap lies below 0: the kept model fits its validation images "
            "better than its training images, so it does not overfit.")
    elif not at_most(low, SLIGHT_OVERFIT_MAX_GAP):
        verdict, reason = CONTRADICTED, (
            f"the {level} interval of the loss gap lies above {bound}: the kept model overfits more than "
            f"slightly (this project's bound for \"slightly\": a gap of at most {bound}).")
    elif not at_most(low, 0) and at_most(high, SLIGHT_OVERFIT_MAX_GAP):
        verdict, reason = SUPPORTED, (
            f"the {level} interval of the loss gap lies above 0 and below {bound}: the kept model's "
            "validation loss is higher than its training loss beyond what the choice of images explains, "
            f"and by no more than this project's bound for \"slightly\" ({bound}).")
    elif at_most(low, 0):
        verdict, reason = INCONCLUSIVE, (
            f"the {level} interval of the loss gap includes 0: these images cannot tell a slight overfit "
            "from none.")
    else:
        verdict, reason = INCONCLUSIVE, (
            f"the {level} interval of the loss gap lies above 0 but reaches past {bound}: an overfit, which "
            "these images cannot tell slight from more.")
    return verdict, f"{reason} {context}", shown


def _interval_text(row) -> str:
    return f"{row['value']:.2f} [{row['low']:.2f}, {row['high']:.2f}]"


def claim_verdicts(
    ours: pd.DataFrame,
    mcnemar: pd.DataFrame,
    best_epochs: pd.DataFrame,
    weights=None,
    paper_metrics: pd.DataFrame | None = None,
    loss_gap: dict | None = None,
) -> pd.DataFrame:
    """A verdict for each claim of the paper (``paper.claims()``), with the reason, from this run's results.

    One row per claim id: "1", "2a" (the hybrid vs ResNet50), "2b" (vs the LSTM), "3". A verdict is
    one of ``OUTCOMES``; for a run trained from scratch (``weights`` None) it is "not tested in the
    paper's setting", and the reason says what the run's own numbers would indicate. ``ours``: the
    long metrics table (``evaluation.metrics_table``); ``mcnemar``: ``evaluation.mcnemar_table``;
    ``best_epochs``: ``evaluation.best_epochs``; ``loss_gap``: ``comparison.loss_gap``.
    """
    paper_metrics = paper.table6() if paper_metrics is None else paper_metrics
    claims = paper.claims().set_index("id")
    hybrid = ours[ours["model"] == HYBRID].set_index("metric")
    n_test = int(hybrid["n"].max())
    accuracy = ours[ours["metric"] == "accuracy"].set_index("model")["value"]
    rows = []

    paper_values = paper_metrics.loc[HYBRID]
    verdict, reason = claim_1(hybrid, paper_values)
    rows.append({
        "claim": "1",
        "text": claims.loc[1, "claim"],
        "paper": " / ".join(f"{paper_values[m]:.2f}" for m in METRICS),
        "ours": " / ".join(_interval_text(hybrid.loc[m]) for m in METRICS),
        "verdict": verdict,
        "reason": reason,
    })

    for claim_id, other in (("2a", RESNET), ("2b", LSTM)):
        pair = mcnemar[
            ((mcnemar["model_a"] == HYBRID) & (mcnemar["model_b"] == other))
            | ((mcnemar["model_a"] == other) & (mcnemar["model_b"] == HYBRID))
        ].iloc[0]
        paper_gap = round(100 * (paper_metrics.loc[HYBRID, "accuracy"] - paper_metrics.loc[other, "accuracy"]))
        verdict, reason = claim_2(pair, other, paper_gap, n_test)
        rows.append({
            "claim": claim_id,
            "text": f"{claims.loc[2, 'claim']} (this row: vs {other})",
            "paper": f"{paper_metrics.loc[HYBRID, 'accuracy']:.2f} vs {paper_metrics.loc[other, 'accuracy']:.2f} "
                     "(no test of significance)",
            "ours": f"{accuracy[HYBRID]:.2f} vs {accuracy[other]:.2f}",
            "verdict": verdict,
            "reason": reason,
        })

    best = best_epochs.loc[HYBRID]
    paper_fit = claims.loc[3, "paper_values"]
    paper_gap = paper_fit[f"{HYBRID} val_loss"] - paper_fit[f"{HYBRID} train_loss"]
    verdict, reason, shown = claim_3(loss_gap, float(best["val_loss"] - best["train_loss"]))
    rows.append({
        "claim": "3",
        "text": claims.loc[3, "claim"],
        "paper": f"val - train loss = {paper_gap:+.3f} (Keras epoch averages, no interval)",
        "ours": shown,
        "verdict": verdict,
        "reason": reason,
    })

    verdicts = pd.DataFrame(rows)
    if not config.is_paper_setting(weights):
        verdicts["reason"] = [f"{SETTING_NOTE} Taken alone, its numbers would indicate *{verdict}*: {reason}"
                              for verdict, reason in zip(verdicts["verdict"], verdicts["reason"])]
        verdicts["verdict"] = NOT_PAPER_SETTING
    return verdicts


def indicated_verdict(verdict: str, reason: str) -> str:
    """What a verdict row's numbers indicate: the verdict itself, or for a run outside the paper's
    setting the outcome its reason names ("would indicate *...*")."""
    if verdict != NOT_PAPER_SETTING:
        return verdict
    match = re.search(r"would indicate \*([^*]+)\*", str(reason))
    return match.group(1) if match else verdict
