"""The tables the chapters and the report show, formatted for reading, from a run's saved files.

``reader_table`` and ``show_table`` format the tables the chapters show: the columns a reader
needs, figures rounded, a value and its interval as one cell, a link to the whole CSV below
(``csv_note``); ``verdicts_markdown`` the claims as a compact table with the reasons listed below
it; ``paper_tables`` the paper's tables beside this run's. The pages of a published run
(results at a glance, the report's tables and verdicts, how to reproduce the run) are written
with them by ``cxr_utils.run_pages``. Explained in notebooks/06_evaluation and
notebooks/07_comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cxr_utils import claims, report
from cxr_utils.config import METRICS
from cxr_utils.report import MISSING, p_value  # noqa: F401  (re-exported: the tables' formats in one place)


# -- formatting -------------------------------------------------------------------------------------


def number(value, digits: int = 2) -> str:
    """A figure to ``digits`` decimals; a missing one as a dash."""
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
    """A Markdown pipe table with no index column (pandas' ``to_markdown``, every table the
    package writes); ``align`` per column: "l", "r" or "c". Cells are shown as given (already
    formatted: no re-reading as numbers), a "|" escaped and a line break made a space."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    table = pd.DataFrame([[cell(value) for value in row] for row in rows], columns=[cell(name) for name in header])
    colalign = [_ALIGN[a] for a in align or ["l"] * len(header)]
    return table.to_markdown(index=False, tablefmt="pipe", colalign=colalign, disable_numparse=True) + "\n"


# Where cxr_utils.publish copies a run's results folder: beside the executed pages, so a page links
# a file of the run as f"{PUBLISHED_RESULTS}/{its path within the results folder}".
PUBLISHED_RESULTS = "results"


def _is_p_value(column) -> bool:
    return column in ("p", "p_value") or str(column).endswith("_p")


def _cell(column, value, digits: int) -> str:
    """One cell of ``reader_table``: a figure rounded, a p-value to two significant digits, a
    whole number or text as it is, yes/no for a flag, a dash for a missing value."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return MISSING
    if pd.api.types.is_integer(value):
        return str(value)
    if pd.api.types.is_float(value):
        return p_value(value) if _is_p_value(column) else number(value, digits)
    return str(value)


def _index_as_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its index as columns, unless it is 0, 1, 2, ... (an unnamed level: "")."""
    if isinstance(table.index, pd.RangeIndex) and table.index.name is None:
        return table
    return table.rename_axis(index=["" if n is None else n for n in table.index.names]).reset_index()


def reader_table(table: pd.DataFrame, columns: Sequence[str] | Mapping[str, str] | None = None,
                 intervals: Mapping[str, tuple[str, str, str]] | None = None, digits: int = 2) -> pd.DataFrame:
    """The columns of ``table`` a reader needs, as text, with no index: the one formatting of the
    chapters' tables (``show_table`` renders it).

    ``columns``: the columns to show, in order: a list, or a dict from column to the header shown;
    a named index counts as a column (an unnamed one, other than 0, 1, 2, ..., as the column "");
    None shows them all. ``intervals``: new columns, each a value with its interval in one cell,
    "0.83 [0.74, 0.89]", from a (value, low, high) triple of columns; name them in ``columns`` to
    place them (with ``columns=None`` each takes its value column's place, and the triple's
    columns are not shown). Figures to ``digits`` decimals; p-values (a column named p_value or
    ending in _p) to two significant digits; whole numbers and text as they are; flags as yes/no;
    a missing value as a dash. Explained in notebooks/06_evaluation.
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

    def joined(value, low, high) -> str:
        return MISSING if pd.isna(value) else interval(value, low, high, digits)

    shown = {}
    for column, header in headers.items():
        if column in intervals:
            value, low, high = intervals[column]
            shown[header] = [joined(*row) for row in zip(frame[value], frame[low], frame[high])]
        else:
            shown[header] = [_cell(column, v, digits) for v in frame[column]]
    return pd.DataFrame(shown, columns=list(shown))


def csv_note(csv: str | Sequence[str]) -> str:
    """Where the whole table is: each CSV, a path within the run's results folder, linked from the
    executed page (``PUBLISHED_RESULTS``); the book offers it for download."""
    paths = [csv] if isinstance(csv, str) else list(csv)
    links = ", ".join(f"[`{path}`]({PUBLISHED_RESULTS}/{path})" for path in paths)
    return f"Every row and column, unrounded: {links} in the run's results folder.\n"


def show_table(table: pd.DataFrame, columns: Sequence[str] | Mapping[str, str] | None = None,
               intervals: Mapping[str, tuple[str, str, str]] | None = None, digits: int = 2,
               csv: str | Sequence[str] | None = None, rows: int | None = None):
    """A table as a chapter shows it: ``reader_table(table, columns, intervals, digits)`` as a
    Markdown table (figures right-aligned, no index column), only its first ``rows`` rows when
    given (saying how many there are), and below it ``csv_note(csv)``: the whole table, linked.
    ``csv``: a path within the run's results folder, or several. Returns an IPython ``Markdown``
    object (its text in ``.data``). Explained in notebooks/06_evaluation.
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
        if intervals and column in intervals:
            return True
        return (column in frame.columns and pd.api.types.is_numeric_dtype(frame[column])
                and not pd.api.types.is_bool_dtype(frame[column]))

    text = shown.apply(lambda values: values.str.replace("|", "\\|", regex=False)).to_markdown(
        index=False, disable_numparse=True, colalign=["right" if right(h) else "left" for h in shown.columns])
    notes = []
    if len(shown) < total:
        notes.append(f"The first {len(shown)} of {total} rows.\n")
    if csv:
        notes.append(csv_note(csv))
    return Markdown("\n\n".join([text, *notes]).rstrip() + "\n")


def verdict_text(verdict: str, reason: str) -> str:
    """A verdict as a table cell: outside the paper's setting, with what the numbers indicate."""
    indicated = claims.indicated_verdict(verdict, reason)
    if verdict == claims.NOT_PAPER_SETTING and indicated != verdict:
        return f"**{verdict}** (its numbers alone: *{indicated}*)"
    return f"**{verdict}**"


# -- the verdicts, compact --------------------------------------------------------------------------


def verdicts_markdown(verdicts: pd.DataFrame, disclaimer: bool = True) -> str:
    """The claims as a compact table (claim, verdict, this run, the paper), the reasons as a list
    below it, and the disclaimer (unless ``disclaimer=False``: a chapter that ends with it): the
    long reasons never stretch a table column. Explained in notebooks/07_comparison."""
    rows = [[f"**{row.claim}** {row.text}", verdict_text(row.verdict, row.reason), row.ours, row.paper]
            for row in verdicts.itertuples()]
    lines = [markdown_table(["claim", "verdict", "this run", "the paper"], rows), "Why:", ""]
    lines += [f"- **Claim {row.claim}**: {row.reason}" for row in verdicts.itertuples()]
    return "\n".join(lines) + (f"\n\n{report.DISCLAIMER}\n" if disclaimer else "\n")


# -- the paper's tables beside this run's ------------------------------------------------------------


def paper_tables(tables: dict, mcnemar_extended: pd.DataFrame | None = None) -> dict[str, str]:
    """The paper's tables beside this run's, each as Markdown under a bold title: "table2",
    "confusion" (Tables 3-5), "table6", "table7" and, when there are paired tests, "mcnemar" (with
    the extended test set's beside, when given). ``tables``: ``comparison.compare_with_paper``'s.
    Each cell "the paper / this run", losses to 3 decimals, other metrics to 2 with their 95%
    intervals, p-values to 2 significant digits, no index column. Explained in
    notebooks/07_comparison."""
    paper_side, ours_side = "paper", "this run"
    parts = {}

    table2 = tables["table2"]
    # Three decimals throughout: the paper reports Table 2 to four (0.9150), and two would round its values.
    columns = [("train_loss", "training loss", 3), ("train_accuracy", "training accuracy", 3),
               ("val_loss", "validation loss", 3), ("val_accuracy", "validation accuracy", 3)]
    rows = [[model] + [f"{number(table2.loc[model, (paper_side, key)], digits)} / "
                       f"{number(table2.loc[model, (ours_side, key)], digits)}" for key, _, digits in columns]
            for model in table2.index]
    parts["table2"] = ("**Table 2: training and validation at the best epoch** (each cell: the paper / this run)\n\n"
                       + markdown_table(["model"] + [label for _, label, _ in columns], rows, ["l"] + ["r"] * 4))

    confusion = tables["confusion"]
    keys = (("tp", "TP"), ("fn", "FN"), ("fp", "FP"), ("tn", "TN"))
    rows = [[model] + [f"{number(confusion.loc[model, (paper_side, key)], 0)} / "
                       f"{number(confusion.loc[model, (ours_side, key)], 0)}" for key, _ in keys]
            for model in confusion.index]
    n_test = int(tables["ours_long"]["n"].max())
    parts["confusion"] = (f"**Tables 3-5: confusion counts on the test set** ({n_test} images here; each cell: "
                          "the paper / this run; COVID is the positive class)\n\n"
                          + markdown_table(["model"] + [label for _, label in keys], rows, ["l"] + ["r"] * 4))

    ours = tables["ours_long"].set_index(["model", "metric"])
    table6 = tables["table6"]
    rows = [[model] + [f"{number(table6.loc[model, (paper_side, metric)])} / "
                       + (interval(*ours.loc[(model, metric), ["value", "low", "high"]])
                          if (model, metric) in ours.index else MISSING) for metric in METRICS]
            for model in table6.index]
    parts["table6"] = ("**Table 6: test metrics** (each cell: the paper / this run with its 95% interval)\n\n"
                       + markdown_table(["model", "accuracy", "precision", "recall", "F1"], rows, ["l"] + ["r"] * 4))

    table7 = tables["table7"]
    rows = [[row.author, row.data, row.method] + [number(getattr(row, m)) for m in METRICS]
            for row in table7.itertuples()]
    parts["table7"] = ("**Table 7: earlier work, with this run added**\n\n"
                       + markdown_table(["study", "data", "method", "accuracy", "precision", "recall", "F1"], rows,
                                        ["l", "l", "l", "r", "r", "r", "r"]))

    extended = mcnemar_extended
    paired = tables["mcnemar"]
    if len(paired):
        def described(row) -> str:
            return f"{int(row.a_only_correct)} vs {int(row.b_only_correct)}, p = {p_value(row.p_value)}"

        header = ["models (A vs B)", f"test set, n={int(paired['n'].max()) if 'n' in paired else n_test}"]
        lookup = {}
        if extended is not None and len(extended):
            header.append(f"extended test set, n={int(extended['n'].max())}")
            lookup = {(r.model_a, r.model_b): described(r) for r in extended.itertuples()}
        rows = [[f"{row.model_a} vs {row.model_b}", described(row)]
                + ([lookup.get((row.model_a, row.model_b), MISSING)] if lookup else [])
                for row in paired.itertuples()]
        parts["mcnemar"] = ("**Paired comparisons** (McNemar's exact test; each cell: images only A got right vs only "
                            "B, and p)\n\n" + markdown_table(header, rows))
    return parts


