"""cxr_utils.data on the real chest X-rays: layout, manifest, duplicates, sample, split, loading, CLI."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_utils import data
from cxr_utils.data import loading

pytestmark = pytest.mark.real_data


def _by_name(manifest):
    return {Path(p).name: row for p, row in zip(manifest["path"], manifest.to_dict("records"))}


def _checksums(real_data):
    lines = (real_data / "MANIFEST.sha256").read_text().splitlines()
    return {name.strip(): digest for digest, name in (line.split(maxsplit=1) for line in lines if line)}


# -- layout -------------------------------------------------------------------------------------


def test_finds_current_kaggle_layout(real_data):
    layout = data.find_dataset(real_data)
    assert layout.root == real_data
    assert layout.layout == "kaggle-current"
    assert layout.class_dirs == {
        "COVID": real_data / "COVID" / "images",
        "Normal": real_data / "Normal" / "images",
    }


def test_finds_dataset_below_a_parent_folder(real_data):
    assert data.find_dataset(real_data.parent).root == real_data


# -- manifest -----------------------------------------------------------------------------------


def test_manifest_columns_counts_labels_and_order(real_manifest):
    assert list(real_manifest.columns) == [*data.MANIFEST_COLUMNS, "duplicate_group"]
    assert real_manifest["class"].value_counts().to_dict() == {"Normal": 1000, "COVID": 1000}
    assert (real_manifest["label"] == real_manifest["class"].map(data.CLASSES)).all()
    assert real_manifest["path"].is_unique
    assert all(Path(p).is_absolute() for p in real_manifest["path"])
    assert set(zip(real_manifest["width"], real_manifest["height"], real_manifest["mode"])) == {(224, 224, "RGB")}
    assert real_manifest["phash"].str.fullmatch(r"[0-9a-f]{64}").all()
    # Normal first, then COVID, each by the number in the file name (natural order).
    assert real_manifest["class"].iloc[0] == "Normal" and real_manifest["class"].iloc[-1] == "COVID"
    for class_name in data.CLASSES:
        names = real_manifest.loc[real_manifest["class"] == class_name, "path"].map(lambda p: Path(p).stem)
        numbers = names.str.split("-").str[-1].astype(int)
        assert numbers.is_monotonic_increasing


def test_sha256_matches_the_folders_checksum_file(real_data, real_manifest):
    expected = _checksums(real_data)
    relative = real_manifest["path"].map(lambda p: Path(p).relative_to(real_data).as_posix())
    assert dict(zip(relative, real_manifest["sha256"])) == expected


def test_manifest_round_trips_through_csv(real_manifest, tmp_path):
    path = data.save_manifest(real_manifest, tmp_path / "sub" / "manifest.csv")
    again = data.read_manifest(path)
    pd.testing.assert_frame_equal(again, real_manifest, check_dtype=False)
    assert again["phash"].str.len().eq(64).all()  # hashes stay text, leading zeros kept
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.csv"]  # no temp file left


# -- duplicates ---------------------------------------------------------------------------------


def test_exact_duplicate_pairs_share_a_group(real_data, real_manifest):
    checksums = pd.Series(_checksums(real_data))
    pairs = checksums[checksums.duplicated(keep=False)].groupby(checksums).groups
    assert len(pairs) == 6
    group_of = dict(zip(real_manifest["path"].map(lambda p: Path(p).relative_to(real_data).as_posix()),
                        real_manifest["duplicate_group"]))
    for names in pairs.values():
        assert len({group_of[name] for name in names}) == 1, list(names)


def test_duplicate_report_on_the_real_folder(real_manifest):
    report = data.duplicate_report(real_manifest)
    assert report["images"] == 2000
    assert (report["exact_sets"], report["exact_images"]) == (6, 12)
    assert report["cross_class_groups"] == 0
    assert report["groups"] == report["exact_groups"] + report["near_groups"] == len(report["table"])
    assert report["exact_groups"] >= 4 and report["near_groups"] >= 10
    assert report["images_in_groups"] == report["table"]["size"].sum()
    groups = real_manifest.groupby("duplicate_group").size()
    assert report["groups"] == (groups > 1).sum()


@pytest.mark.parametrize(
    ("first", "second", "grouped"),
    [
        ("COVID-385.png", "COVID-981.png", True),  # same radiograph, 18 bits apart
        ("COVID-449.png", "COVID-1559.png", True),  # same radiograph, 30 bits: farthest copy seen
        ("Normal-4319.png", "Normal-5859.png", False),  # two patients, 52 bits: closest distinct pair
    ],
)
def test_threshold_separates_copies_from_distinct_patients(real_manifest, first, second, grouped):
    rows = _by_name(real_manifest)
    distance = data.hamming_distances([rows[first]["phash"], rows[second]["phash"]])[0, 1]
    assert (distance <= data.DEFAULT_MAX_HAMMING) == grouped
    assert (rows[first]["duplicate_group"] == rows[second]["duplicate_group"]) == grouped


# -- sample and split ---------------------------------------------------------------------------


def test_balanced_sample(real_manifest):
    sample = data.sample_balanced(real_manifest, n_per_class=500, seed=42)
    assert sample["class"].value_counts().to_dict() == {"Normal": 500, "COVID": 500}
    assert sample["path"].is_unique
    assert set(sample["path"]) <= set(real_manifest["path"])
    with pytest.raises(data.DatasetError, match="only 1000 Normal and 1000 COVID images"):
        data.sample_balanced(real_manifest, n_per_class=1001)


def _assert_disjoint(split):
    for column in ("path", "sha256", "duplicate_group"):
        owners = split.groupby(column)["split"].nunique()
        assert (owners == 1).all(), f"{column} shared between splits: {list(owners[owners > 1].index)[:5]}"


def test_split_matches_the_paper_and_keeps_duplicates_together(real_manifest):
    split = data.split_dataset(data.sample_balanced(real_manifest, 500, seed=42), seed=42)
    summary = data.split_summary(split)
    assert summary.loc[["Normal", "COVID"], ["train", "val", "test"]].to_numpy().tolist() == [[400, 50, 50]] * 2
    assert summary.loc["total", "total"] == 1000
    _assert_disjoint(split)
    assert split.attrs["split_exact"]


def test_split_of_every_image_keeps_all_duplicate_groups_together(real_manifest):
    split = data.split_dataset(real_manifest, seed=7)  # all 24 groups are in play here
    _assert_disjoint(split)
    assert split.attrs["images_kept_together"] == data.duplicate_report(real_manifest)["images_in_groups"]
    summary = data.split_summary(split)
    assert summary.loc[["Normal", "COVID"], ["train", "val", "test"]].to_numpy().tolist() == [[800, 100, 100]] * 2


def test_same_seed_same_sample_and_split_other_seed_other(real_manifest):
    def run(seed, manifest=real_manifest):
        return data.split_dataset(data.sample_balanced(manifest, 500, seed=seed), seed=seed)

    first = run(42)
    pd.testing.assert_frame_equal(first, run(42))
    # The row order of the manifest does not matter, only the seed does.
    shuffled = real_manifest.sample(frac=1, random_state=0)
    pd.testing.assert_frame_equal(first, run(42, shuffled))
    other = run(43)
    assert set(other["path"]) != set(first["path"])
    same_sample = data.sample_balanced(real_manifest, 500, seed=42)
    assert not data.split_dataset(same_sample, seed=1)["split"].equals(first["split"])


def test_split_computes_duplicate_groups_when_missing(real_manifest):
    sample = data.sample_balanced(real_manifest.drop(columns="duplicate_group"), 50, seed=3)
    split = data.split_dataset(sample, seed=3)
    assert "duplicate_group" in split.columns
    assert data.split_summary(split).loc["total", "test"] == 10


# -- loading ------------------------------------------------------------------------------------


def test_loaded_images_are_the_models_inputs(real_manifest):
    rows = real_manifest.iloc[::100]
    images = data.load_images(rows, progress=False)
    assert images.shape == (20, 224, 224, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.5
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all()
    # 224x224 files need no resizing: the model sees exactly the stored grey levels / 255.
    expected = data.decode_grayscale(rows["path"].iloc[3]).astype(np.float32) / 255
    np.testing.assert_array_equal(images[3, ..., 0], expected)
    np.testing.assert_array_equal(data.labels(rows), rows["label"].to_numpy())


def test_image_cache_round_trip(real_manifest, tmp_path, monkeypatch):
    rows = real_manifest.iloc[:12]
    first = data.load_images(rows, cache_dir=tmp_path, progress=False)
    cached = list(tmp_path.iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".npy"

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although it was cached")

    monkeypatch.setattr(loading, "decode_grayscale", no_decoding)  # the name load_images calls
    np.testing.assert_array_equal(data.load_images(rows, cache_dir=tmp_path, progress=False), first)
    # Other rows, or another size, are another cache entry: they decode again.
    with pytest.raises(AssertionError, match="decoded"):
        data.load_images(real_manifest.iloc[1:13], cache_dir=tmp_path, progress=False)
    with pytest.raises(AssertionError, match="decoded"):
        data.load_images(rows, image_size=64, cache_dir=tmp_path, progress=False)


def test_preprocessing_steps(real_manifest):
    steps = data.preprocessing_steps(real_manifest["path"].iloc[0], image_size=112)
    assert steps["raw"].shape == (224, 224, 3)
    assert steps["grayscale"].shape == (224, 224) and steps["grayscale"].dtype == np.uint8
    assert steps["resized"].shape == (112, 112)
    assert steps["scaled"].dtype == np.float32 and steps["scaled"].max() <= 1.0
    assert steps["three_channel"].shape == (112, 112, 3)
    np.testing.assert_array_equal(steps["three_channel"], data.preprocess(steps["grayscale"], 112))


# -- import and command line --------------------------------------------------------------------


def test_import_loads_no_deep_learning_framework_nor_downloader():
    code = (
        "import sys, cxr_utils.data; "
        "print(sorted(m for m in ('keras', 'tensorflow', 'kagglehub', 'torch', 'jax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# Every name the notebooks, cxr_utils, benchmarks/, tests/ and README call as ``data.<name>``.
PUBLIC_API = (
    "CLASSES", "DEFAULT_MAX_HAMMING", "KAGGLE_HANDLE", "KAGGLE_URL", "MANIFEST_COLUMNS", "SPLITS",
    "DatasetError", "DatasetWarning", "DatasetLayout", "add_duplicate_groups", "build_manifest",
    "decode_grayscale", "download_dataset", "duplicate_report", "find_dataset", "hamming_distances",
    "labels", "load_images", "preprocess", "preprocessing_steps", "read_manifest",
    "resolve_dataset", "sample_balanced", "save_manifest", "split_dataset", "split_summary",
)


def test_package_keeps_the_public_api():
    from cxr_utils import config
    from cxr_utils.data import errors

    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    called = {
        name
        for notebook in notebooks.glob("*.ipynb")
        for cell in json.loads(notebook.read_text())["cells"]
        if cell["cell_type"] == "code"
        for name in re.findall(r"\bdata\.(\w+)", "".join(cell["source"]))
    }
    assert {"build_manifest", "split_dataset", "preprocessing_steps"} <= called  # the scan works
    missing = [name for name in sorted(called | set(PUBLIC_API)) if not hasattr(data, name)]
    assert not missing, f"cxr_utils.data has no {missing}, which notebooks or callers use"
    assert set(PUBLIC_API) <= set(data.__all__)
    assert data.CLASSES is config.CLASSES  # one definition of the labels
    assert data.DatasetError is errors.DatasetError and issubclass(data.DatasetError, ValueError)
    assert data.DatasetWarning is errors.DatasetWarning and issubclass(data.DatasetWarning, UserWarning)


def test_command_line_help():
    result = subprocess.run(
        [sys.executable, "-m", "cxr_utils.data", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m cxr_utils.data")
    assert "--manifest-out" in result.stdout and "--max-hamming" in result.stdout


def test_command_line_report(real_data, tmp_path):
    manifest_path = tmp_path / "manifest.csv"
    result = subprocess.run(
        [sys.executable, "-m", "cxr_utils.data", str(real_data),
         "--manifest-out", str(manifest_path), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "layout: kaggle-current" in out
    assert "Normal: 1000 images" in out and "COVID: 1000 images" in out
    assert "6 sets of byte-identical files (12 images)" in out
    assert "0 spanning both classes" in out
    assert "COVID-2420.png COVID-2421.png" in out
    assert "Problems: none" in out
    manifest = data.read_manifest(manifest_path)
    assert len(manifest) == 2000 and "duplicate_group" in manifest.columns
