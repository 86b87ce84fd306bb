"""The model card of a run: ``RESULTS_DIR/MODEL_CARD.md``, written from the run's own files.

    python -m cxr_utils.model_card RESULTS_DIR [--out PATH]

The sections are those of Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019): model
details, intended use, factors, metrics, evaluation data, training data, quantitative analyses,
ethical considerations, caveats and recommendations. Every number comes from the run's files
(run records, metrics, predictions, manifest and split, ``external/<name>/`` and ``shortcut/``
when present); none is typed here. It works on a results folder of ``python -m cxr_utils.run``
and on a published copy (``book/executed/results``: no model weights, image paths relative to
the dataset folder). No folder of the machine that ran is named. ``cxr_utils.run`` writes it at
the end of every series that ran through chapter 7; the book shows it. Each section is written by
``cxr_utils.model_card_sections`` from the run as ``cxr_utils.model_card_run`` reads it; the
words are the templates ``cxr_utils/templates/card*.j2`` (``cxr_utils.prose`` renders them).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cxr_utils import model_card_sections as sections
from cxr_utils import command, prose
from cxr_utils.atomic import atomic_write
from cxr_utils.model_card_run import CardRun, ModelCardError
from cxr_utils.report import DISCLAIMER

CARD_FILE = "MODEL_CARD.md"
SECTIONS = (
    "Model details", "Intended use", "Factors", "Metrics", "Evaluation data", "Training data",
    "Quantitative analyses", "Ethical considerations", "Caveats and recommendations",
)


def markdown(results_dir, title: bool = True) -> str:
    """The model card of the run in ``results_dir`` as Markdown (``write`` saves it). ``title``
    False leaves out the first heading ("# Model card: ..."), for a page that has its own and
    includes the card."""
    run = CardRun(results_dir)
    text = prose.render(
        "card.md.j2", title=title, models=list(run.names.values()), disclaimer=DISCLAIMER,
        profile=run.settings.get("profile", run.record.get("profile")), recorded=run.record.get("created_utc"),
        sections=[section(run) for section in (
            sections.model_details, sections.intended_use, sections.factors, sections.metrics_section,
            sections.evaluation_data, sections.training_data, sections.quantitative, sections.ethics,
            sections.caveats)],
    )
    return text.rstrip() + "\n"


def write(results_dir, path=None, title: bool = True) -> Path:
    """Write the model card of ``results_dir`` to ``path`` (default ``RESULTS_DIR/MODEL_CARD.md``),
    atomically; returns the path. Works on a published copy (no model weights) too; ``title`` as
    for ``markdown``."""
    text = markdown(results_dir, title)
    path = Path(path) if path is not None else Path(results_dir) / CARD_FILE
    return atomic_write(path, lambda temporary: temporary.write_text(text))


def main(argv: list[str] | None = None) -> int:
    parser = command.parser("cxr_utils.model_card", "Write the model card of a run from its files.",
                            "0 written; 2 not a run's results folder, or a file of it that cannot be read.")
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="a run's results folder, or a published copy")
    parser.add_argument("--out", help=f"where to write it (default RESULTS_DIR/{CARD_FILE})")
    args = parser.parse_args(argv)
    try:
        print(write(args.results_dir, args.out))
    except (ModelCardError, OSError, ValueError) as error:
        return command.fail(error, command.EXIT_USAGE)
    return command.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
