"""The command line: ``python -m cxr_utils.data DIR [--manifest-out CSV]`` checks a dataset folder.

It prints the layout, the images per class, the duplicate groups and any unreadable files, and
writes the manifest CSV only when every file can be used (exit status 0; 1 for unusable files,
2 for a folder or download that cannot be used). ``make run`` calls it before the notebooks;
no notebook does. The steps it repeats are explained in notebooks/01_data_collection.
"""

from __future__ import annotations

import warnings

from cxr_utils import command
from cxr_utils.config import CLASSES
from cxr_utils.data.duplicates import DEFAULT_MAX_HAMMING, add_duplicate_groups, duplicate_report
from cxr_utils.data.errors import DatasetError, DatasetWarning
from cxr_utils.data.layout import resolve_dataset
from cxr_utils.data.manifest import PHASH_BITS, build_manifest, format_problems, save_manifest


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: sys.argv); returns the exit status."""
    parser = command.parser(
        "cxr_utils.data", "Check a COVID-19 Radiography Database folder: layout, images per class, "
        "unreadable files and duplicate images; optionally write the manifest CSV.",
        "0 every file usable (the manifest written when asked); 1 unusable image files (listed; no manifest "
        "written); 2 a folder or download that cannot be used.",
    )
    parser.add_argument(
        "data_dir", nargs="?", default=None, help="dataset folder (default: download from Kaggle)"
    )
    parser.add_argument("--manifest-out", help="write the manifest (with duplicate_group) to this CSV")
    parser.add_argument(
        "--max-hamming", type=int, default=DEFAULT_MAX_HAMMING,
        help=f"near-duplicate threshold in bits of {PHASH_BITS} (default {DEFAULT_MAX_HAMMING})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    try:
        layout = resolve_dataset(args.data_dir)
        print(f"Dataset: {layout.root} (layout: {layout.layout})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DatasetWarning)  # the problems are printed below
            manifest = build_manifest(layout, on_problem="skip", progress=not args.no_progress)
        counts = manifest["class"].value_counts()
        for class_name in CLASSES:
            count, folder = counts.get(class_name, 0), layout.class_dirs[class_name]
            print(f"  {class_name}: {count} images in {folder}")
        manifest = add_duplicate_groups(manifest, max_hamming=args.max_hamming)
        report = duplicate_report(manifest)
        print(
            f"Duplicates: {report['exact_sets']} sets of byte-identical files "
            f"({report['exact_images']} images); {report['groups']} duplicate groups "
            f"({report['images_in_groups']} images, perceptual hash within {args.max_hamming} of "
            f"{PHASH_BITS} bits): {report['exact_groups']} exact, {report['near_groups']} near, "
            f"{report['cross_class_groups']} spanning both classes"
        )
        shown = 40  # the full database has hundreds of groups; the manifest CSV lists them all
        for row in report["table"].head(shown).itertuples():
            print(f"  group {row.duplicate_group} ({row.kind}, {row.classes}): {row.files}")
        if report["groups"] > shown:
            print(f"  and {report['groups'] - shown} more groups")
        problems = manifest.attrs.get("problems", [])
        if problems:
            print(f"Problems: {len(problems)} unusable image files")
            print(format_problems(problems, limit=50))
            return command.fail(f"{len(problems)} image files cannot be read (listed above); re-download the "
                                "dataset or delete them, then run again. No manifest written.", command.EXIT_FAILED)
        print("Problems: none")
        if args.manifest_out:
            print(f"Manifest: {save_manifest(manifest, args.manifest_out)}")
    except DatasetError as error:
        return command.fail(error, command.EXIT_USAGE)
    return command.EXIT_OK
