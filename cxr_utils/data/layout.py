"""Finding the dataset: the class folders in every layout Kaggle has published, or a download.

``resolve_dataset(data_dir)`` is the entry point: ``find_dataset`` searches the folder and those
below it for COVID/ and Normal/, ``download_dataset`` fetches the database with kagglehub when no
folder is given. Explained in notebooks/01_data_collection.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cxr_utils.config import CLASSES
from cxr_utils.data.errors import DatasetError, DatasetWarning

KAGGLE_HANDLE = "tawsifurrahman/covid19-radiography-database"
KAGGLE_URL = "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database"
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

_NUMBER = re.compile(r"(\d+)")

HAND_DOWNLOAD_HELP = (
    f"download the database by hand from {KAGGLE_URL} (\"Download\", then unzip), and pass the "
    "unzipped folder: data_dir=... in Python, --data-dir on the command line, or DATA_DIR=... "
    "for make"
)


@dataclass(frozen=True)
class DatasetLayout:
    """Where the images of each class are.

    ``root`` holds the class folders; ``class_dirs`` maps "COVID" and "Normal" to the folder that
    directly holds the image files; ``layout`` is "kaggle-current" (``<Class>/images/<Class>-<n>.png``),
    "flat" (``<Class>/<file>.png``, e.g. the earlier releases' ``COVID/COVID (1).png``) or "mixed".
    Explained in notebooks/01_data_collection.
    """

    root: Path
    layout: str
    class_dirs: dict[str, Path] = field(default_factory=dict)


def natural_key(text: str) -> tuple:
    """A sort key that orders numbers inside names by value, case-insensitively."""
    # "COVID-2" before "COVID-10"; re.split with a group alternates text and digits, so the
    # tuples compare str with str and int with int.
    return tuple(int(part) if part.isdigit() else part.lower() for part in _NUMBER.split(text))


def _entries(folder: Path, keep) -> list[Path]:
    # Names starting with "." are skipped: macOS resource forks ("._COVID-1.png") and editor files.
    try:
        entries = list(folder.iterdir())
    except OSError:  # unreadable folders are skipped, as `find` would
        return []
    return sorted((p for p in entries if not p.name.startswith(".") and keep(p)), key=lambda p: natural_key(p.name))


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, in natural order; hidden files skipped."""
    return _entries(folder, lambda p: p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _subfolders(folder: Path) -> list[Path]:
    return _entries(folder, Path.is_dir)


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for sub in _subfolders(folder):
        for class_name, names in CLASS_FOLDER_NAMES.items():
            if sub.name.lower() in names:
                found.setdefault(class_name, []).append(sub)
    return found


def _images_folder(class_folder: Path) -> tuple[Path, str]:
    """The folder holding a class's image files, and whether it is the images/ subfolder."""
    direct = image_files(class_folder)
    images_dirs = [p for p in _subfolders(class_folder) if p.name.lower() == IMAGES_SUBFOLDER]
    nested = images_dirs and image_files(images_dirs[0])
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

    Accepts the dataset root or any folder above it (breadth-first, natural name order, at most
    ``SEARCH_DEPTH`` levels down), class folders in any letter case, the current Kaggle release
    (``COVID/images/COVID-1.png``; ``masks/`` ignored), the same without ``images/``, and the first
    releases (``COVID-19/``, ``NORMAL/``, ``NORMAL (1).png``). Other classes are ignored.
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
    """Download the database with kagglehub (needs a network, for some accounts Kaggle credentials);
    returns the folder it unpacked to. Explained in notebooks/01_data_collection.
    """
    credentials = (
        "add your Kaggle API token (kaggle.com > Settings > API > Create New Token): on Google Colab "
        "as two secrets, KAGGLE_USERNAME and KAGGLE_KEY (the key icon in the left bar, with notebook "
        "access on), elsewhere as ~/.kaggle/kaggle.json or the environment variables KAGGLE_USERNAME "
        "and KAGGLE_KEY"
    )
    try:
        import kagglehub

        return Path(kagglehub.dataset_download(KAGGLE_HANDLE))
    except Exception as error:  # no network, no credentials, no kagglehub: one clear message
        cause = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
        # kagglehub without (valid) credentials: UnauthenticatedError or CredentialError, or an
        # HTTP 401/403 answer (KaggleApiHTTPError, ColabHTTPError).
        status = getattr(getattr(error, "response", None), "status_code", None)
        if type(error).__name__ in ("UnauthenticatedError", "CredentialError") or status in (401, 403):
            raise DatasetError(
                f"Kaggle refused to send {KAGGLE_HANDLE}: it needs your Kaggle credentials ({cause}). "
                f"Either {credentials}; or upload the unzipped dataset folder (to Google Drive, or "
                "with the Colab file browser) and pass it as data_dir=... (--data-dir on the command "
                f"line, DATA_DIR=... for make); the dataset is at {KAGGLE_URL}."
            ) from error
        raise DatasetError(
            f"could not download {KAGGLE_HANDLE} from Kaggle with kagglehub ({cause}). This needs a "
            f"network connection (and, if Kaggle asks for them, credentials: {credentials}). "
            f"Without them: {HAND_DOWNLOAD_HELP}."
        ) from error


def resolve_dataset(data_dir: str | os.PathLike | None = None) -> DatasetLayout:
    """``find_dataset(data_dir)``, or download the dataset first when ``data_dir`` is None.
    Explained in notebooks/01_data_collection.
    """
    if data_dir is None or str(data_dir) == "":
        data_dir = download_dataset()
    return find_dataset(data_dir)
