"""What the benchmark scripts share for showing a run: Markdown rendered from its JSON record.

speed.py and profile_head.py each render their record as a summary (the figures the book's
and the README's prose need, so that no figure is typed by hand) followed by pipe tables, and
``--render JSON`` redoes that from a committed record without measuring; tests/test_benchmark.py
checks that book/measured/*.md is exactly that rendering of the JSON beside it. Every script
writes its JSON with ``write_record``, which leaves no folder of the machine in it.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_record(record: dict, path) -> dict:
    """Write a script's JSON record as it is committed to book/measured/: every folder of the
    machine that ran (``--data-dir``, the repository, temporary folders) replaced by its
    placeholder (``cxr_utils.portable``), so that no committed record names one. Returns the
    record as written: render that one, so that the Markdown matches the JSON."""
    from cxr_utils import portable, runtime

    record = json.loads(json.dumps(record, default=str))  # paths and the like as the JSON holds them
    written = portable.portable_record(record, portable.machine_folders(record))
    runtime.write_json(written, path)
    return written


def measured_line(record: dict, note: str = "") -> str:
    """Where and when a record was measured, and how long it took: a rendering's first line."""
    hardware, wall = record["hardware"], record["wall_time_s"]
    minutes = f" (about {wall / 60:.0f} minutes)" if wall >= 90 else ""
    return (f"Measured {record['created_utc']} on {hardware['cpu']} ({hardware['cpu_count']} cores), "
            f"{hardware['accelerator']}; Keras {record['versions'].get('keras')} on "
            f"{hardware['keras_backend']}{note}; wall time {wall:.0f} s{minutes}.\n")


def summary(items: list[str]) -> str:
    """The figures the prose cites, as a short list under a heading."""
    return "**In short**\n\n" + "".join(f"- {item}\n" for item in items)


def markdown_table(title: str, rows: list[dict]) -> str:
    """A titled pipe table: readable in a terminal, rendered as a table in the book."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    widths = [max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys]
    lines = [f"**{title}**", "", "| " + " | ".join(k.ljust(w) for k, w in zip(keys, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(k, "")).ljust(w) for k, w in zip(keys, widths)) + " |")
    return "\n".join(lines) + "\n"


def show_tables(text: str, json_path=None, markdown_path=None) -> None:
    """Print a rendering (and where its JSON is); write it as Markdown if asked."""
    print(text)
    if json_path:
        print(f"JSON: {json_path}")
    if markdown_path:
        from cxr_utils import runtime

        runtime.write_text(text, markdown_path)


REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "covid19-radiography-224"  # the images, beside the project
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_record_options(parser, name: str, out_note: str = "") -> None:
    """The options every script's record takes: ``--out`` (the JSON record, by default
    benchmarks/results/NAME.json), ``--markdown`` (its rendering, for book/measured/) and
    ``--render`` (``render_only``)."""
    parser.add_argument("--out", default=str(RESULTS_DIR / f"{name}.json"),
                        help=f"the JSON record{out_note} (default benchmarks/results/{name}.json)")
    parser.add_argument("--markdown", help="also write the summary and tables as Markdown here (for book/measured/)")
    parser.add_argument("--render", metavar="JSON", help="only turn an earlier run's JSON into the summary and "
                        "tables (with --markdown, into that file); measures nothing")


def render_only(parser, json_path, markdown_path, render) -> int:
    """``--render``: an earlier run's JSON record turned into its Markdown; measures nothing.
    A file that is not such a record is a usage error (exit status 2)."""
    try:
        text = render(json.loads(Path(json_path).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        parser.error(f"{json_path} is not a benchmark JSON written by this script ({error!r})")
    show_tables(text, markdown_path=markdown_path)
    return 0


def protocol_record(protocol=None) -> dict:
    """The protocol a run followed, as its record states it: ``config.PROTOCOL`` unless given
    one with overrides (``--epochs``)."""
    from cxr_utils.config import PROTOCOL

    protocol = protocol or PROTOCOL
    sizes = protocol.split_sizes()
    return {"train": sizes["train"], "val": sizes["val"], "epochs": protocol.epochs,
            "batch_size": protocol.batch_size}


def record_protocol(results: dict) -> dict:
    """The protocol a record's results state (the paper's where an older record is silent)."""
    return {**protocol_record(), **results.get("protocol", {})}
