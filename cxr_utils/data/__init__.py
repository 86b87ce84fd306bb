"""Find, download, index, de-duplicate, sample, split and load the chest X-rays.

The paper (sections 2.1-2.2) takes 500 COVID-19 and 500 Normal images of the Kaggle "COVID-19
Radiography Database", splits them 80/10/10 stratified, scales by 1/255, resizes to 224x224 and
repeats the grey channel. This package adds the checks the paper leaves out: every image is read
once to catch broken files, exact and near-duplicate images are kept inside one split, and the
decoded images are cached on disk.

Pipeline::

    layout = resolve_dataset(data_dir)          # None: download from Kaggle with kagglehub
    manifest = add_duplicate_groups(build_manifest(layout))
    sample = sample_balanced(manifest, n_per_class=500, seed=42)
    split = split_dataset(sample, seed=42)
    x_train = load_images(split[split["split"] == "train"], cache_dir=".cache/images")
    y_train = labels(split[split["split"] == "train"])

Only NumPy and pandas here: no Keras or TensorFlow import, no network on import. Bad input raises
``DatasetError`` naming the file and the fix; written files (manifest CSV, image cache) appear
only complete (``cxr_utils.atomic``). Modules, in pipeline order, all re-exported here: ``layout``,
``decode``, ``manifest``, ``duplicates``, ``split``, ``loading``, ``cli`` (``python -m
cxr_utils.data DIR``) and ``errors``.

Explained in notebooks/01_data_collection (layout, manifest, duplicates, sample) and
notebooks/02_preprocessing (decoding and the split).
"""

from __future__ import annotations

from cxr_utils.config import CLASSES
from cxr_utils.data.decode import (
    IMAGE_SIZE,
    PREPROCESSING_VERSION,
    decode_grayscale,
    preprocess,
    preprocessing_steps,
    steps_table,
)
from cxr_utils.data.duplicates import (
    DEFAULT_MAX_HAMMING,
    add_duplicate_groups,
    duplicate_report,
    hamming_distances,
)
from cxr_utils.data.errors import DatasetError, DatasetWarning
from cxr_utils.data.layout import (
    CLASS_FOLDER_NAMES,
    HAND_DOWNLOAD_HELP,
    IMAGE_SUFFIXES,
    IMAGES_SUBFOLDER,
    KAGGLE_HANDLE,
    KAGGLE_URL,
    SEARCH_DEPTH,
    SEARCH_MAX_FOLDERS,
    DatasetLayout,
    download_dataset,
    find_dataset,
    resolve_dataset,
)
from cxr_utils.data.loading import image_chunks, load_images
from cxr_utils.data.manifest import (
    MANIFEST_COLUMNS,
    PHASH_BITS,
    PHASH_SIZE,
    build_manifest,
    file_names,
    labels,
    read_manifest,
    require_columns,
    save_manifest,
)
from cxr_utils.data.split import SPLITS, leakage_report, sample_balanced, split_dataset, split_summary

__all__ = [
    "CLASSES", "KAGGLE_HANDLE", "KAGGLE_URL", "IMAGE_SIZE", "IMAGE_SUFFIXES", "CLASS_FOLDER_NAMES",
    "IMAGES_SUBFOLDER", "SEARCH_DEPTH", "SEARCH_MAX_FOLDERS", "MANIFEST_COLUMNS", "SPLITS",
    "PHASH_SIZE", "PHASH_BITS", "DEFAULT_MAX_HAMMING", "PREPROCESSING_VERSION", "HAND_DOWNLOAD_HELP",
    "DatasetError", "DatasetWarning", "DatasetLayout",
    "find_dataset", "download_dataset", "resolve_dataset", "file_names",
    "decode_grayscale", "preprocess", "preprocessing_steps", "steps_table",
    "build_manifest", "save_manifest", "read_manifest", "labels", "require_columns",
    "hamming_distances", "add_duplicate_groups", "duplicate_report",
    "leakage_report", "sample_balanced", "split_dataset", "split_summary",
    "image_chunks", "load_images",
]
