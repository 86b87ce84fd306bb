"""Sample and split: the paper's 500 + 500 images (section 2.1) and its 80/10/10 stratified split.

Both depend only on the seed and on the set of images, not on the manifest's row order.
Explained in notebooks/01_data_collection (the sample) and notebooks/02_preprocessing (the split).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxr_utils.config import CLASSES, PROTOCOL
from cxr_utils.data.duplicates import add_duplicate_groups
from cxr_utils.data.errors import DatasetError
from cxr_utils.data.layout import natural_key
from cxr_utils.data.manifest import require_columns

SPLITS = ("train", "val", "test")


def _canonical_order(table: pd.DataFrame) -> np.ndarray:
    # Row positions by label, then path in natural order: sampling and splitting start from this
    # order, so that a shuffled or re-read manifest gives the same sample and split for the seed.
    keys = [(int(label), natural_key(str(path))) for label, path in zip(table["label"], table["path"])]
    return np.array(sorted(range(len(table)), key=keys.__getitem__), dtype=np.int64)


def sample_balanced(manifest: pd.DataFrame, n_per_class: int = PROTOCOL.n_per_class,
                    seed: int = PROTOCOL.seed) -> pd.DataFrame:
    """``n_per_class`` images of each class drawn at random without replacement (paper: 500 + 500).

    Rows come back in manifest order (class, then file number) with a fresh index.
    Explained in notebooks/01_data_collection.
    """
    require_columns(manifest, ["path", "label"])
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
    sample: pd.DataFrame, fractions: Sequence[float] = PROTOCOL.split_fractions, seed: int = PROTOCOL.seed
) -> pd.DataFrame:
    """Copy of ``sample`` with a ``split`` column: "train", "val" or "test".

    Stratified by label with exact per-class counts (500 per class -> 400/50/50), and each
    duplicate group (``duplicate_group``, computed when absent) stays inside one split. Groups go
    largest first (ties shuffled with ``seed``), each to the split that still needs the largest
    share of its target and has room for it; single images then fill the places left exactly.
    (scikit-learn's StratifiedGroupKFold makes k equal folds without exact counts, hence this.)
    ``split.attrs`` records the seed, fractions, per-class targets, whether they were met and how
    many images were kept together. Explained in notebooks/02_preprocessing.
    """
    require_columns(sample, ["path", "label"])
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
    """Image counts per class (rows Normal, COVID, total) and split (train, val, test, total).
    Explained in notebooks/02_preprocessing.
    """
    require_columns(split, ["class", "split"])
    table = pd.crosstab(split["class"], split["split"], margins=True, margins_name="total")
    rows = [c for c in CLASSES if c in table.index] + ["total"]
    return table.reindex(index=rows, columns=[*SPLITS, "total"], fill_value=0)


def leakage_report(split: pd.DataFrame) -> pd.Series:
    """Proof that no image has a copy in another split: counts of duplicate groups of 2+ images in
    the sample, of groups in more than one split, and of identical files in more than one split;
    DatasetError when either of the last two is not 0. Explained in notebooks/02_preprocessing.
    """
    require_columns(split, ["duplicate_group", "sha256", "split"])
    splits_per_group = split.groupby("duplicate_group")["split"].nunique()
    splits_per_hash = split.groupby("sha256")["split"].nunique()
    report = pd.Series({
        "groups of 2+ images in the sample": int((split["duplicate_group"].value_counts() > 1).sum()),
        "groups in more than one split": int((splits_per_group > 1).sum()),
        "identical files in more than one split": int((splits_per_hash > 1).sum()),
    })
    if report.iloc[1] or report.iloc[2]:
        raise DatasetError(
            f"the split leaks: {report.iloc[1]} duplicate groups and {report.iloc[2]} identical files lie in "
            "more than one split; rebuild it with split_dataset from a manifest with duplicate groups"
        )
    return report
