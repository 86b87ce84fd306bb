"""Words and thresholds the book's texts share: when an accuracy is about a coin toss, the
not-a-medical-device notice, counts with their nouns, durations and p-values.

Explained in notebooks/07_comparison and book/report.
"""

from __future__ import annotations

import math

MISSING = "–"  # a number a run did not produce, as the tables show it
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


def p_value(value) -> str:
    """A p-value to two significant digits, in scientific notation below 0.01 so that no figure
    shows more than three decimals: 0.087, 0.029, 1.1e-03, 5.9e-05; "–" when missing."""
    value = float(value)
    if math.isnan(value):
        return MISSING
    return f"{value:.1e}" if 0 < value < 0.01 else f"{value:.2g}"
