"""Loading model inputs: the rows of a manifest become a float32 array, with an on-disk cache.

The steps are those notebooks/02_preprocessing follows on one image (preprocessing_steps), applied
in parallel threads. No notebook calls load_images itself: notebooks/03_resnet50 to
05_resnet50_lstm load the split through experiment.prepare_inputs, and notebooks/06_evaluation the
extended test set through cxr_utils.evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils.atomic import atomic_write
from cxr_utils.data.decode import (
    IMAGE_SIZE,
    PREPROCESSING_VERSION,
    decode_grayscale,
    resize_gray,
    strict_decoding,
    to_model_input,
    unreadable_file,
)
from cxr_utils.data.errors import DatasetWarning
from cxr_utils.data.manifest import parallel_map, require_columns


def load_images(
    manifest_or_paths: pd.DataFrame | Sequence[str | os.PathLike],
    image_size: int = IMAGE_SIZE,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> np.ndarray:
    """The model inputs for the rows of a manifest (or a list of paths), in row order:
    float32 array (N, image_size, image_size, 3) in [0, 1], the three channels equal.

    With ``cache_dir`` the resized uint8 images are stored there as one .npy file whose name is a
    hash of the rows (paths and sha256s, in order; for bare paths their sizes and modification
    times), the image size and PREPROCESSING_VERSION; the next call with the same rows reads it.
    A file that cannot be decoded raises DatasetError naming it, and nothing is written.
    Explained in notebooks/03_resnet50, which loads the split with it through experiment.prepare_inputs,
    as do notebooks/04_lstm and 05_resnet50_lstm (and notebooks/06_evaluation, for the extended test set).
    """
    rows, fingerprints = manifest_or_paths, None
    if isinstance(rows, pd.DataFrame):
        require_columns(rows, ["path"])
        if "sha256" in rows.columns:
            fingerprints = rows["sha256"].astype(str).tolist()
        rows = rows["path"]
    paths = [str(p) for p in rows]
    image_size = int(image_size)

    cache_file = None
    if cache_dir is not None and paths:
        if fingerprints is None:
            fingerprints = []
            for path in paths:
                try:
                    stat = os.stat(path)
                except OSError as error:
                    raise unreadable_file(path, error) from error
                fingerprints.append(f"{stat.st_size}:{stat.st_mtime_ns}")
        payload = {"version": PREPROCESSING_VERSION, "size": image_size, "paths": paths, "files": fingerprints}
        key = hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]
        cache_file = Path(cache_dir) / f"images-{image_size}px-{len(paths)}-{key}.npy"

    resized = _read_cache(cache_file, (len(paths), image_size, image_size))
    if resized is None:
        resized = np.empty((len(paths), image_size, image_size), dtype=np.uint8)
        with strict_decoding():
            decoded = parallel_map(
                lambda path: resize_gray(decode_grayscale(path), image_size), paths, progress, "Loading images"
            )
        for k, image in enumerate(decoded):
            resized[k] = image
        if cache_file is not None:
            atomic_write(cache_file, lambda temporary: save_npy(temporary, resized))

    images = np.empty((len(paths), image_size, image_size, 3), dtype=np.float32)
    for k in range(len(paths)):  # image by image: no second full-size float copy in memory
        images[k] = to_model_input(resized[k])
    return images


def save_npy(path: Path, array: np.ndarray) -> None:
    """``array`` written to exactly ``path`` as .npy, without pickles."""
    with open(path, "wb") as handle:  # a file object, so numpy does not append ".npy"
        np.save(handle, array, allow_pickle=False)


def _read_cache(cache_file: Path | None, shape: tuple) -> np.ndarray | None:
    if cache_file is None or not cache_file.is_file():
        return None
    try:
        cached = np.load(cache_file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        problem = f"ignoring unreadable image cache {cache_file} ({error})"
    else:
        if cached.shape == shape and cached.dtype == np.uint8:
            return cached
        problem = f"ignoring image cache {cache_file} of unexpected shape {cached.shape}"
    warnings.warn(f"{problem}; decoding again", DatasetWarning, stacklevel=3)
    return None


def image_chunks(rows: pd.DataFrame, chunk_size: int = 512, image_size: int = IMAGE_SIZE,
                 cache_dir: str | os.PathLike | None = None, progress: bool = False):
    """``load_images`` a chunk of rows at a time: yields (row positions, float32 images), so that a
    test set of any size passes through a model in bounded memory (512 images at 224 px: about
    300 MB). Explained in notebooks/06_evaluation (through cxr_utils.evaluation).
    """
    starts = range(0, len(rows), chunk_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="Images", unit="chunk")
    for start in starts:
        positions = np.arange(start, min(start + chunk_size, len(rows)))
        yield positions, load_images(rows.iloc[positions], image_size=image_size, cache_dir=cache_dir,
                                     progress=False)
