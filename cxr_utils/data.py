"""Find, download, index, de-duplicate, sample, split and load the chest X-rays.

The paper (section 2.1) uses 500 COVID-19 and 500 Normal images of the Kaggle "COVID-19
Radiography Database", split 80/10/10 and stratified; section 2.2 reads each image, scales it by
1/255, resizes it to 224x224 and repeats the grey channel three times. This module does the same
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
backend accepts NumPy arrays), and importing this module never touches the network. Bad input
raises ``DatasetError`` naming the file and the fix; files this module writes (manifest CSV,
image cache) appear only complete (temporary file + ``os.replace``).

Explained in notebooks/01_data_collection (layout, manifest, duplicates, sample, split) and
notebooks/02_preprocessing (decoding and the model inputs).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageFile
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

# Paper section 2.2: Normal -> 0, COVID -> 1 (COVID-19 is the positive class).
CLASSES = {"Normal": 0, "COVID": 1}
KAGGLE_HANDLE = "tawsifurrahman/covid19-radiography-database"
KAGGLE_URL = "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database"
IMAGE_SIZE = 224
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # compared lower-cased: .PNG and .JPG count too

# Folder names each class has had across the database's releases, lower-cased: the current
# release uses COVID/ and Normal/, the middle releases COVID/ and NORMAL/, the first COVID-19/.
CLASS_FOLDER_NAMES = {
    "COVID": ("covid", "covid-19", "covid19", "covid_19"),
    "Normal": ("normal",),
}
IMAGES_SUBFOLDER = "images"  # current release: <Class>/images/ beside <Class>/masks/
SEARCH_DEPTH = 4  # how far below the given folder find_dataset looks for the class folders
SEARCH_MAX_FOLDERS = 20_000  # stop scanning huge trees (e.g. a home folder) early

MANIFEST_COLUMNS = ("path", "class", "label", "sha256", "width", "height", "mode", "phash")
SPLITS = ("train", "val", "test")

# 16 x 16 = 256-bit DCT hash. The default 8 x 8 = 64-bit pHash cannot tell chest X-rays apart:
# on the 2,000 real images, 25 pairs of *different* patients lie within 4 bits of each other,
# as close as visibly identical copies. At 256 bits the copies and the distinct images separate.
PHASH_SIZE = 16
PHASH_BITS = PHASH_SIZE * PHASH_SIZE

# Near-duplicate threshold, in bits out of 256, chosen on the 2,000 real images of
# shared/data/covid19-radiography-224 (all 2 million pairs, looked at side by side):
# - 33 pairs lie within 0-30 bits; every one is the same radiograph (pixel correlation >= 0.967:
#   re-encoded, slightly re-cropped or contrast-changed copies, e.g. COVID-385 / COVID-981 at 18,
#   COVID-1559 / COVID-449 at 30);
# - no pair lies between 32 and 50 bits;
# - from 52 bits on the pairs are different patients with similar anatomy (e.g. Normal-4319 /
#   Normal-5859 at 52), with rare exceptions that no image hash separates from them: the
#   rescaled copy COVID-397 / COVID-570 sits at 56 bits, and follow-up films of one patient
#   (COVID-910 / COVID-919, 52) are distinct radiographs that only patient IDs, which the
#   database does not publish, could link.
# 36 bits takes every copy seen, keeps 16 bits away from the first distinct pair here, and
# leaves room for the full database, whose 50 times more pairs reach lower distances.
DEFAULT_MAX_HAMMING = 36

# Bump when decode_grayscale or the resizing changes, so that old cached images are not reused.
PREPROCESSING_VERSION = 1

_NUMBER = re.compile(r"(\d+)")
_WORKERS = max(1, min(8, os.cpu_count() or 1))

HAND_DOWNLOAD_HELP = (
    f"download the database by hand from {KAGGLE_URL} (\"Download\", then unzip), and pass the "
    "unzipped folder: data_dir=... in Python, --data-dir on the command line, or DATA_DIR=... "
    "for make"
)


class DatasetError(ValueError):
    """The dataset folder, an image file or a table cannot be used; the message says how to fix it."""


class DatasetWarning(UserWarning):
    """Something was left out or guessed; the data are still usable."""


@dataclass(frozen=True)
class DatasetLayout:
    """Where the images of each class are.

    ``root`` holds the class folders; ``class_dirs`` maps "COVID" and "Normal" to the folder that
    directly holds the image files; ``layout`` names the arrangement: "kaggle-current"
    (``<Class>/images/<Class>-<n>.png``, the current Kaggle release), "flat"
    (``<Class>/<file>.png``, e.g. the earlier releases' ``COVID/COVID (1).png``) or "mixed".
    Explained in notebooks/01_data_collection.
    """

    root: Path
    layout: str
    class_dirs: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Finding the dataset
# --------------------------------------------------------------------------------------------


def _natural_key(text: str) -> tuple:
    # "COVID-2" before "COVID-10"; re.split with a group alternates text and digits, so the
    # tuples compare str with str and int with int.
    return tuple(int(part) if part.isdigit() else part.lower() for part in _NUMBER.split(text))


def _is_image_file(path: Path) -> bool:
    # Names starting with "." are macOS resource forks ("._COVID-1.png") and editor files.
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _image_files(folder: Path) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return sorted((p for p in entries if _is_image_file(p)), key=lambda p: _natural_key(p.name))


def _subfolders(folder: Path) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except OSError:  # unreadable folders are skipped, as `find` would
        return []
    return sorted(
        (p for p in entries if not p.name.startswith(".") and p.is_dir()),
        key=lambda p: _natural_key(p.name),
    )


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for sub in _subfolders(folder):
        for class_name, names in CLASS_FOLDER_NAMES.items():
            if sub.name.lower() in names:
                found.setdefault(class_name, []).append(sub)
    return found


def _images_folder(class_folder: Path) -> tuple[Path, str]:
    """The folder holding a class's image files, and whether it is the images/ subfolder."""
    direct = _image_files(class_folder)
    images_dirs = [p for p in _subfolders(class_folder) if p.name.lower() == IMAGES_SUBFOLDER]
    nested = images_dirs and _image_files(images_dirs[0])
    if direct and nested:
        raise DatasetError(
            f"{class_folder} holds image files both directly and in {images_dirs[0].name}/; "
            "it is unclear which are the dataset. Keep one of the two (the current Kaggle "
            "release has them in images/)."
        )
    if nested:
        return images_dirs[0], "kaggle-current"
    if direct:
        return class_folder, "flat"
    raise DatasetError(
        f"class folder {class_folder} has no images (.png, .jpg or .jpeg files, directly or in "
        "images/). The download may be incomplete: download and unzip the dataset again, or "
        "point at another copy."
    )


def find_dataset(path: str | os.PathLike) -> DatasetLayout:
    """Find the COVID and Normal image folders at or below ``path``.

    Accepts the dataset root or any folder above it (searched breadth-first, folders in natural
    name order, at most ``SEARCH_DEPTH`` levels down), class folders in any letter case, the
    current Kaggle release (``COVID/images/COVID-1.png``; ``masks/`` is ignored), the same
    without ``images/``, and the first releases (``COVID-19/`` or ``COVID/``, ``NORMAL/``, files
    like ``NORMAL (1).png``). Other classes (Lung_Opacity, Viral Pneumonia) are ignored.
    Explained in notebooks/01_data_collection.
    """
    start = Path(path).expanduser()
    if not start.exists():
        raise DatasetError(
            f"dataset folder not found: {start}. Pass the folder that holds COVID/ and Normal/ "
            "(or a folder above it), or pass no folder to download the dataset from Kaggle."
        )
    if not start.is_dir():
        raise DatasetError(
            f"{start} is a file, not a folder. Pass the folder that holds COVID/ and Normal/ "
            "(for a .zip download: unzip it first)."
        )

    level, depth, visited = [start], 0, 0
    partial = None  # first folder holding one class folder only, to name in the error
    while level and depth <= SEARCH_DEPTH and visited < SEARCH_MAX_FOLDERS:
        candidates = []
        for folder in level:
            classes = _class_folders(folder)
            if len(classes) == len(CLASSES):
                candidates.append((folder, classes))
            elif classes and partial is None:
                partial = (folder, classes)
        if candidates:
            root, classes = candidates[0]
            if len(candidates) > 1:
                others = ", ".join(str(c[0]) for c in candidates[1:4])
                warnings.warn(
                    f"several copies of the dataset below {start}; using {root} (also found: "
                    f"{others}). Pass the folder you want to silence this.",
                    DatasetWarning,
                    stacklevel=2,
                )
            return _layout_of(root, classes)
        visited += len(level)
        level = [sub for folder in level for sub in _subfolders(folder)]
        depth += 1

    seen = ""
    if partial is not None:
        folder, classes = partial
        seen = f" ({folder} holds {', '.join(p.name + '/' for ps in classes.values() for p in ps)} only)"
    raise DatasetError(
        f"no folder holding both COVID/ and Normal/ found in {start} or {SEARCH_DEPTH} levels "
        f"below it{seen}. "
        "Point at the unzipped dataset (e.g. COVID-19_Radiography_Dataset/, which holds "
        "COVID/images/ and Normal/images/), or pass no folder to download it from Kaggle."
    )


def _layout_of(root: Path, classes: dict[str, list[Path]]) -> DatasetLayout:
    class_dirs, kinds = {}, set()
    for class_name in CLASSES:
        folders = classes[class_name]
        if len(folders) > 1:
            names = ", ".join(p.name for p in folders)
            raise DatasetError(
                f"{root} has several {class_name} folders ({names}); keep one of them."
            )
        class_dirs[class_name], kind = _images_folder(folders[0])
        kinds.add(kind)
    layout = kinds.pop() if len(kinds) == 1 else "mixed"
    return DatasetLayout(root=root, layout=layout, class_dirs=class_dirs)


def download_dataset() -> Path:
    """Download the database with kagglehub (needs a network and, for some accounts, Kaggle
    credentials) and return the folder it unpacked to. Explained in notebooks/01_data_collection.
    """
    try:
        import kagglehub

        return Path(kagglehub.dataset_download(KAGGLE_HANDLE))
    except Exception as error:  # no network, no credentials, no kagglehub: one clear message
        raise DatasetError(
            f"could not download {KAGGLE_HANDLE} from Kaggle with kagglehub "
            f"({type(error).__name__}: {str(error)[:200]}). This needs a network connection "
            "(and, if Kaggle asks for it, credentials: KAGGLE_USERNAME/KAGGLE_KEY or "
            f"~/.kaggle/kaggle.json). Without them: {HAND_DOWNLOAD_HELP}."
        ) from error


def resolve_dataset(data_dir: str | os.PathLike | None = None) -> DatasetLayout:
    """``find_dataset(data_dir)``, or download the dataset first when ``data_dir`` is None."""
    if data_dir is None or str(data_dir) == "":
        data_dir = download_dataset()
    return find_dataset(data_dir)


# --------------------------------------------------------------------------------------------
# Decoding (paper section 2.2)
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _strict_decoding():
    # Pillow can be told globally to accept truncated files (filling the rest with grey);
    # a truncated X-ray must be reported, not silently padded.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _problem_reason(data: bytes, error: BaseException) -> str:
    if not data:
        return "empty file (0 bytes)"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image Pillow can read (e.g. a text or HTML page saved under an image name)"
    message = str(error) or type(error).__name__
    if "truncated" in message.lower() or isinstance(error, EOFError):
        return f"truncated image, the file ends early ({message})"
    return f"corrupt or unsupported image ({type(error).__name__}: {message})"


_FILE_FIX = "Re-download the dataset or delete this file, then build the manifest again"

# Errors Pillow raises for broken files; anything else is a bug and should propagate.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _open_fully(data: bytes, path: Path) -> Image.Image:
    if not data:
        raise DatasetError(f"{path}: empty file (0 bytes). {_FILE_FIX}")
    try:
        with _strict_decoding():
            image = Image.open(io.BytesIO(data))
            image.load()  # decodes every pixel, so truncated files fail here and not later
    except _DECODE_ERRORS as error:
        raise DatasetError(f"{path}: {_problem_reason(data, error)}. {_FILE_FIX}") from error
    return image


def _to_grayscale(image: Image.Image, path: Path | str = "<image>") -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit images: Pillow's convert("L") clips every value above 255 to white. Map the
        # full 16-bit range linearly onto 0-255 instead (65535 / 257 = 255), the same scale for
        # every image, so that intensities keep their meaning across files.
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DatasetError(
                f"{path}: {mode} image with values outside 0-65535 "
                f"({values.min()}..{values.max()}); save it as an 8- or 16-bit PNG."
            )
        return np.rint(values / 257.0).astype(np.uint8)
    if mode == "F":
        raise DatasetError(
            f"{path}: floating-point image (mode F) has no defined grey scale; save it as an "
            "8- or 16-bit PNG."
        )
    try:
        if mode == "LA":
            # Alpha is dropped, not composited: X-rays carry no transparency, and compositing
            # onto a background colour would invent intensities.
            image = image.getchannel("L")
        elif mode in ("RGBA", "PA"):
            image = image.convert("RGB")  # alpha dropped, as above
        if image.mode != "L":
            # RGB (identical channels in this database), palette (P), 1-bit, CMYK, YCbCr:
            # Pillow's ITU-R 601 luma, which returns the grey value when the channels are equal.
            image = image.convert("L")
    except (ValueError, OSError) as error:
        raise DatasetError(
            f"{path}: image mode {mode} cannot be converted to grey ({error}); save it as an "
            "8-bit grey or RGB PNG."
        ) from error
    return np.asarray(image, dtype=np.uint8).copy()


def decode_grayscale(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an 8-bit grey image, uint8 array of shape (H, W).

    Handles every mode Pillow opens: L; RGB (luma); RGBA/LA (alpha dropped, not composited);
    P (palette); 1 (0/255); I;16 and I (16-bit: the range 0-65535 scaled to 0-255, where
    Pillow's own conversion would clip). Broken files raise DatasetError naming the file.
    Explained in notebooks/02_preprocessing.
    """
    path = Path(path)
    return _to_grayscale(_open_fully(_read_bytes(path), path), path)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read ({error.strerror or error}). {_FILE_FIX}") from error


def _resize(gray: np.ndarray, image_size: int) -> np.ndarray:
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 grey image, got {gray.dtype} array of shape {gray.shape}")
    if gray.shape == (image_size, image_size):
        return gray
    # Bilinear, the default of tf.image.resize (the paper used TensorFlow). Pillow widens the
    # filter when shrinking (antialiasing), so 299 -> 224 does not alias.
    return np.asarray(Image.fromarray(gray).resize((image_size, image_size), Image.Resampling.BILINEAR))


def _to_model_input(resized: np.ndarray) -> np.ndarray:
    scaled = resized.astype(np.float32) / np.float32(255.0)
    return np.repeat(scaled[..., None], 3, axis=-1)


def preprocess(gray: np.ndarray, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Grey uint8 (H, W) -> float32 (image_size, image_size, 3) in [0, 1], as in paper section 2.2:
    resize (bilinear), divide by 255, repeat the grey channel three times (ResNet50 expects RGB).

    Resizing the uint8 image before scaling differs from the paper's order (scale, then resize)
    by at most half a grey level, and lets the cache store uint8. Explained in
    notebooks/02_preprocessing.
    """
    return _to_model_input(_resize(np.asarray(gray), image_size))


def preprocessing_steps(path: str | os.PathLike, image_size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
    """Every intermediate array of section 2.2 for one file, to show in a notebook:
    raw (the pixels as stored), grayscale, resized, scaled (float32 / 255) and three_channel.
    Explained in notebooks/02_preprocessing.
    """
    path = Path(path)
    image = _open_fully(_read_bytes(path), path)
    gray = _to_grayscale(image, path)
    resized = _resize(gray, image_size)
    three_channel = _to_model_input(resized)
    return {
        "raw": np.asarray(image),
        "grayscale": gray,
        "resized": resized,
        "scaled": three_channel[..., 0].copy(),
        "three_channel": three_channel,
    }


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


def _index_file(path: Path) -> dict:
    """One manifest row, or {"path", "reason"} for a file that cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return {"path": str(path), "reason": f"cannot be read ({error.strerror or error})"}
    try:
        with _strict_decoding():
            image = Image.open(io.BytesIO(data))
            image.load()
        gray = _to_grayscale(image, path)
    except DatasetError as error:
        return {"path": str(path), "reason": str(error).split(": ", 1)[-1]}
    except _DECODE_ERRORS as error:
        return {"path": str(path), "reason": _problem_reason(data, error)}
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": image.width,
        "height": image.height,
        "mode": image.mode,
        "phash": str(imagehash.phash(Image.fromarray(gray), hash_size=PHASH_SIZE)),
    }


def _parallel_map(function: Callable, items: Sequence, progress: bool, description: str) -> list:
    # Pillow, zlib and hashlib release the GIL, so threads decode in parallel; map keeps order.
    with concurrent.futures.ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        results = pool.map(function, items)
        return list(tqdm(results, total=len(items), desc=description, unit="img", disable=not progress))


def _format_problems(problems: list[dict], limit: int = 10) -> str:
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

    Rows are ordered by class (Normal, then COVID) and by the number in the file name. Every
    image is decoded in full once, which finds empty, truncated and non-image files. With
    ``on_problem="raise"`` they raise one DatasetError listing them; with ``"skip"`` they are left
    out with a DatasetWarning and listed in ``manifest.attrs["problems"]`` (dicts path/reason).
    ``phash`` is a 256-bit DCT hash (hex) of the grey image, used by add_duplicate_groups.
    Explained in notebooks/01_data_collection.
    """
    if on_problem not in ("raise", "skip"):
        raise ValueError(f"on_problem must be 'raise' or 'skip', not {on_problem!r}")
    layout = (
        data_dir_or_layout
        if isinstance(data_dir_or_layout, DatasetLayout)
        else find_dataset(data_dir_or_layout)
    )
    files = [
        (class_name, path.absolute())
        for class_name in CLASSES
        for path in _image_files(layout.class_dirs[class_name])
    ]
    with _strict_decoding():  # once around all threads: per-thread toggling of the global races
        results = _parallel_map(_index_file, [p for _, p in files], progress, "Indexing images")

    rows, problems = [], []
    for (class_name, path), result in zip(files, results):
        if "reason" in result:
            problems.append(result)
        else:
            rows.append({"path": str(path), "class": class_name, "label": CLASSES[class_name], **result})
    if problems and on_problem == "raise":
        raise DatasetError(
            f"{len(problems)} of {len(files)} image files in {layout.root} cannot be used:\n"
            f"{_format_problems(problems)}\n"
            "Fix: re-download the dataset (or replace these files), delete them, or build the "
            "manifest with on_problem='skip' to leave them out."
        )
    if problems:
        warnings.warn(
            f"left out {len(problems)} unusable image files:\n{_format_problems(problems)}",
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
    manifest.attrs["root"] = str(layout.root)
    manifest.attrs["layout"] = layout.layout
    manifest.attrs["problems"] = problems
    return manifest


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    # Write next to the target, then rename: readers see the old file or the complete new one,
    # and a failure (disk full, Ctrl-C) leaves no half-written file behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    # mkstemp creates the file private (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def save_manifest(manifest: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest (or a sample or split of it) as CSV, atomically; returns the path."""
    path = Path(path)
    _atomic_write(path, lambda temporary: manifest.to_csv(temporary, index=False))
    return path


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
    _require_columns(manifest, MANIFEST_COLUMNS, f"manifest {path}")
    return manifest


def _require_columns(table: pd.DataFrame, columns: Iterable[str], what: str = "manifest") -> None:
    if not isinstance(table, pd.DataFrame):
        raise DatasetError(f"expected a manifest DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetError(
            f"{what} has no column {', '.join(missing)}; build it with "
            "cxr_utils.data.build_manifest (and add_duplicate_groups for duplicate_group)."
        )


def labels(manifest: pd.DataFrame) -> np.ndarray:
    """The 0/1 labels (Normal/COVID) of the manifest rows, in row order, as int64."""
    _require_columns(manifest, ["label"])
    return manifest["label"].to_numpy(dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Duplicates
# --------------------------------------------------------------------------------------------


def _hash_words(phashes: Sequence[str]) -> np.ndarray:
    lengths = {len(h) for h in phashes}
    if len(lengths) > 1 or (lengths and lengths.pop() != PHASH_BITS // 4):
        raise DatasetError(
            f"phash column must hold {PHASH_BITS}-bit hashes ({PHASH_BITS // 4} hex digits); "
            "build the manifest again with this version of cxr_utils.data."
        )
    try:
        raw = b"".join(bytes.fromhex(h) for h in phashes)
    except ValueError as error:
        raise DatasetError(f"phash column holds a value that is not hexadecimal ({error}).") from error
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(phashes), PHASH_BITS // 64)


def _near_pairs(
    words: np.ndarray, max_hamming: int, chunk_cells: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i < j) whose hashes differ in at most max_hamming bits.

    Distances are computed for a block of rows against all rows at a time (about 4 million
    cells, 8 MB per block), so the full database's 14,000 images need no 14,000^2 matrix.
    """
    n = len(words)
    rows_per_chunk = max(1, chunk_cells // max(n, 1))
    first, second = [], []
    for start in range(0, n, rows_per_chunk):
        block = words[start : start + rows_per_chunk]
        distance = np.zeros((len(block), n), dtype=np.uint16)
        for k in range(words.shape[1]):
            distance += np.bitwise_count(block[:, k, None] ^ words[None, :, k])
        i, j = np.nonzero(distance <= max_hamming)
        i = i + start
        keep = i < j
        first.append(i[keep])
        second.append(j[keep])
    return np.concatenate(first or [np.empty(0, int)]), np.concatenate(second or [np.empty(0, int)])


def hamming_distances(phashes: Sequence[str]) -> np.ndarray:
    """Full matrix of bit differences between the given hex hashes (for plots of small sets)."""
    words = _hash_words(list(phashes))
    distance = np.zeros((len(words), len(words)), dtype=np.uint16)
    for k in range(words.shape[1]):
        distance += np.bitwise_count(words[:, k, None] ^ words[None, :, k])
    return distance


def add_duplicate_groups(manifest: pd.DataFrame, max_hamming: int = DEFAULT_MAX_HAMMING) -> pd.DataFrame:
    """Copy of the manifest with a ``duplicate_group`` column (int, one per row).

    Two images are linked when their bytes are identical (same sha256) or their 256-bit
    perceptual hashes differ in at most ``max_hamming`` bits; groups are the connected components
    of these links over the whole manifest (so a chain A~B~C is one group, across classes too).
    An image without duplicates is a group of its own. Group numbers follow row order.
    The default threshold and how it was chosen: see DEFAULT_MAX_HAMMING.
    Explained in notebooks/01_data_collection.
    """
    _require_columns(manifest, ["sha256", "phash"])
    if not 0 <= int(max_hamming) <= PHASH_BITS:
        raise ValueError(f"max_hamming must be between 0 and {PHASH_BITS}, not {max_hamming}")
    n = len(manifest)
    near_i, near_j = _near_pairs(_hash_words(manifest["phash"].tolist()), int(max_hamming))
    # Byte-identical files: link each to the first row with the same sha256.
    sha_codes = pd.factorize(manifest["sha256"])[0]
    first_row = pd.Series(np.arange(n)).groupby(sha_codes).transform("min").to_numpy()
    rows = np.concatenate([near_i, np.arange(n)])
    cols = np.concatenate([near_j, first_row])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    grouped = manifest.copy()
    grouped["duplicate_group"] = pd.factorize(component)[0].astype(np.int64)
    grouped.attrs["duplicate_max_hamming"] = int(max_hamming)
    return grouped


def duplicate_report(manifest: pd.DataFrame) -> dict:
    """Summary of the duplicate groups of a manifest with ``duplicate_group``.

    Returns a dict: images; exact_sets / exact_images (sha256 values held by several files, and
    those files); groups / images_in_groups (groups of 2+ images); exact_groups (all members
    byte-identical) and near_groups (at least two members differ, found by the perceptual hash);
    cross_class_groups (members in both classes: a label conflict or a shared source); and
    ``table``, one row per group of 2+ images (duplicate_group, kind, size, classes, files).
    Explained in notebooks/01_data_collection.
    """
    _require_columns(manifest, ["path", "class", "sha256", "duplicate_group"])
    sha_counts = manifest["sha256"].value_counts()
    rows = []
    for group, members in manifest.groupby("duplicate_group", sort=True):
        if len(members) < 2:
            continue
        classes = sorted(members["class"].unique(), key=lambda c: CLASSES.get(c, 99))
        rows.append({
            "duplicate_group": int(group),
            "kind": "exact" if members["sha256"].nunique() == 1 else "near",
            "size": len(members),
            "classes": "+".join(classes),
            "files": " ".join(Path(p).name for p in members["path"]),
        })
    table = pd.DataFrame(rows, columns=["duplicate_group", "kind", "size", "classes", "files"])
    return {
        "images": len(manifest),
        "exact_sets": int((sha_counts > 1).sum()),
        "exact_images": int(sha_counts[sha_counts > 1].sum()),
        "groups": len(table),
        "images_in_groups": int(table["size"].sum()) if len(table) else 0,
        "exact_groups": int((table["kind"] == "exact").sum()),
        "near_groups": int((table["kind"] == "near").sum()),
        "cross_class_groups": int(table["classes"].str.contains(r"\+").sum()) if len(table) else 0,
        "table": table,
    }


# --------------------------------------------------------------------------------------------
# Sample and split
# --------------------------------------------------------------------------------------------


def _canonical_order(table: pd.DataFrame) -> np.ndarray:
    """Row positions sorted by label, then path in natural order.

    Sampling and splitting start from this order, so that a shuffled or re-read manifest gives
    the same sample and split for the same seed.
    """
    keys = [(int(label), _natural_key(str(path))) for label, path in zip(table["label"], table["path"])]
    return np.array(sorted(range(len(table)), key=keys.__getitem__), dtype=np.int64)


def sample_balanced(manifest: pd.DataFrame, n_per_class: int = 500, seed: int = 42) -> pd.DataFrame:
    """``n_per_class`` images of each class drawn at random without replacement (paper: 500 + 500).

    The draw depends only on the seed and on the set of images, not on the manifest's row
    order. Rows come back in manifest order (class, then file number) with a fresh index.
    Explained in notebooks/01_data_collection.
    """
    _require_columns(manifest, ["path", "label"])
    if int(n_per_class) != n_per_class or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive whole number, not {n_per_class!r}")
    ordered = manifest.iloc[_canonical_order(manifest)]
    by_class = {
        name: ordered[ordered["label"] == label]
        for name, label in sorted(CLASSES.items(), key=lambda item: item[1])
    }
    short = [f"{len(rows)} {name}" for name, rows in by_class.items() if len(rows) < n_per_class]
    if short:
        raise DatasetError(
            f"only {' and '.join(short)} images, fewer than n_per_class={n_per_class}; lower "
            "n_per_class or use the full database (pass no folder to download it)."
        )
    rng = np.random.default_rng(seed)
    parts = []
    for rows in by_class.values():
        chosen = np.sort(rng.choice(len(rows), size=int(n_per_class), replace=False))
        parts.append(rows.iloc[chosen])
    sample = pd.concat(parts).reset_index(drop=True)
    sample.attrs = {**manifest.attrs, "sample_seed": seed, "n_per_class": int(n_per_class)}
    return sample


def _split_targets(count: int, fractions: Sequence[float]) -> np.ndarray:
    # Largest remainder: whole numbers that add up to count (500 -> 400/50/50, 7 -> 6/1/0).
    exact = np.asarray(fractions, dtype=float) * count
    targets = np.floor(exact).astype(int)
    remainder = count - targets.sum()
    order = np.argsort(-(exact - targets), kind="stable")
    targets[order[:remainder]] += 1
    return targets


def split_dataset(
    sample: pd.DataFrame, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 42
) -> pd.DataFrame:
    """Copy of ``sample`` with a ``split`` column: "train", "val" or "test".

    Stratified by label with exact per-class counts (500 per class -> 400/50/50, the paper's
    test set of 50 COVID + 50 Normal), and each duplicate group (column ``duplicate_group``,
    computed with add_duplicate_groups when absent) stays inside one split, so no image has a
    copy in another split. Groups go first, largest first, each to the split that still needs
    the largest share of its target and has room for the whole group; single images then fill
    the remaining places exactly. The order within each size is shuffled with ``seed``.
    (scikit-learn's StratifiedGroupKFold only makes k equal folds and does not promise exact
    counts, hence this assignment.) ``split.attrs`` records the seed, the fractions, the
    per-class targets, whether they were met and how many images were kept together.
    Explained in notebooks/01_data_collection.
    """
    _require_columns(sample, ["path", "label"])
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"fractions must be three non-negative numbers (train, val, test) adding up to 1, "
            f"not {fractions}"
        )
    if "duplicate_group" not in sample.columns:
        sample = add_duplicate_groups(sample)

    order = _canonical_order(sample)
    ordered = sample.iloc[order]
    class_labels = sorted(ordered["label"].unique())
    label_index = {label: k for k, label in enumerate(class_labels)}
    class_sizes = [int((ordered["label"] == label).sum()) for label in class_labels]
    targets = np.array([_split_targets(size, fractions) for size in class_sizes]).T
    remaining = targets.copy()  # (split, class)

    groups = []  # (member positions in `ordered`, per-class counts)
    for members in ordered.groupby("duplicate_group", sort=True).indices.values():
        counts = np.zeros(len(class_labels), dtype=int)
        for label in ordered["label"].to_numpy()[members]:
            counts[label_index[label]] += 1
        groups.append((members, counts))
    rng = np.random.default_rng(seed)
    shuffled = [groups[k] for k in rng.permutation(len(groups))]
    shuffled.sort(key=lambda g: -len(g[0]))  # stable: the shuffle decides among equal sizes

    assigned = np.empty(len(ordered), dtype=object)
    for members, counts in shuffled:
        needed = counts > 0
        share_left = (remaining[:, needed].sum(axis=1) / np.maximum(targets[:, needed].sum(axis=1), 1))
        fits = (remaining >= counts).all(axis=1) & (targets[:, needed].sum(axis=1) > 0)
        if fits.any():
            choice = int(np.argmax(np.where(fits, share_left, -np.inf)))
        else:  # the group is larger than any place left: overshoot where it overshoots least
            overshoot = np.maximum(counts - remaining, 0).sum(axis=1)
            choice = int(np.lexsort((-share_left, overshoot))[0])
        remaining[choice] -= counts
        assigned[members] = SPLITS[choice]

    in_sample_order = np.empty(len(sample), dtype=object)
    in_sample_order[order] = assigned
    result = sample.copy()
    result["split"] = pd.Series(in_sample_order, index=sample.index, dtype=str)
    sizes = ordered.groupby("duplicate_group").size()
    class_names = {v: k for k, v in CLASSES.items()}
    result.attrs = {
        **sample.attrs,
        "split_seed": seed,
        "split_fractions": fractions,
        "split_targets": {
            class_names.get(lab, str(lab)): dict(zip(SPLITS, map(int, targets[:, k])))
            for k, lab in enumerate(class_labels)
        },
        "split_exact": bool((remaining == 0).all()),
        "groups_kept_together": int((sizes > 1).sum()),
        "images_kept_together": int(sizes[sizes > 1].sum()),
    }
    return result


def split_summary(split: pd.DataFrame) -> pd.DataFrame:
    """Image counts per class (rows Normal, COVID, total) and split (train, val, test, total)."""
    _require_columns(split, ["class", "split"])
    table = pd.crosstab(split["class"], split["split"], margins=True, margins_name="total")
    rows = [c for c in CLASSES if c in table.index] + ["total"]
    return table.reindex(index=rows, columns=[*SPLITS, "total"], fill_value=0)


# --------------------------------------------------------------------------------------------
# Loading model inputs
# --------------------------------------------------------------------------------------------


def _decode_resized(path: str, image_size: int) -> np.ndarray:
    return _resize(decode_grayscale(path), image_size)


def _cache_key(paths: list[str], fingerprints: list[str], image_size: int) -> str:
    payload = json.dumps(
        {"version": PREPROCESSING_VERSION, "size": image_size, "paths": paths, "files": fingerprints}
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def load_images(
    manifest_or_paths: pd.DataFrame | Sequence[str | os.PathLike],
    image_size: int = IMAGE_SIZE,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> np.ndarray:
    """The model inputs for the rows of a manifest (or a list of paths), in row order:
    float32 array (N, image_size, image_size, 3) in [0, 1], the three channels equal.

    With ``cache_dir`` the decoded, resized uint8 images are stored there as one .npy file whose
    name is a hash of the rows (paths and sha256s, in order; for bare paths their sizes and
    modification times), the image size and PREPROCESSING_VERSION: the next call with the same
    rows reads that file instead of decoding. A file that cannot be decoded raises DatasetError
    naming it, and nothing is written. Explained in notebooks/02_preprocessing.
    """
    if isinstance(manifest_or_paths, pd.DataFrame):
        _require_columns(manifest_or_paths, ["path"])
        paths = [str(p) for p in manifest_or_paths["path"]]
        fingerprints = (
            manifest_or_paths["sha256"].astype(str).tolist()
            if "sha256" in manifest_or_paths.columns
            else None
        )
    else:
        paths = [str(p) for p in manifest_or_paths]
        fingerprints = None
    image_size = int(image_size)

    cache_file = None
    if cache_dir is not None and paths:
        if fingerprints is None:
            fingerprints = []
            for path in paths:
                try:
                    stat = os.stat(path)
                except OSError as error:
                    raise DatasetError(
                        f"{path}: cannot be read ({error.strerror or error}). {_FILE_FIX}"
                    ) from error
                fingerprints.append(f"{stat.st_size}:{stat.st_mtime_ns}")
        key = _cache_key(paths, fingerprints, image_size)
        cache_file = Path(cache_dir) / f"images-{image_size}px-{len(paths)}-{key}.npy"

    resized = _read_cache(cache_file, (len(paths), image_size, image_size))
    if resized is None:
        resized = np.empty((len(paths), image_size, image_size), dtype=np.uint8)
        with _strict_decoding():
            decoded = _parallel_map(
                lambda path: _decode_resized(path, image_size), paths, progress, "Loading images"
            )
        for k, image in enumerate(decoded):
            resized[k] = image
        if cache_file is not None:
            _atomic_write(cache_file, lambda temporary: _save_npy(temporary, resized))

    images = np.empty((len(paths), image_size, image_size, 3), dtype=np.float32)
    for k in range(len(paths)):  # image by image: no second full-size float copy in memory
        images[k] = _to_model_input(resized[k])
    return images


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file object, so numpy does not append ".npy"
        np.save(handle, array, allow_pickle=False)


def _read_cache(cache_file: Path | None, shape: tuple) -> np.ndarray | None:
    if cache_file is None or not cache_file.is_file():
        return None
    try:
        cached = np.load(cache_file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        warnings.warn(
            f"ignoring unreadable image cache {cache_file} ({error}); decoding again",
            DatasetWarning,
            stacklevel=3,
        )
        return None
    if cached.shape != shape or cached.dtype != np.uint8:
        warnings.warn(
            f"ignoring image cache {cache_file} of unexpected shape {cached.shape}; decoding again",
            DatasetWarning,
            stacklevel=3,
        )
        return None
    return cached


# --------------------------------------------------------------------------------------------
# Command line: python -m cxr_utils.data DIR [--manifest-out CSV]
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cxr_utils.data",
        description="Check a COVID-19 Radiography Database folder: layout, images per class, "
        "unreadable files and duplicate images; optionally write the manifest CSV.",
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
            print(_format_problems(problems, limit=50))
            print(
                f"error: {len(problems)} image files cannot be read (listed above); re-download "
                "the dataset or delete them, then run again. No manifest written.",
                file=sys.stderr,
            )
            return 1
        print("Problems: none")
        if args.manifest_out:
            print(f"Manifest: {save_manifest(manifest, args.manifest_out)}")
    except DatasetError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
