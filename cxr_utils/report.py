"""Verdicts on the paper's claims, and the short texts the book shows about a run.

Explained in notebooks/07_comparison and book/report.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from cxr_utils import config, metrics
from cxr_utils.config import METRICS, PROTOCOL

# The outcomes of a verdict (claim_verdicts).
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
NOT_PAPER_SETTING = "not tested in the paper's setting"
OUTCOMES = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_PAPER_SETTING)
SETTING_NOTE = ("Setting differs from the paper: backbone trained from scratch, not ImageNet weights, so this "
                "run does not test the claim.")
SIGNIFICANCE = 0.05
# Stored numbers carry float32 noise (0.550000012 for 0.55): comparisons with a threshold allow this much.
TOLERANCE = 1e-6
PAPER_TEST_IMAGES = PROTOCOL.split_sizes()["test"]
HYBRID, RESNET, LSTM = (config.REGISTRY[model_id].paper_name for model_id in ("resnet50_lstm", "resnet50", "lstm"))
# Thresholds for the generated findings (report.findings_markdown), on balanced 2-class data.
UNSTEADY_RANGE = 0.2  # validation accuracy swinging this much between epochs is unsteady
UNDERFIT_TRAIN_ACCURACY = 0.8  # ending below this on the training images is underfitting
NEAR_CHANCE = 0.55  # a balanced validation accuracy at or below this is about a coin toss

DISCLAIMER = (
    "A teaching and replication project, not a medical device: these predictions must not be "
    "used to diagnose anyone."
)


def _interval_text(row) -> str:
    return f"{row['value']:.2f} [{row['low']:.2f}, {row['high']:.2f}]"


def at_most(value, bound):
    """``value <= bound`` up to float32 noise (``TOLERANCE``): a stored 0.550000012 is 0.55.
    Works on numbers and arrays alike."""
    return (np.asarray(value) <= bound) | np.isclose(value, bound, rtol=0, atol=TOLERANCE)


def at_least(value, bound):
    """``value >= bound`` up to float32 noise (``TOLERANCE``)."""
    return at_most(bound, value)


def _claim1(hybrid: pd.DataFrame, paper_values: pd.Series, n_test: int) -> tuple[str, str]:
    """Claim 1: is each of the paper's four values inside this run's 95% interval?"""
    missing = [m for m in METRICS if not np.isfinite(hybrid.loc[m, ["low", "high"]].astype(float)).all()]
    judged = [m for m in METRICS if m not in missing]
    above = [m for m in judged if not at_most(paper_values[m], hybrid.loc[m, "high"])]
    below = [m for m in judged if not at_least(paper_values[m], hybrid.loc[m, "low"])]
    if n_test < PAPER_TEST_IMAGES:
        return INCONCLUSIVE, (
            f"only {n_test} test images (the paper used {PAPER_TEST_IMAGES}); the intervals are too wide "
            "to say anything."
        )
    if above or below:
        parts = [f"the paper's {', '.join(names)} {'lies' if len(names) == 1 else 'lie'} {side} this run's "
                 f"95% interval{'' if len(names) == 1 else 's'}"
                 for names, side in ((above, "above"), (below, "below")) if names]
        return CONTRADICTED, "; ".join(parts) + "."
    if missing:
        return INCONCLUSIVE, (
            f"no interval for {', '.join(missing)} ({'; '.join(hybrid.loc[missing, 'method'].astype(str))}); "
            "the paper's other values lie inside this run's 95% intervals."
        )
    return SUPPORTED, "each of the paper's four values lies inside this run's 95% interval."


def _best_case_p(gap: int, n: int) -> float:
    """McNemar's exact p on ``n`` images when one model alone is right on ``gap`` and the other on none."""
    truth = np.ones(n, dtype=int)
    other = truth.copy()
    other[:gap] = 0
    return metrics.mcnemar_test(truth, truth, other)["p_value"]


def _claim2(pair: pd.Series, other: str, paper_gap: int, n_test: int) -> tuple[str, str]:
    """Claim 2 for one pair: McNemar's exact test on the images exactly one of the two got right."""
    hybrid_first = pair["model_a"] == HYBRID
    hybrid_only = int(pair["a_only_correct"] if hybrid_first else pair["b_only_correct"])
    other_only = int(pair["b_only_correct"] if hybrid_first else pair["a_only_correct"])
    p_value = float(pair["p_value"])
    counts = (f"the hybrid alone is right on {hybrid_only} images, {other} alone on {other_only} "
              f"(McNemar exact p = {p_value:.3g}; significant when p < {SIGNIFICANCE})")
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
                       f"discordant images fall nearly all one way: {paper_gap} vs 0 gives p = {best:.2g}.")
        else:
            reason += (f" On {n} images the paper's {paper_gap}-point gap could not reach significance: even "
                       f"{paper_gap} vs 0 discordant images gives p = {best:.2g}.")
    return verdict, reason


def _claim3(loss_gap: dict | None, keras_gap: float) -> tuple[str, str, str]:
    """Claim 3: verdict, reason and this run's figure, from the per-image loss gap's interval."""
    context = (f"Keras' epoch averages give val - train loss = {keras_gap:+.3f}, shown as context only: its "
               "training loss is averaged over an epoch of changing weights with dropout on (training mode), "
               "so it is not evidence.")
    if loss_gap is None:
        return INCONCLUSIVE, (
            "the per-image losses are missing (no fit_predictions.csv: a run from before training wrote "
            f"them), so the gap has no interval. {context}"
        ), f"val - train loss = {keras_gap:+.3f} (Keras epoch averages, context only)"
    gap, low, high = (float(loss_gap[k]) for k in ("gap", "low", "high"))
    shown = (f"val - train loss = {gap:+.3f} [{low:+.3f}, {high:+.3f}] (per image, inference mode; "
             f"{int(loss_gap['n_train'])} training, {int(loss_gap['n_val'])} validation images)")
    level = f"{100 * float(loss_gap.get('confidence', 0.95)):.0f}%"
    if not (np.isfinite(low) and np.isfinite(high)):
        verdict, reason = INCONCLUSIVE, f"the loss gap has no interval ({loss_gap.get('method', '')})."
    elif not at_most(low, 0):
        verdict, reason = SUPPORTED, (
            f"the {level} interval of the loss gap lies above 0: the restored model's validation loss is "
            "higher than its training loss beyond what the choice of images explains.")
    elif not at_least(high, 0):
        verdict, reason = CONTRADICTED, (
            f"the {level} interval of the loss gap lies below 0: the restored model fits its validation "
            "images better than its training images.")
    else:
        verdict, reason = INCONCLUSIVE, (
            f"the {level} interval of the loss gap includes 0: these images cannot tell a slight overfit "
            "from none.")
    return verdict, f"{reason} {context}", shown


def claim_verdicts(
    ours: pd.DataFrame,
    mcnemar: pd.DataFrame,
    best_epochs: pd.DataFrame,
    weights=None,
    paper_metrics: pd.DataFrame | None = None,
    loss_gap: dict | None = None,
) -> pd.DataFrame:
    """A verdict for each claim of the paper (``paper.claims()``), with the reason, from this run's results.

    One row per claim id: "1", "2a" (the hybrid vs ResNet50), "2b" (vs the LSTM), "3"; columns
    claim, text, paper, ours, verdict, reason. A verdict is one of ``OUTCOMES``: "supported",
    "contradicted", "inconclusive", or, for a run trained from scratch, "not tested in the paper's
    setting" (the reason then says what the run's own numbers would indicate).

    Args:
        ours: long form with columns model, metric, value, low, high, n (95% intervals).
        mcnemar: columns model_a, model_b, a_only_correct, b_only_correct, p_value (and n).
        best_epochs: index model; columns train_loss, train_accuracy, val_loss, val_accuracy.
        weights: the run's backbone weights; only from scratch (None) departs from the paper
            (``config.is_paper_setting``).
        paper_metrics: the paper's Table 6 (``cxr_utils.paper.table6()``).
        loss_gap: the hybrid's per-image loss gap with its interval (``metrics.loss_gap_interval``,
            as ``comparison.loss_gap`` reads it); None for a run without fit_predictions.csv.
    """
    from cxr_utils import paper

    paper_metrics = paper.table6() if paper_metrics is None else paper_metrics
    claims = paper.claims().set_index("id")
    hybrid = ours[ours["model"] == HYBRID].set_index("metric")
    n_test = int(hybrid["n"].max())
    accuracy = ours[ours["metric"] == "accuracy"].set_index("model")["value"]
    rows = []

    # Claim 1: the hybrid's four test metrics against this run's intervals.
    paper_values = paper_metrics.loc[HYBRID]
    verdict, reason = _claim1(hybrid, paper_values, n_test)
    rows.append({
        "claim": "1",
        "text": claims.loc[1, "claim"],
        "paper": " / ".join(f"{paper_values[m]:.2f}" for m in METRICS),
        "ours": " / ".join(_interval_text(hybrid.loc[m]) for m in METRICS),
        "verdict": verdict,
        "reason": reason,
    })

    # Claim 2, per pair: the hybrid beats each single model; a paired test on the same images decides.
    for claim_id, other in (("2a", RESNET), ("2b", LSTM)):
        pair = mcnemar[
            ((mcnemar["model_a"] == HYBRID) & (mcnemar["model_b"] == other))
            | ((mcnemar["model_a"] == other) & (mcnemar["model_b"] == HYBRID))
        ].iloc[0]
        paper_gap = round(100 * (paper_metrics.loc[HYBRID, "accuracy"] - paper_metrics.loc[other, "accuracy"]))
        verdict, reason = _claim2(pair, other, paper_gap, n_test)
        rows.append({
            "claim": claim_id,
            "text": f"{claims.loc[2, 'claim']} (this row: vs {other})",
            "paper": f"{paper_metrics.loc[HYBRID, 'accuracy']:.2f} vs {paper_metrics.loc[other, 'accuracy']:.2f} "
                     "(no test of significance)",
            "ours": f"{accuracy[HYBRID]:.2f} vs {accuracy[other]:.2f}",
            "verdict": verdict,
            "reason": reason,
        })

    # Claim 3: validation loss above training loss, judged on the uncertainty of the gap.
    best = best_epochs.loc[HYBRID]
    paper_fit = claims.loc[3, "paper_values"]
    paper_gap = paper_fit[f"{HYBRID} val_loss"] - paper_fit[f"{HYBRID} train_loss"]
    verdict, reason, shown = _claim3(loss_gap, float(best["val_loss"] - best["train_loss"]))
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


def verdicts_markdown(verdicts: pd.DataFrame) -> str:
    """The claims table as Markdown, for the book's replication report."""
    return verdicts.to_markdown(index=False)


def findings_markdown(findings: pd.DataFrame, mcnemar_extended: pd.DataFrame | None = None,
                      verdicts: pd.DataFrame | None = None,
                      verdicts_extended: pd.DataFrame | None = None) -> str:
    """What a run shows, written from its numbers (``comparison.training_findings``) so that the
    text can never disagree with the tables: steadiness of validation, selection optimism,
    the ranking on the largest test set, and verdicts that change with more test images."""
    def interval(row, label):
        return f"{row[f'{label}_accuracy']:.2f} [{row[f'{label}_low']:.2f}, {row[f'{label}_high']:.2f}]"

    table = pd.DataFrame({
        "best epoch": [f"{r.best_epoch} of {r.epochs}" for r in findings.itertuples()],
        "validation accuracy over the epochs": [
            f"{r.val_accuracy_min:.2f}-{r.val_accuracy_max:.2f}" for r in findings.itertuples()],
        f"epochs near chance (val. acc. <= {NEAR_CHANCE})": findings["epochs_near_chance"].astype(int).to_list(),
        "chosen epoch's val. acc.": findings["val_accuracy_chosen"].round(2).to_list(),
        "final training accuracy": findings["final_train_accuracy"].round(2).to_list(),
    }, index=findings.index)
    for label in ("test", "extended"):
        if f"{label}_accuracy" in findings:
            n = int(findings[f"{label}_n"].max())
            table[f"{label} accuracy (n={n})"] = [interval(r, label) for _, r in findings.iterrows()]
    lines = [table.to_markdown(), ""]

    for name, row in findings.iterrows():
        if at_least(row.val_accuracy_max - row.val_accuracy_min, UNSTEADY_RANGE):
            lines.append(
                f"- **{name}**: validation accuracy ranged from {row.val_accuracy_min:.2f} to "
                f"{row.val_accuracy_max:.2f} and sat at or near chance in {int(row.epochs_near_chance)} "
                f"of {int(row.epochs)} epochs, while training accuracy ended at "
                f"{row.final_train_accuracy:.2f}. The chosen epoch is one good draw from an unsteady "
                "series, not a stable model."
            )
        if not at_least(row.final_train_accuracy, UNDERFIT_TRAIN_ACCURACY):
            lines.append(
                f"- **{name}** ended with training accuracy {row.final_train_accuracy:.2f} (dropout on): it "
                f"underfits, learning little even about the images it trains on in {int(row.epochs)} "
                "epochs."
            )
    if "selection_optimism" in findings:
        gaps = ", ".join(f"{name} {100 * gap:+.0f}" for name, gap in findings["selection_optimism"].items())
        lines.append(
            f"- **Selection optimism** (chosen epoch's validation accuracy minus test accuracy, in "
            f"points): {gaps}. Keeping the best of {int(findings['epochs'].max())} scores on a small validation "
            "set picks lucky epochs; the test set, used once, is the fair estimate."
        )
    largest = "extended" if "extended_accuracy" in findings else "test"
    if f"{largest}_accuracy" in findings:
        ranked = findings.sort_values(f"{largest}_accuracy", ascending=False)
        order = "; ".join(f"{name} {interval(row, largest)}" for name, row in ranked.iterrows())
        lines.append(f"- **Ranking** on the {'extended ' if largest == 'extended' else ''}test set "
                     f"(n={int(findings[f'{largest}_n'].max())}): {order}.")
    if mcnemar_extended is not None and len(mcnemar_extended):
        pairs = []
        for row in mcnemar_extended.itertuples():
            if row.a_only_correct == row.b_only_correct:
                who = "each right alone equally often"
            else:
                who = (row.model_a if row.a_only_correct > row.b_only_correct else row.model_b) + " right more often"
            verdict = "significant" if row.p_value < SIGNIFICANCE else "not significant"
            pairs.append(f"{row.model_a} vs {row.model_b}: {who} "
                         f"({row.a_only_correct} vs {row.b_only_correct} discordant images, "
                         f"McNemar p = {row.p_value:.3g}, {verdict})")
        lines.append("- **Paired comparisons** on the extended test set: " + "; ".join(pairs) + ".")
    if verdicts is not None and verdicts_extended is not None:
        lines += _verdict_changes(verdicts, verdicts_extended)
    return "\n".join(lines) + "\n"


def _verdict_changes(verdicts: pd.DataFrame, verdicts_extended: pd.DataFrame) -> list[str]:
    """Lines naming each claim whose outcome differs between the split's test set and the extended
    one; outside the paper's setting, the outcomes the run's numbers indicate are compared."""
    def indicated(table):
        return pd.DataFrame({"claim": table["claim"].astype(str),
                             "outcome": [indicated_verdict(v, r) for v, r in zip(table["verdict"], table["reason"])],
                             "setting": table["verdict"] == NOT_PAPER_SETTING})

    merged = indicated(verdicts).merge(indicated(verdicts_extended), on="claim", suffixes=("", "_extended"))
    changed = merged[merged["outcome"] != merged["outcome_extended"]]
    lines = []
    for row in changed.itertuples():
        note = " (what this run's numbers indicate; not tested in the paper's setting)" if row.setting else ""
        lines.append(f"- **Claim {row.claim}** changes from *{row.outcome}* on the split's test set to "
                     f"*{row.outcome_extended}* on the extended one{note}.")
    if merged.empty or len(changed):
        return lines
    return ["- **No verdict changes** between the split's test set and the extended one."]
