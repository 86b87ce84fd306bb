"""The short texts the book shows about a run: its findings, and the verdicts table.

Explained in notebooks/07_comparison and book/report.
"""

from __future__ import annotations

import pandas as pd

from cxr_utils.claims import NOT_PAPER_SETTING, SIGNIFICANCE, at_least, indicated_verdict

# Thresholds for the generated findings (report.findings_markdown), on balanced 2-class data.
UNSTEADY_RANGE = 0.2  # validation accuracy swinging this much between epochs is unsteady
UNDERFIT_TRAIN_ACCURACY = 0.8  # ending below this on the training images is underfitting
NEAR_CHANCE = 0.55  # a balanced validation accuracy at or below this is about a coin toss

DISCLAIMER = (
    "A teaching and replication project, not a medical device: these predictions must not be "
    "used to diagnose anyone."
)


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """"1 seed", "3 seeds", "2 copies": a count with its noun (``plural`` where adding an s is wrong)."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def duration_text(seconds: float) -> str:
    """12 s, 3 min 20 s, 2 h 05 min."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


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
