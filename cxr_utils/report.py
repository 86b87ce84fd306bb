"""Verdicts on the paper's claims, and the short texts the book shows about a run.

Explained in notebooks/07_comparison and book/report.
"""

from __future__ import annotations

import pandas as pd

SIGNIFICANCE = 0.05
PAPER_TEST_IMAGES = 100
HYBRID, RESNET, LSTM = "ResNet50-LSTM", "ResNet50", "LSTM"
METRICS = ("accuracy", "precision", "recall", "f1")
# Thresholds for the generated findings (report.findings_markdown), on balanced 2-class data.
UNSTEADY_RANGE = 0.2  # validation accuracy swinging this much between epochs is unsteady
UNDERFIT_TRAIN_ACCURACY = 0.8  # ending below this on the training images is underfitting
NEAR_CHANCE = 0.55  # a balanced validation accuracy at or below this is about a coin toss

DISCLAIMER = (
    "A teaching and replication project, not a medical device: these predictions must not be "
    "used to diagnose anyone."
)


def settings_markdown(parameters: dict) -> str:
    """One line naming every setting of the run, shown at the top of each executed page."""
    shown = {k: v for k, v in parameters.items() if k not in ("cache_dir",)}
    items = " · ".join(f"`{name}={value!r}`" for name, value in shown.items())
    warning = ""
    if parameters.get("weights") is None:
        warning = (
            "\n\n**Trained from scratch** (`weights=None`): the paper used ImageNet weights; "
            "see the replication report for what this changes."
        )
    return f"**Run settings:** {items}{warning}"


def _interval_text(row) -> str:
    return f"{row['value']:.2f} [{row['low']:.2f}, {row['high']:.2f}]"


def claim_verdicts(
    ours: pd.DataFrame,
    mcnemar: pd.DataFrame,
    best_epochs: pd.DataFrame,
    weights=None,
    paper_metrics: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """A verdict for each claim of PAPER.md, with the reason, from this run's results.

    Args:
        ours: long form with columns model, metric, value, low, high, n (95% intervals).
        mcnemar: columns model_a, model_b, a_only_correct, b_only_correct, p_value.
        best_epochs: index model; columns train_loss, train_accuracy, val_loss, val_accuracy.
        weights: the run's backbone weights; anything but "imagenet" departs from the paper.
        paper_metrics: the paper's Table 6 (``cxr_utils.paper.table6()``).
    """
    from cxr_utils import paper

    paper_metrics = paper.table6() if paper_metrics is None else paper_metrics
    setting_note = "" if weights == "imagenet" else (
        " Setting differs from the paper: backbone trained from scratch, not ImageNet weights."
    )
    hybrid = ours[ours["model"] == HYBRID].set_index("metric")
    n_test = int(hybrid["n"].max())
    rows = []

    # Claim 1: the hybrid's four test metrics.
    paper_values = paper_metrics.loc[HYBRID]
    outside_below = [m for m in METRICS if hybrid.loc[m, "high"] < paper_values[m]]
    outside_above = [m for m in METRICS if hybrid.loc[m, "low"] > paper_values[m]]
    if n_test < PAPER_TEST_IMAGES:
        verdict, reason = "not testable here", (
            f"only {n_test} test images (the paper used {PAPER_TEST_IMAGES}); the intervals are too wide."
        )
    elif outside_below:
        verdict, reason = "not supported", (
            f"the paper's {', '.join(outside_below)} lie above this run's 95% interval."
        )
    elif outside_above:
        verdict, reason = "exceeded", f"this run is above the paper on {', '.join(outside_above)}."
    else:
        verdict, reason = "consistent", "each of the paper's values lies inside this run's 95% interval."
    rows.append({
        "claim": 1,
        "text": "ResNet50-LSTM reaches 95% accuracy, 96% precision, 94% recall, 95% F1",
        "paper": " / ".join(f"{paper_values[m]:.2f}" for m in METRICS),
        "ours": " / ".join(_interval_text(hybrid.loc[m]) for m in METRICS),
        "verdict": verdict,
        "reason": reason + setting_note,
    })

    # Claim 2: the hybrid beats each single model; a paired test on the same images decides.
    parts, verdicts = [], []
    for other in (RESNET, LSTM):
        pair = mcnemar[
            ((mcnemar["model_a"] == HYBRID) & (mcnemar["model_b"] == other))
            | ((mcnemar["model_a"] == other) & (mcnemar["model_b"] == HYBRID))
        ].iloc[0]
        hybrid_only = pair["a_only_correct"] if pair["model_a"] == HYBRID else pair["b_only_correct"]
        other_only = pair["b_only_correct"] if pair["model_a"] == HYBRID else pair["a_only_correct"]
        better = hybrid_only > other_only
        significant = pair["p_value"] < SIGNIFICANCE
        verdicts.append("supported" if better and significant else "not supported")
        parts.append(
            f"vs {other}: hybrid alone right on {int(hybrid_only)}, {other} alone on {int(other_only)}, "
            f"McNemar p = {pair['p_value']:.3g}"
        )
    rows.append({
        "claim": 2,
        "text": "ResNet50-LSTM beats ResNet50 (93%) and LSTM (84%)",
        "paper": "0.95 vs 0.93 and 0.84 (no test of significance)",
        "ours": " / ".join(
            f"{m}: {ours[(ours['model'] == m) & (ours['metric'] == 'accuracy')]['value'].iloc[0]:.2f}"
            for m in (HYBRID, RESNET, LSTM)
        ),
        "verdict": "supported" if all(v == "supported" for v in verdicts) else "not supported",
        "reason": "; ".join(parts) + f" (significant when p < {SIGNIFICANCE})." + setting_note,
    })

    # Claim 3: validation loss above training loss at the hybrid's best epoch.
    best = best_epochs.loc[HYBRID]
    gap = best["val_loss"] - best["train_loss"]
    rows.append({
        "claim": 3,
        "text": "ResNet50-LSTM overfits slightly (validation loss 0.3150 > training loss 0.2938)",
        "paper": "val - train loss = +0.021",
        "ours": f"val - train loss = {gap:+.3f}",
        "verdict": "reproduced" if gap > 0 else "not reproduced",
        "reason": (
            "a validation loss above the training loss at the chosen epoch; on a validation set "
            "of 100 images or fewer such a small gap is weak evidence of overfitting either way." + setting_note
        ),
    })
    return pd.DataFrame(rows)


def verdicts_markdown(verdicts: pd.DataFrame) -> str:
    """The claims table as Markdown, for the book's replication report."""
    return verdicts.to_markdown(index=False)


def run_record_markdown(record: dict) -> str:
    """The run record (run.json) as Markdown tables for the reproducibility page."""
    lines = ["| setting | value |", "|---|---|"]
    for name, value in record.get("settings", {}).items():
        lines.append(f"| {name} | `{value!r}` |")
    lines += ["", "| notebook | wall time (s) | status | code SHA-256 |", "|---|---|---|---|"]
    for name, entry in record.get("notebooks", {}).items():
        lines.append(
            f"| {name} | {entry.get('wall_time_s', '')} | {entry.get('status', '')} | "
            f"`{entry.get('code_sha256', '')[:12]}` |"
        )
    hardware = record.get("hardware", {})
    lines += ["", "| hardware / version | value |", "|---|---|"]
    for name in ("accelerator", "cpu", "cpu_count", "platform", "keras_backend"):
        lines.append(f"| {name} | {hardware.get(name, '')} |")
    for name, version in record.get("versions", {}).items():
        lines.append(f"| {name} | {version} |")
    lines += ["", f"Git commit `{record.get('git_commit')}`, created {record.get('created_utc')}, "
              f"total wall time {record.get('wall_time_s')} s."]
    return "\n".join(lines) + "\n"


def findings_markdown(findings: pd.DataFrame, mcnemar_extended: pd.DataFrame | None = None,
                      verdicts: pd.DataFrame | None = None,
                      verdicts_extended: pd.DataFrame | None = None) -> str:
    """What a run shows, written from its numbers (``evaluation.training_findings``) so that the
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
        if row.val_accuracy_max - row.val_accuracy_min >= UNSTEADY_RANGE:
            lines.append(
                f"- **{name}**: validation accuracy ranged from {row.val_accuracy_min:.2f} to "
                f"{row.val_accuracy_max:.2f} and sat at or near chance in {int(row.epochs_near_chance)} "
                f"of {int(row.epochs)} epochs, while training accuracy ended at "
                f"{row.final_train_accuracy:.2f}. The chosen epoch is one good draw from an unsteady "
                "series, not a stable model."
            )
        if row.final_train_accuracy < UNDERFIT_TRAIN_ACCURACY:
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
        merged = verdicts.merge(verdicts_extended, on="claim", suffixes=("", "_extended"))
        changed = merged[merged["verdict"] != merged["verdict_extended"]]
        if len(changed):
            for row in changed.itertuples():
                lines.append(f"- **Claim {row.claim}** changes from *{row.verdict}* on the split's test "
                             f"set to *{row.verdict_extended}* on the extended one.")
        else:
            lines.append("- **No verdict changes** between the split's test set and the extended one: "
                         "the narrower intervals confirm the verdicts rather than overturn them.")
    return "\n".join(lines) + "\n"
