"""Find, download, index, de-duplicate, sample, split and load the chest X-rays.

The paper (section 2.1) uses 500 COVID-19 and 500 Normal images of the Kaggle "COVID-19
Radiography Database", split 80/10/10 and stratified; section 2.2 reads each image, scales it by
1/255, resizes it to 224x224 and repeats the grey channel three times. This package does the same
steps with the checks the paper leaves out: it reads every image once to catch broken files,
finds exact and near-duplicate images and keeps each group of them inside one split, and caches
the decoded images on disk.

Pipeline::

    layout = resolve_dataset(data_dir)          # None: download from Kaggle with kagglehub
    manifest = add_duplicate_groups(build_manifest(layout))
    sample = sample_balanced(manifest, n_per_class=500, seed=42)
    split = split_dataset(sample, seed=42)
    x_train = load_images(split[split["split"] == "train"], cache_dir=".cache/images")
    y_train = labels(split[split["split"] == "train"])

Everything returns NumPy arrays and pandas tables: no Keras or TensorFlow import here (every Keras
backend accepts NumPy arrays), and importing this package never touches the network. Bad input
raises ``DatasetError`` naming the file and the fix; files this package writes (manifest CSV,
image cache) appear only complete (temporary file + ``os.replace``, ``cxr_utils.atomic``).

Modules, in pipeline order (every name below is also available here, as ``data.<name>``):
``layout`` (finding or downloading the dataset), ``decode`` (strict decoding, grey image, model
input), ``manifest`` (the table of images, CSV, column checks), ``duplicates`` (exact and near
copies), ``split`` (sample and split), ``loading`` (model inputs and their cache), ``cli``
(``python -m cxr_utils.data DIR``) and ``errors`` (DatasetError, DatasetWarning).

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
    # constants
    "CLASSES", "KAGGLE_HANDLE", "KAGGLE_URL", "IMAGE_SIZE", "IMAGE_SUFFIXES", "CLASS_FOLDER_NAMES",
    "IMAGES_SUBFOLDER", "SEARCH_DEPTH", "SEARCH_MAX_FOLDERS", "MANIFEST_COLUMNS", "SPLITS",
    "PHASH_SIZE", "PHASH_BITS", "DEFAULT_MAX_HAMMING", "PREPROCESSING_VERSION", "HAND_DOWNLOAD_HELP",
    # errors and the layout
    "DatasetError", "DatasetWarning", "DatasetLayout",
    # layout
    "find_dataset", "download_dataset", "resolve_dataset", "file_names",
    # decode
    "decode_grayscale", "preprocess", "preprocessing_steps", "steps_table",
    # manifest
    "build_manifest", "save_manifest", "read_manifest", "labels", "require_columns",
    # duplicates
    "hamming_distances", "add_duplicate_groups", "duplicate_report",
    # split
    "leakage_report", "sample_balanced", "split_dataset", "split_summary",
    # loading and command line
    "image_chunks", "load_images",
]
