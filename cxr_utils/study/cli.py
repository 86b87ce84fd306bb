"""``python -m cxr_utils.study``: the command line. See ``cxr_utils.study``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from cxr_utils.config import PROTOCOL
from cxr_utils.study.seeds import (
    DEFAULT_OUT, MIXED_PRECISION, StudyError, _count, run_seeds, seed_list, study_parameters,
)
from cxr_utils.study.summary import summarise


# -- command line ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit code 2 (argparse's usage stays behind --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def command_line() -> argparse.ArgumentParser:
    from cxr_utils import run

    parser = _Parser(prog="python -m cxr_utils.study",
                     description="Studies beside the notebook series: the comparison over several seeds.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{seeds,summarise}")
    seeds = commands.add_parser("seeds", help="train, test and judge every model once per seed (resumable)",
                                description="Every model of the comparison, trained and tested once per seed; "
                                            "a seed sets the sample, the split and the initial weights. "
                                            "Resumes a study cut short.")
    which = seeds.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=int, default=None, metavar="N",
                       help=f"the first N of {PROTOCOL.seed}, {PROTOCOL.seed + 1}, ... (default 5)")
    which.add_argument("--seed-list", metavar="S1,S2,...", help="these seeds instead, e.g. 42,7,1000")
    seeds.add_argument("--profile", choices=sorted(run.PROFILES), default="paper")
    seeds.add_argument("--data-dir", help="dataset folder (default: download from Kaggle)")
    seeds.add_argument("--out", default=str(DEFAULT_OUT),
                       help=f"the study's folder (default: {DEFAULT_OUT.as_posix()})")
    seeds.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                       help="override a profile parameter, e.g. -p epochs=5 -p weights=None")
    seeds.add_argument("--mixed-precision", choices=list(MIXED_PRECISION), default="auto",
                       help="auto: mixed float16 on a GPU; on; off; bfloat16 (default auto)")
    summary = commands.add_parser("summarise", aliases=["summarize"], help="write the summary of a study's seeds")
    summary.add_argument("study_dir", metavar="DIR", help="the study's folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = command_line().parse_args(argv)
    if args.command in ("summarise", "summarize"):
        try:
            result = summarise(args.study_dir)
        except StudyError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"summary of {_count(len(result['seeds']), 'seed')} in {Path(args.study_dir) / 'summary.md'}")
        return 0

    from cxr_utils import run

    try:
        seeds = seed_list(args.seeds, args.seed_list)
        overrides = {}
        for item in args.parameter:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"-p {item!r}: write NAME=VALUE, e.g. -p epochs=5")
            overrides[name.strip()] = run.parse_value(value.strip())
        parameters = study_parameters(args.profile, overrides, args.data_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from cxr_utils import chapters, data, models

    try:
        run_seeds(Path(args.out), seeds, parameters, MIXED_PRECISION[args.mixed_precision])
    except (StudyError, chapters.MissingInputs, data.DatasetError, models.WeightsUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume where it stopped", file=sys.stderr)
        return 130
    print("A teaching and replication project, not a medical device: do not use for diagnosis.")
    return 0

