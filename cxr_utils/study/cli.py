"""``python -m cxr_utils.study``: the command line. See ``cxr_utils.study``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxr_utils import blanked, chapters, command, config, data
from cxr_utils.config import PROTOCOL
from cxr_utils.report import DISCLAIMER, counted
from cxr_utils.series import PROFILES, parse_value
from cxr_utils.study import adopt
from cxr_utils.study import blanked as blanked_command
from cxr_utils.study.common import StudyError
from cxr_utils.study.seeds import DEFAULT_OUT, MIXED_PRECISION, run_seeds, seed_list, study_parameters
from cxr_utils.study.summary import summarise


# -- command line ---------------------------------------------------------------------------------


def command_line() -> argparse.ArgumentParser:
    parser = command.parser("cxr_utils.study", "Studies beside the notebook series: the comparison over several "
                            "seeds; the models again with the lungs blanked.",
                            "0 done; 1 stopped while running (blanked: run it again to resume); 2 bad arguments "
                            "or a folder that cannot be used; 130 interrupted (run it again to resume).")
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="{seeds,summarise,publish,adopt,blanked}")
    seeds = commands.add_parser("seeds", help="train, test and judge every model once per seed (resumable)",
                                description="Every model of the comparison, trained and tested once per seed; "
                                            "a seed sets the sample, the split and the initial weights. "
                                            "Resumes a study cut short.")
    which = seeds.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=int, default=None, metavar="N",
                       help=f"the first N of {PROTOCOL.seed}, {PROTOCOL.seed + 1}, ... (default 5)")
    which.add_argument("--seed-list", metavar="S1,S2,...", help="these seeds instead, e.g. 42,7,1000")
    seeds.add_argument("--profile", choices=sorted(PROFILES), default="paper")
    seeds.add_argument("--data-dir", help="dataset folder (default: download from Kaggle)")
    seeds.add_argument("--out", default=str(DEFAULT_OUT),
                       help=f"the study's folder (default: {DEFAULT_OUT.as_posix()})")
    seeds.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                       help="override a profile parameter, e.g. -p epochs=5 -p weights=None")
    seeds.add_argument("--mixed-precision", choices=list(MIXED_PRECISION), default="auto",
                       help="auto: mixed float16 on a GPU; on; off; bfloat16 (default auto)")
    summary = commands.add_parser("summarise", aliases=["summarize"], help="write the summary of a study's seeds")
    summary.add_argument("study_dir", metavar="DIR", help="the study's folder")
    publish = commands.add_parser(
        "publish", help="copy a seed study and its remedy study into the book's report (book/studies/)",
        description="Copy two seed studies where the report renders them: the paper's protocol (--seeds) and the "
                    "same seeds with -p recompute_batchnorm_images=N (--remedy); numbers only (no weights), no "
                    "folder of this machine named; the pages are written from the copy.",
        epilog="Exit status: 0 done; 2 a folder is not a study.")
    publish.add_argument("--seeds", required=True, metavar="DIR", help="the seed study at the paper's protocol")
    publish.add_argument("--remedy", required=True, metavar="DIR",
                         help="the same seeds with -p recompute_batchnorm_images=N")
    publish.add_argument("--book-dir", default=None, metavar="DIR", help="where to publish (default: book/studies)")
    adopt = commands.add_parser(
        "adopt", help="make a notebook-series run of the study's protocol one of its seeds (one run per seed)",
        description="The run's split and models' numbers become the study's folder for the run's seed (replacing "
                    "a second training of it); refused unless the run has the study's protocol. Evaluation, "
                    "verdicts and summary are written again; in the book's published studies, their pages too.",
        epilog="Exit status: 0 done; 2 refused (the run is not of the study's protocol).")
    adopt.add_argument("run", metavar="RESULTS_DIR",
                       help="a finished run's results folder (e.g. results/paper or book/executed/results)")
    adopt.add_argument("--out", default=None, metavar="DIR",
                       help="the seed study (default: the book's published copy, book/studies/seeds)")
    blanked = commands.add_parser(
        "blanked", help="train every model on images with the lungs blanked, beside a run (resumable)",
        description="The run's models trained and tested again with the lung rectangle (shortcuts.LungBox) "
                    "blanked in every image, on the run's split with the run's protocol; results in "
                    "RESULTS_DIR/shortcuts/blanked/. Resumes; refuses a folder made with other settings.",
        epilog="Exit status: 0 done; 1 the run folder cannot be used as asked; 2 bad arguments; 130 "
               "interrupted (run it again to resume).")
    blanked.add_argument("--run", required=True, metavar="RESULTS_DIR", help="the results folder of a finished run")
    blanked.add_argument("--data-dir", help="dataset folder (default: the run's)")
    blanked.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                         help="override the run's epochs, batch_size, weights or cache_dir, e.g. -p epochs=5")
    blanked.add_argument("--models", nargs="+", metavar="MODEL", help="only these models (ids or the paper's names)")
    return parser


def _overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"-p {item!r}: write NAME=VALUE, e.g. -p epochs=5")
        overrides[name.strip()] = parse_value(value.strip())
    return overrides


def _blanked(args) -> int:
    from cxr_utils import models  # imports Keras: only for the command that trains

    try:
        overrides = _overrides(args.parameter)
        for model in args.models or ():
            config.model_spec(model)
        blanked_command.run_protocol(args.run, overrides, args.data_dir)  # bad overrides: exit 2 before anything runs
    except ValueError as error:
        return command.fail(error, command.EXIT_USAGE)
    except blanked.BlankedError as error:
        return command.fail(error, command.EXIT_FAILED)
    try:
        table = blanked_command.command(args.run, args.data_dir, overrides, args.models)
    # ValueError: data.DatasetError (an unreadable image), or blanked and intact tested on other images.
    except (blanked.BlankedError, ValueError, chapters.MissingInputs, models.WeightsUnavailableError) as error:
        return command.fail(error, command.EXIT_FAILED)
    except KeyboardInterrupt:
        return command.fail("interrupted: run the same command again to resume where it stopped",
                            command.EXIT_INTERRUPTED)
    done = table[table["status"] == "complete"]
    for row in done.itertuples():
        print(f"{row.model}: test accuracy {row.intact_accuracy:.2f} intact, {row.blanked_accuracy:.2f} with the "
              f"lungs blanked")
    print(f"results in {Path(args.run) / blanked.BLANKED_DIR / blanked.RESULTS_CSV}")
    return command.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = command_line().parse_args(argv)
    if args.command == "blanked":
        return _blanked(args)
    if args.command == "publish":
        from cxr_utils.study import publish  # imports matplotlib: only for the commands that publish

        try:
            publish.publish_studies(args.seeds, args.remedy, args.book_dir or publish.BOOK_STUDIES_DIR)
        except (StudyError, ValueError) as error:  # ValueError: remedy runs that differ in more than the option
            return command.fail(error, command.EXIT_USAGE)
        return command.EXIT_OK
    if args.command == "adopt":
        from cxr_utils.study import publish  # imports matplotlib: only for the commands that publish

        study_dir = Path(args.out) if args.out else publish.BOOK_STUDIES_DIR / "seeds"
        try:
            adopt.adopt_run(study_dir, args.run)
            if study_dir.resolve() == (publish.BOOK_STUDIES_DIR / "seeds").resolve():
                publish.drop_left_out(study_dir)
                publish.write_pages(publish.BOOK_STUDIES_DIR)
        except (StudyError, ValueError) as error:
            return command.fail(error, command.EXIT_USAGE)
        return command.EXIT_OK
    if args.command in ("summarise", "summarize"):
        try:
            result = summarise(args.study_dir)
        except StudyError as error:
            return command.fail(error, command.EXIT_USAGE)
        print(f"summary of {counted(len(result['seeds']), 'seed')} in {Path(args.study_dir) / 'summary.md'}")
        return command.EXIT_OK

    try:
        seeds = seed_list(args.seeds, args.seed_list)
        parameters = study_parameters(args.profile, _overrides(args.parameter), args.data_dir)
    except ValueError as error:
        return command.fail(error, command.EXIT_USAGE)

    from cxr_utils import models  # imports Keras: only for the command that trains

    try:
        run_seeds(Path(args.out), seeds, parameters, MIXED_PRECISION[args.mixed_precision])
    except (StudyError, chapters.MissingInputs, data.DatasetError, models.WeightsUnavailableError) as error:
        return command.fail(error, command.EXIT_USAGE)
    except KeyboardInterrupt:
        return command.fail("interrupted: run the same command again to resume where it stopped",
                            command.EXIT_INTERRUPTED)
    print(DISCLAIMER)
    return command.EXIT_OK

