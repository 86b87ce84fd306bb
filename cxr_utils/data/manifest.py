"""The manifest: one row per image (path, class, label, sha256, size, mode, perceptual hash), built
by decoding every image once and kept as CSV. Explained in notebooks/01_data_collection.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm  # plain text progress: no Jupyter widget needed

from cxr_utils.atomic import atomic_write
from cxr_utils.config import CLASSES
from cxr_utils.data.decode import open_fully, strict_decoding, to_grayscale
from cxr_utils.data.errors import DatasetError, DatasetWarning
from cxr_utils.data.layout import DatasetLayout, find_dataset, image_files

MANIFEST_COLUMNS = ("path", "class", "label", "sha256", "width", "height", "mode", "phash")

# 16 x 16 = 256-bit DCT hash. The default 8 x 8 = 64-bit pHash cannot tell chest X-rays apart:
# on the 2,000 real images, 25 pairs of *different* patients lie within 4 bits of each other,
# as close as visibly identical copies. At 256 bits the copies and the distinct images separate.
PHASH_SIZE = 16
PHASH_BITS = PHASH_SIZE * PHASH_SIZE

_WORKERS = max(1, min(8, os.cpu_count() or 1))


def _index_file(path: Path) -> dict:
    """One manifest row, or {"path", "reason"} for a file that cannot be used."""
    try:
        data, image = open_fully(path)
        gray = to_grayscale(image, path)
    except DatasetError as error:
        return {"path": str(path), "reason": error.reason}
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": image.width,
        "height": image.height,
        "mode": image.mode,
        "phash": str(imagehash.phash(Image.fromarray(gray), hash_size=PHASH_SIZE)),
    }


def parallel_map(function: Callable, items: Sequence, progress: bool, description: str) -> list:
    """``[function(item) for item in items]`` on threads, in order, with a progress bar when asked."""
    # Pillow, zlib and hashlib release the GIL, so threads decode in parallel; map keeps order.
    with concurrent.futures.ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        results = pool.map(function, items)
        return list(tqdm(results, total=len(items), desc=description, unit="img", disable=not progress))


def format_problems(problems: list[dict], limit: int = 10) -> str:
    """The first ``limit`` unusable files (dicts with path and reason), one indented line each."""
    lines = [f"  {p['path']}: {p['reason']}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  and {len(problems) - limit} more")
    return "\n".join(lines)


def build_manifest(
    data_dir_or_layout: str | os.PathLike | DatasetLayout,
    on_problem: str = "raise",
    progress: bool = True,
) -> pd.DataFrame:
    """One row per image: path (absolute), class, label, sha256, width, height, mode, phash.

    Rows are ordered by class (Normal, then COVID) and file number. Decoding every image in full
    finds empty, truncated and non-image files: ``on_problem="raise"`` raises one DatasetError
    listing them, ``"skip"`` leaves them out with a DatasetWarning and lists them in
    ``manifest.attrs["problems"]`` (dicts path/reason). ``phash``: 256-bit DCT hash (hex) of the
    grey image. Explained in notebooks/01_data_collection.
    """
    if on_problem not in ("raise", "skip"):
        raise ValueError(f"on_problem must be 'raise' or 'skip', not {on_problem!r}")
    layout = data_dir_or_layout
    if not isinstance(layout, DatasetLayout):
        layout = find_dataset(layout)
    files = [
        (class_name, path.absolute())
        for class_name in CLASSES
        for path in image_files(layout.class_dirs[class_name])
    ]
    with strict_decoding():  # once around all threads: per-thread toggling of the global races
        results = parallel_map(_index_file, [p for _, p in files], progress, "Indexing images")

    rows, problems = [], []
    for (class_name, path), result in zip(files, results):
        if "reason" in result:
            problems.append(result)
        else:
            rows.append({"path": str(path), "class": class_name, "label": CLASSES[class_name], **result})
    if problems and on_problem == "raise":
        raise DatasetError(
            f"{len(problems)} of {len(files)} image files in {layout.root} cannot be used:\n"
            f"{format_problems(problems)}\n"
            "Fix: re-download the dataset (or replace these files), delete them, or build the "
            "manifest with on_problem='skip' to leave them out."
        )
    if problems:
        warnings.warn(
            f"left out {len(problems)} unusable image files:\n{format_problems(problems)}",
            DatasetWarning,
            stacklevel=2,
        )

    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    manifest = manifest.astype({"label": "int64", "width": "int64", "height": "int64"})
    for class_name, label in CLASSES.items():
        if not (manifest["label"] == label).any():
            raise DatasetError(
                f"no usable {class_name} images in {layout.class_dirs[class_name]}; download "
                "the dataset again or point at another copy."
            )
    manifest.attrs.update(root=str(layout.root), layout=layout.layout, problems=problems)
    return manifest


def save_manifest(manifest: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest (or a sample or split of it) as CSV, atomically; returns the path."""
    return atomic_write(Path(path), lambda temporary: manifest.to_csv(temporary, index=False))


_COLUMN_TYPES = {
    "path": str, "class": str, "sha256": str, "mode": str, "phash": str, "split": str,
    "label": "int64", "width": "int64", "height": "int64", "duplicate_group": "int64",
}


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV written by save_manifest, with its column types (hashes stay text)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"manifest not found: {path}. Build it with `python -m cxr_utils.data DATA_DIR "
            f"--manifest-out {path}` (or cxr_utils.data.build_manifest + save_manifest)."
        )
    try:
        header = pd.read_csv(path, nrows=0).columns
        manifest = pd.read_csv(
            path, dtype={c: t for c, t in _COLUMN_TYPES.items() if c in header}, keep_default_na=False
        )
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path} is not a readable manifest CSV ({error}); build it again.") from error
    require_columns(manifest, MANIFEST_COLUMNS, f"manifest {path}")
    return manifest


_BUILD_FIX = (
    "build it with cxr_utils.data.build_manifest (and add_duplicate_groups for duplicate_group)."
)


def require_columns(
    table,
    columns: Iterable[str],
    what: str = "manifest",
    *,
    error: type[ValueError] = DatasetError,
    not_a_table: str = "expected a manifest DataFrame",
    fix: str = _BUILD_FIX,
    quote: bool = False,
    empty: str | None = None,
) -> None:
    """Raise ``error`` unless ``table`` is a DataFrame holding every name in ``columns``.

    The one column check of the data package and of ``cxr_utils.plots`` (ValueError, its own
    wording). Messages: ``"{not_a_table}, got <type>"``; ``"{what} has no column <missing>; {fix}"``
    (names quoted with ``quote``); ``empty`` for a table without rows, when given. ``not_a_table``,
    ``fix`` and ``empty`` may name ``{what}``; ``fix`` also ``{columns}``, the table's columns.
    """
    if not isinstance(table, pd.DataFrame):
        raise error(f"{not_a_table.format(what=what)}, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        names = ", ".join(map(repr, missing)) if quote else ", ".join(missing)
        raise error(f"{what} has no column {names}; {fix.format(what=what, columns=list(table.columns))}")
    if empty is not None and table.empty:
        raise error(empty.format(what=what))


def file_names(paths) -> list[str]:
    """Each image's file name, without its folders: how files written on one machine name the
    images a run on another machine finds in its own copy of the dataset (the database's file
    names are unique)."""
    return [Path(str(path)).name for path in paths]


def labels(manifest: pd.DataFrame) -> np.ndarray:
    """The 0/1 labels (Normal/COVID) of the manifest rows, in row order, as int64."""
    require_columns(manifest, ["label"])
    return manifest["label"].to_numpy(dtype=np.int64)
