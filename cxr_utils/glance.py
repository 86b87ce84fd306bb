"""The tables the chapters and the report show, formatted for reading, from a run's saved files.

``show_table`` shows the columns a reader needs, figures rounded, a value and its interval in one
cell, the whole CSV linked below; ``verdicts_markdown`` the claims compactly, the reasons below;
``paper_tables`` the paper's tables beside this run's. ``cxr_utils.run_pages`` writes a published
run's pages with them. Explained in notebooks/06_evaluation and notebooks/07_comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cxr_utils import claims, report
from cxr_utils.config import METRICS
from cxr_utils.report import MISSING, p_value  # noqa: F401  (re-exported: the tables' formats in one place)


def number(value, digits: int = 2) -> str:
    """A figure to ``digits`` decimals; a missing one (None, NaN) as a dash."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return MISSING if value is None else str(value)
    return MISSING if math.isnan(value) else f"{value:.{digits}f}"


def interval(value, low, high, digits: int = 2) -> str:
    """"0.73 [0.64, 0.81]": a value with its 95% interval."""
    return f"{number(value, digits)} [{number(low, digits)}, {number(high, digits)}]"


_ALIGN = {"l": "left", "r": "right", "c": "center"}


def markdown_table(header: list[str], rows: list[list], align: list[str] | None = None) -> str:
    """A Markdown pipe table with no index column; ``align`` per column: "l", "r" or "c". Cells are
    shown as given (no re-reading as numbers), a "|" escaped and a line break made a space."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    table = pd.DataFrame([[cell(value) for value in row] for row in rows], columns=[cell(name) for name in header])
    colalign = [_ALIGN[a] for a in align or ["l"] * len(header)]
    return table.to_markdown(index=False, tablefmt="pipe", colalign=colalign, disable_numparse=True) + "\n"


# Where cxr_utils.publish copies a run's results folder: beside the executed pages, so a page links
# a file of the run as f"{PUBLISHED_RESULTS}/{its path within the results folder}".
PUBLISHED_RESULTS = "results"


def _cell(column, value, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return MISSING
    if pd.api.types.is_integer(value):
        return str(value)
    if pd.api.types.is_float(value):
        is_p_value = column in ("p", "p_value") or str(column).endswith("_p")
        return p_value(value) if is_p_value else number(value, digits)
    return str(value)


def _index_as_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its index as columns, unless it is 0, 1, 2, ... (an unnamed level: "")."""
    if isinstance(table.index, pd.RangeIndex) and table.index.name is None:
        return table
    return table.rename_axis(index=["" if n is None else n for n in table.index.names]).reset_index()


def reader_table(table: pd.DataFrame, columns: Sequence[str] | Mapping[str, str] | None = None,
                 intervals: Mapping[str, tuple[str, str, str]] | None = None, digits: int = 2) -> pd.DataFrame:
    """The columns of ``table`` a reader needs, as text, with no index: the one formatting of the
    chapters' tables.

    ``columns``: a list, or a dict from column to the header shown, in order (None: all); a named
    index counts as a column (an unnamed one, other than 0, 1, 2, ..., as the column "").
    ``intervals``: new columns "0.83 [0.74, 0.89]", each from a (value, low, high) triple of
    columns, placed where ``columns`` names them (with ``columns=None`` in their value column's
    place, the triple not shown). Figures to ``digits`` decimals; p-values (a column p, p_value or
    ending in _p) to two significant digits; flags as yes/no; a missing value as a dash.
    Explained in notebooks/06_evaluation.
    """
    intervals = dict(intervals or {})
    frame = _index_as_columns(table)
    if columns is None:
        used = {column for triple in intervals.values() for column in triple}
        in_place = {triple[0]: name for name, triple in intervals.items()}
        columns = [in_place.get(c, c) for c in frame.columns if c not in used or c in in_place]
        columns += [name for name in intervals if name not in columns]
    headers = dict(columns) if isinstance(columns, Mapping) else {column: column for column in columns}
    unknown = [c for c in [*headers, *(c for t in intervals.values() for c in t)]
               if c not in intervals and c not in frame.columns]
    if unknown:
        raise KeyError(f"no column {unknown} in the table; its columns: {list(frame.columns)}")
    shown = {}
    for column, header in headers.items():
        if column in intervals:
            value, low, high = (frame[name] for name in intervals[column])
            shown[header] = [MISSING if pd.isna(v) else interval(v, lo, hi, digits)
                             for v, lo, hi in zip(value, low, high)]
        else:
            shown[header] = [_cell(column, v, digits) for v in frame[column]]
    return pd.DataFrame(shown, columns=list(shown))


def csv_note(csv: str | Sequence[str]) -> str:
    """Where the whole table is: each CSV (a path within the run's results folder), linked from the
    executed page for download."""
    paths = [csv] if isinstance(csv, str) else list(csv)
    links = ", ".join(f"[`{path}`]({PUBLISHED_RESULTS}/{path})" for path in paths)
    return f"Every row and column, unrounded: {links} in the run's results folder.\n"


def show_table(table: pd.DataFrame, columns: Sequence[str] | Mapping[str, str] | None = None,
               intervals: Mapping[str, tuple[str, str, str]] | None = None, digits: int = 2,
               csv: str | Sequence[str] | None = None, rows: int | None = None):
    """A table as a chapter shows it: ``reader_table`` as Markdown, figures right-aligned, its first
    ``rows`` rows (saying how many there are), the whole table linked below (``csv_note``). Returns
    an IPython ``Markdown`` object (its text in ``.data``). Explained in notebooks/06_evaluation.
    """
    from IPython.display import Markdown
    shown = reader_table(table, columns, intervals, digits)
    total = len(shown)
    if rows is not None and total > rows:
        shown = shown.head(rows)
    frame = _index_as_columns(table)
    behind = dict(zip(shown.columns, columns if isinstance(columns, Mapping) else shown.columns))

    def right(header) -> bool:  # figures and intervals right-aligned, text and flags left
        column = behind[header]
        return bool(intervals and column in intervals) or (
            column in frame.columns and pd.api.types.is_numeric_dtype(frame[column])
            and not pd.api.types.is_bool_dtype(frame[column]))

    text = shown.apply(lambda values: values.str.replace("|", "\\|", regex=False)).to_markdown(
        index=False, disable_numparse=True, colalign=["right" if right(h) else "left" for h in shown.columns])
    notes = [f"The first {len(shown)} of {total} rows.\n"] if len(shown) < total else []
    if csv:
        notes.append(csv_note(csv))
    return Markdown("\n\n".join([text, *notes]).rstrip() + "\n")


def verdict_text(verdict: str, reason: str) -> str:
    """A verdict as a table cell: outside the paper's setting, with what the numbers indicate."""
    indicated = claims.indicated_verdict(verdict, reason)
    if verdict == claims.NOT_PAPER_SETTING and indicated != verdict:
        return f"**{verdict}** (its numbers alone: *{indicated}*)"
    return f"**{verdict}**"


def verdicts_markdown(verdicts: pd.DataFrame, disclaimer: bool = True) -> str:
    """The claims as a compact table (claim, verdict, this run, the paper), the long reasons listed
    below it, then the disclaimer (unless ``disclaimer=False``). Explained in notebooks/07_comparison."""
    rows = [[f"**{row.claim}** {row.text}", verdict_text(row.verdict, row.reason), row.ours, row.paper]
            for row in verdicts.itertuples()]
    lines = [markdown_table(["claim", "verdict", "this run", "the paper"], rows), "Why:", ""]
    lines += [f"- **Claim {row.claim}**: {row.reason}" for row in verdicts.itertuples()]
    return "\n".join(lines) + (f"\n\n{report.DISCLAIMER}\n" if disclaimer else "\n")


def paper_tables(tables: dict, mcnemar_extended: pd.DataFrame | None = None) -> dict[str, str]:
    """The paper's tables beside this run's, each as Markdown under a bold title: "table2",
    "confusion" (Tables 3-5), "table6", "table7" and, when there are paired tests, "mcnemar" (with
    the extended test set's beside, when given). ``tables``: ``comparison.compare_with_paper``'s.
    Each cell "the paper / this run"; Table 2 to 3 decimals, other metrics to 2 with their 95%
    intervals. Explained in notebooks/07_comparison."""
    def beside(table, keys, digits) -> list[list[str]]:  # a row per model: "the paper / this run" per key
        return [[model] + [f"{number(table.loc[model, ('paper', key)], digits)} / "
                           f"{number(table.loc[model, ('this run', key)], digits)}" for key in keys]
                for model in table.index]

    parts = {}
    # Three decimals throughout: the paper reports Table 2 to four (0.9150), and two would round its values.
    columns = {"train_loss": "training loss", "train_accuracy": "training accuracy",
               "val_loss": "validation loss", "val_accuracy": "validation accuracy"}
    parts["table2"] = ("**Table 2: training and validation at the best epoch** (each cell: the paper / this run)\n\n"
                       + markdown_table(["model", *columns.values()], beside(tables["table2"], columns, 3),
                                        ["l"] + ["r"] * 4))

    keys = {"tp": "TP", "fn": "FN", "fp": "FP", "tn": "TN"}
    n_test = int(tables["ours_long"]["n"].max())
    parts["confusion"] = (f"**Tables 3-5: confusion counts on the test set** ({n_test} images here; each cell: "
                          "the paper / this run; COVID is the positive class)\n\n"
                          + markdown_table(["model", *keys.values()], beside(tables["confusion"], keys, 0),
                                           ["l"] + ["r"] * 4))

    ours = tables["ours_long"].set_index(["model", "metric"])
    table6 = tables["table6"]
    rows = [[model] + [f"{number(table6.loc[model, ('paper', metric)])} / "
                       + (interval(*ours.loc[(model, metric), ["value", "low", "high"]])
                          if (model, metric) in ours.index else MISSING) for metric in METRICS]
            for model in table6.index]
    parts["table6"] = ("**Table 6: test metrics** (each cell: the paper / this run with its 95% interval)\n\n"
                       + markdown_table(["model", "accuracy", "precision", "recall", "F1"], rows, ["l"] + ["r"] * 4))

    rows = [[row.author, row.data, row.method] + [number(getattr(row, m)) for m in METRICS]
            for row in tables["table7"].itertuples()]
    parts["table7"] = ("**Table 7: earlier work, with this run added**\n\n"
                       + markdown_table(["study", "data", "method", "accuracy", "precision", "recall", "F1"], rows,
                                        ["l", "l", "l", "r", "r", "r", "r"]))

    paired = tables["mcnemar"]
    if len(paired):
        def described(row) -> str:
            return f"{int(row.a_only_correct)} vs {int(row.b_only_correct)}, p = {p_value(row.p_value)}"

        header = ["models (A vs B)", f"test set, n={int(paired['n'].max()) if 'n' in paired else n_test}"]
        lookup = {}
        if mcnemar_extended is not None and len(mcnemar_extended):
            header.append(f"extended test set, n={int(mcnemar_extended['n'].max())}")
            lookup = {(r.model_a, r.model_b): described(r) for r in mcnemar_extended.itertuples()}
        rows = [[f"{row.model_a} vs {row.model_b}", described(row)]
                + ([lookup.get((row.model_a, row.model_b), MISSING)] if lookup else [])
                for row in paired.itertuples()]
        parts["mcnemar"] = ("**Paired comparisons** (McNemar's exact test; each cell: images only A got right vs only "
                            "B, and p)\n\n" + markdown_table(header, rows))
    return parts


