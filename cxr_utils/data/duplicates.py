"""Duplicates: exact (same bytes) and near (perceptual hashes a few bits apart) copies of an image,
linked into groups that ``split_dataset`` keeps inside one split. Explained in
notebooks/01_data_collection.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cxr_utils.config import CLASSES
from cxr_utils.data.errors import DatasetError
from cxr_utils.data.manifest import PHASH_BITS, require_columns

# Near-duplicate threshold, in bits out of 256, chosen on the 2,000 real images of
# shared/data/covid19-radiography-224 (all 2 million pairs, looked at side by side):
# - the 33 pairs within 0-30 bits are all the same radiograph (pixel correlation >= 0.967:
#   re-encoded, re-cropped or contrast-changed copies, e.g. COVID-385 / COVID-981 at 18);
# - no pair lies between 32 and 50 bits;
# - from 52 bits on they are different patients with similar anatomy (Normal-4319 / Normal-5859
#   at 52), with exceptions no image hash separates: the rescaled copy COVID-397 / COVID-570 at
#   56, and follow-up films of one patient (COVID-910 / COVID-919, 52) that only unpublished
#   patient IDs could link.
# 36 bits takes every copy seen, keeps 16 bits from the first distinct pair, and leaves room for
# the full database, whose 50 times more pairs reach lower distances.
DEFAULT_MAX_HAMMING = 36


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


def _distances(block: np.ndarray, words: np.ndarray) -> np.ndarray:
    distance = np.zeros((len(block), len(words)), dtype=np.uint16)
    for k in range(words.shape[1]):
        distance += np.bitwise_count(block[:, k, None] ^ words[None, :, k])
    return distance


def _near_pairs(
    words: np.ndarray, max_hamming: int, chunk_cells: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray]:
    # All pairs (i < j) within max_hamming bits. One block of rows against all rows at a time
    # (about 4 million cells, 8 MB), so the full database's 14,000 images need no 14,000^2 matrix.
    n = len(words)
    rows_per_chunk = max(1, chunk_cells // max(n, 1))
    first, second = [], []
    for start in range(0, n, rows_per_chunk):
        i, j = np.nonzero(_distances(words[start : start + rows_per_chunk], words) <= max_hamming)
        i = i + start
        keep = i < j
        first.append(i[keep])
        second.append(j[keep])
    return np.concatenate(first or [np.empty(0, int)]), np.concatenate(second or [np.empty(0, int)])


def hamming_distances(phashes: Sequence[str]) -> np.ndarray:
    """Full matrix of bit differences between the given hex hashes (for plots of small sets)."""
    words = _hash_words(list(phashes))
    return _distances(words, words)


def add_duplicate_groups(manifest: pd.DataFrame, max_hamming: int = DEFAULT_MAX_HAMMING) -> pd.DataFrame:
    """Copy of the manifest with an int64 ``duplicate_group`` column, numbered in row order.

    Two images are linked when their bytes are identical (same sha256) or their 256-bit perceptual
    hashes differ in at most ``max_hamming`` bits (see DEFAULT_MAX_HAMMING); groups are the
    connected components of these links (a chain A~B~C is one group, across classes too).
    Explained in notebooks/01_data_collection.
    """
    require_columns(manifest, ["sha256", "phash"])
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
    """Summary of the duplicate groups of a manifest with ``duplicate_group``, as a dict.

    Keys: images; exact_sets / exact_images (sha256 values held by several files, and those files);
    groups / images_in_groups (groups of 2+ images), of which exact_groups (all members identical)
    and near_groups; cross_class_groups (members in both classes: a label conflict or a shared
    source); ``table``, one row per group of 2+ images. Explained in notebooks/01_data_collection.
    """
    require_columns(manifest, ["path", "class", "sha256", "duplicate_group"])
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
