"""cxr_utils.data on the folders and files users really have, broken ones included.

Everything is made in tmp_path from small synthetic PNGs; nothing here needs the real images or
the network.
"""

import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from cxr_utils import data, predict
from cxr_utils.data import cli


def _xray(seed, size=32, mode="L"):
    values = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    image = Image.fromarray(values)
    return image if mode == "L" else image.convert(mode)


def make_dataset(
    root, n=3, covid="COVID", normal="Normal", subfolder="images", names="{cls}-{n}.png", extra_classes=()
):
    """A small dataset in one of the database's layouts; returns the folder holding the classes."""
    root = Path(root)
    for k, (folder, cls) in enumerate([(covid, "COVID"), (normal, "Normal")]):
        images = root / folder / subfolder if subfolder else root / folder
        images.mkdir(parents=True, exist_ok=True)
        prefix = folder if "(" in names else cls
        for i in range(1, n + 1):
            _xray(100 * k + i).save(images / names.format(cls=prefix, n=i))
    for name in extra_classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        _xray(999).save(root / name / f"{name} (1).png")
    return root


def _snapshot(folder):
    return {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# -- layouts ------------------------------------------------------------------------------------


def test_current_kaggle_layout_ignores_masks_and_other_classes(tmp_path):
    root = make_dataset(
        tmp_path / "COVID-19_Radiography_Dataset", extra_classes=("Lung_Opacity", "Viral Pneumonia")
    )
    (root / "COVID" / "masks").mkdir()
    (root / "COVID" / "masks" / "COVID-1.png").write_text("not looked at")
    layout = data.find_dataset(root)
    assert layout.layout == "kaggle-current"
    assert layout.class_dirs["COVID"] == root / "COVID" / "images"
    manifest = data.build_manifest(layout, progress=False)
    assert len(manifest) == 6 and "masks" not in " ".join(manifest["path"])


def test_flat_layout(tmp_path):
    layout = data.find_dataset(make_dataset(tmp_path, subfolder=None))
    assert layout.layout == "flat" and layout.class_dirs["Normal"] == tmp_path / "Normal"


def test_class_folders_in_any_case(tmp_path):
    layout = data.find_dataset(make_dataset(tmp_path, covid="covid", normal="NORMAL"))
    assert layout.class_dirs == {"COVID": tmp_path / "covid" / "images", "Normal": tmp_path / "NORMAL" / "images"}
    manifest = data.build_manifest(layout, progress=False)
    assert manifest.groupby("class")["label"].first().to_dict() == {"COVID": 1, "Normal": 0}


@pytest.mark.parametrize("covid_folder", ["COVID", "COVID-19"])
def test_first_releases_from_a_parent_folder(tmp_path, covid_folder):
    # 2020 releases: "COVID-19 Radiography Database/{COVID-19 or COVID, NORMAL, Viral Pneumonia}/
    # <FOLDER> (n).png", with metadata spreadsheets beside the class folders.
    root = make_dataset(
        tmp_path / "archive" / "COVID-19 Radiography Database", n=11, covid=covid_folder, normal="NORMAL",
        subfolder=None, names="{cls} ({n}).png", extra_classes=("Viral Pneumonia",),
    )
    (root / f"{covid_folder}.metadata.xlsx").write_bytes(b"PK")
    layout = data.find_dataset(tmp_path)
    assert layout.root == root and layout.layout == "flat"
    manifest = data.build_manifest(layout, progress=False)
    covid_names = [Path(p).name for p in manifest.loc[manifest["class"] == "COVID", "path"]]
    assert covid_names[:3] == [f"{covid_folder} (1).png", f"{covid_folder} (2).png", f"{covid_folder} (3).png"]
    assert covid_names[-1] == f"{covid_folder} (11).png"  # natural order: 11 after 2
    assert manifest["class"].value_counts().to_dict() == {"Normal": 11, "COVID": 11}


def test_parent_folder_search_is_bounded(tmp_path):
    make_dataset(tmp_path / "a" / "b" / "c" / "d")
    assert data.find_dataset(tmp_path).root == tmp_path / "a" / "b" / "c" / "d"
    make_dataset(tmp_path / "deep" / "1" / "2" / "3" / "4" / "5")
    with pytest.raises(data.DatasetError, match="levels below"):
        data.find_dataset(tmp_path / "deep")


def test_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(data.DatasetError, match="not found") as error:
        data.find_dataset(missing)
    assert str(missing) in str(error.value) and "download" in str(error.value)


def test_file_instead_of_folder(tmp_path):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(data.DatasetError, match="unzip"):
        data.find_dataset(archive)


def test_folder_without_the_two_classes(tmp_path):
    make_dataset(tmp_path, covid="COVID", normal="Viral Pneumonia")
    with pytest.raises(data.DatasetError, match="COVID/ and Normal/") as error:
        data.find_dataset(tmp_path)
    assert str(tmp_path) in str(error.value) and "holds COVID/ only" in str(error.value)


def test_class_without_images(tmp_path):
    make_dataset(tmp_path)
    for file in (tmp_path / "Normal" / "images").iterdir():
        file.unlink()
    with pytest.raises(data.DatasetError, match="has no images") as error:
        data.find_dataset(tmp_path)
    assert str(tmp_path / "Normal") in str(error.value)


def test_images_both_directly_and_in_images_folder(tmp_path):
    make_dataset(tmp_path)
    _xray(1).save(tmp_path / "COVID" / "stray.png")
    with pytest.raises(data.DatasetError, match="both directly and in images/"):
        data.find_dataset(tmp_path)


# -- broken files -------------------------------------------------------------------------------


def _truncate(path):
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def _corrupt_exif(path):
    _xray(0).save(path, exif=b"not EXIF at all")  # Pillow reads the pixels, then fails on the EXIF


BREAKERS = {
    "empty file": lambda p: p.write_bytes(b""),
    "corrupt EXIF data": _corrupt_exif,
    "truncated": _truncate,
    "not an image": lambda p: p.write_text("<html>Please sign in to download</html>"),
}


@pytest.mark.parametrize("reason", BREAKERS)
def test_broken_file_is_named_with_the_fix(tmp_path, reason):
    make_dataset(tmp_path)
    bad = tmp_path / "COVID" / "images" / "COVID-2.png"
    BREAKERS[reason](bad)
    with pytest.raises(data.DatasetError) as error:
        data.build_manifest(tmp_path, progress=False)
    message = str(error.value)
    assert str(bad) in message and reason in message
    assert "1 of 6 image files" in message and "re-download" in message
    with pytest.raises(data.DatasetError, match=reason) as decoding:
        data.decode_grayscale(bad)
    assert decoding.value.path == bad and reason in decoding.value.reason and str(bad) not in decoding.value.reason
    # The lists of unusable files (the manifest's, predict's) show that reason, not the dataset's fix.
    with pytest.warns(data.DatasetWarning):
        skipped = data.build_manifest(tmp_path, on_problem="skip", progress=False)
    assert skipped.attrs["problems"] == [{"path": str(bad), "reason": decoding.value.reason}]
    assert predict._decode(bad, 32) == (None, decoding.value.reason)


def test_a_grey_scale_the_package_cannot_read_is_named_with_its_own_fix(tmp_path):
    path = tmp_path / "float.tiff"
    Image.fromarray(np.zeros((8, 8), np.float32)).save(path)
    with pytest.raises(data.DatasetError, match="mode F") as error:
        data.decode_grayscale(path)
    # Re-downloading would not help: the fix is to save the file otherwise, and it is part of the reason.
    assert str(error.value) == f"{path}: {error.value.reason}"
    assert error.value.reason.endswith("save it as an 8- or 16-bit PNG.")
    assert predict._decode(path, 32) == (None, error.value.reason)


def test_truncated_file_is_caught_even_if_pillow_was_told_to_accept_them(tmp_path, monkeypatch):
    make_dataset(tmp_path)
    _truncate(tmp_path / "Normal" / "images" / "Normal-1.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(data.DatasetError, match="truncated"):
        data.build_manifest(tmp_path, progress=False)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_skip_leaves_out_broken_files_with_a_warning(tmp_path):
    make_dataset(tmp_path)
    bad = tmp_path / "COVID" / "images" / "COVID-3.png"
    bad.write_bytes(b"")
    with pytest.warns(data.DatasetWarning, match="left out 1 unusable"):
        manifest = data.build_manifest(tmp_path, on_problem="skip", progress=False)
    assert len(manifest) == 5 and str(bad) not in set(manifest["path"])
    assert manifest.attrs["problems"] == [{"path": str(bad), "reason": "empty file (0 bytes)"}]


def test_many_broken_files_are_listed_briefly(tmp_path):
    make_dataset(tmp_path, n=14)
    for i in range(1, 14):
        (tmp_path / "COVID" / "images" / f"COVID-{i}.png").write_bytes(b"")
    with pytest.raises(data.DatasetError, match="and 3 more") as error:
        data.build_manifest(tmp_path, progress=False)
    assert str(error.value).count("empty file") == 10


def test_class_with_only_broken_files_is_unusable_even_when_skipping(tmp_path):
    make_dataset(tmp_path, n=2)
    for file in (tmp_path / "Normal" / "images").iterdir():
        file.write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.DatasetWarning)
        with pytest.raises(data.DatasetError, match="no usable Normal images"):
            data.build_manifest(tmp_path, on_problem="skip", progress=False)


def test_reading_never_modifies_the_input(tmp_path):
    make_dataset(tmp_path)
    before = _snapshot(tmp_path)
    manifest = data.add_duplicate_groups(data.build_manifest(tmp_path, progress=False))
    data.load_images(manifest, progress=False)
    data.preprocessing_steps(manifest["path"].iloc[0])
    assert _snapshot(tmp_path) == before


# -- image modes --------------------------------------------------------------------------------


def test_rgba_drops_alpha(tmp_path):
    gray = np.asarray(_xray(5))
    alpha = np.zeros_like(gray)  # fully transparent: the grey values must survive anyway
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([gray, gray, gray, alpha]), "RGBA").save(path)
    np.testing.assert_array_equal(data.decode_grayscale(path), gray)
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(data.decode_grayscale(tmp_path / "la.png"), gray)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 30000, 65535]], dtype=np.uint16)
    path = tmp_path / "sixteen.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    assert np.asarray(Image.open(path).convert("L"))[0, 2] == 255  # what plain Pillow gives for 1000
    decoded = data.decode_grayscale(path)
    assert decoded.dtype == np.uint8
    assert decoded.tolist() == [[0, 1, 4, 117, 255]]  # round(v / 257): 1000 stays dark, not white


def test_16_bit_image_in_a_dataset(tmp_path):
    make_dataset(tmp_path, n=1)
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "COVID" / "images" / "COVID-1.png")
    manifest = data.build_manifest(tmp_path, progress=False)
    assert manifest.loc[manifest["class"] == "COVID", "mode"].item() == "I;16"
    covid = manifest[manifest["class"] == "COVID"]
    image = data.load_images(covid, image_size=32, progress=False)[0, ..., 0]
    assert image.min() == 0.0 and image.max() == 1.0 and len(np.unique(image)) > 200


def test_palette_and_one_bit_images(tmp_path):
    gray = _xray(7)
    gray.convert("P").save(tmp_path / "palette.png")
    expected = np.asarray(gray.convert("P").convert("L"))
    np.testing.assert_array_equal(data.decode_grayscale(tmp_path / "palette.png"), expected)
    Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1").save(tmp_path / "bits.png")
    assert data.decode_grayscale(tmp_path / "bits.png").tolist() == [[0, 255], [255, 0]]


def test_rgb_jpeg_with_upper_case_suffix(tmp_path):
    make_dataset(tmp_path, n=1)
    _xray(3, mode="RGB").save(tmp_path / "Normal" / "images" / "Normal-2.JPG", quality=95)
    manifest = data.build_manifest(tmp_path, progress=False)
    assert manifest["path"].str.endswith("Normal-2.JPG").sum() == 1


def test_preprocess_resizes_scales_and_repeats(tmp_path):
    gray = np.asarray(_xray(9, size=299))
    model_input = data.preprocess(gray)
    assert model_input.shape == (224, 224, 3) and model_input.dtype == np.float32
    assert 0.0 <= model_input.min() and model_input.max() <= 1.0
    assert (model_input[..., 0] == model_input[..., 2]).all()
    with pytest.raises(ValueError, match="2-D uint8"):
        data.preprocess(gray.astype(np.float32))


# -- nothing partial left behind ----------------------------------------------------------------


def test_bad_file_in_load_images_names_it_and_writes_no_cache(tmp_path):
    make_dataset(tmp_path / "d")
    manifest = data.build_manifest(tmp_path / "d", progress=False)
    bad = Path(manifest["path"].iloc[4])
    _truncate(bad)
    cache = tmp_path / "cache"
    with pytest.raises(data.DatasetError, match="truncated") as error:
        data.load_images(manifest, cache_dir=cache, progress=False)
    assert str(bad) in str(error.value)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_unreadable_cache_is_rebuilt(tmp_path):
    make_dataset(tmp_path / "d")
    manifest = data.build_manifest(tmp_path / "d", progress=False)
    first = data.load_images(manifest, image_size=16, cache_dir=tmp_path / "cache", progress=False)
    (cache_file,) = (tmp_path / "cache").iterdir()
    cache_file.write_bytes(b"garbage")
    with pytest.warns(data.DatasetWarning, match="unreadable image cache"):
        again = data.load_images(manifest, image_size=16, cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(again, first)


def test_save_manifest_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "manifest.csv"
    target.write_text("previous run\n")

    def fail_halfway(self, path, **kwargs):
        Path(path).write_text("path,cla")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        data.save_manifest(pd.DataFrame({"path": ["x"]}), target)
    assert target.read_text() == "previous run\n"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]


def test_written_files_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = data.save_manifest(pd.DataFrame({"path": ["x"]}), tmp_path / "manifest.csv")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644  # as open() gives, not mkstemp's private 0600


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "cxr_utils.data", *map(str, args), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )


def test_command_line_with_a_bad_file_writes_no_manifest(tmp_path):
    make_dataset(tmp_path / "d")
    bad = tmp_path / "d" / "Normal" / "images" / "Normal-1.png"
    bad.write_text("not a png")
    out = tmp_path / "out"
    result = _cli(tmp_path / "d", "--manifest-out", out / "manifest.csv")
    assert result.returncode == 1
    assert str(bad) in result.stdout and "not an image" in result.stdout
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_command_line_on_an_unusable_folder(tmp_path):
    result = _cli(tmp_path / "nowhere")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset folder not found")


def test_command_line_on_a_synthetic_folder(tmp_path):
    make_dataset(tmp_path, n=2)
    result = _cli(tmp_path, "--manifest-out", tmp_path / "m.csv")
    assert result.returncode == 0, result.stderr
    assert "COVID: 2 images" in result.stdout and "Problems: none" in result.stdout
    assert len(data.read_manifest(tmp_path / "m.csv")) == 4


# -- download without network -------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    kagglehub = pytest.importorskip("kagglehub")
    calls = []

    def no_network(handle, *args, **kwargs):
        calls.append(handle)
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", no_network)
    return calls


def test_download_without_network_explains_the_hand_download(offline):
    with pytest.raises(data.DatasetError) as error:
        data.download_dataset()
    message = str(error.value)
    assert offline == [data.KAGGLE_HANDLE]
    assert "network" in message and data.KAGGLE_URL in message
    assert "data_dir=" in message and "--data-dir" in message
    with pytest.raises(data.DatasetError, match="kaggle.com/datasets"):
        data.resolve_dataset(None)


def test_command_line_without_folder_and_network(offline, capsys):
    assert cli.main(["--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and data.KAGGLE_URL in captured.err


# -- tables -------------------------------------------------------------------------------------


def test_read_manifest_errors(tmp_path):
    with pytest.raises(data.DatasetError, match="manifest not found"):
        data.read_manifest(tmp_path / "missing.csv")
    (tmp_path / "partial.csv").write_text("path,label\nx.png,1\n")
    with pytest.raises(data.DatasetError, match="no column class"):
        data.read_manifest(tmp_path / "partial.csv")


def test_functions_name_missing_columns():
    table = pd.DataFrame({"path": ["a.png"]})
    with pytest.raises(data.DatasetError, match="no column label"):
        data.labels(table)
    with pytest.raises(data.DatasetError, match="no column sha256, phash"):
        data.add_duplicate_groups(table)
    with pytest.raises(data.DatasetError, match="no column label"):
        data.sample_balanced(table, 1)


def _synthetic_manifest(groups_by_class):
    """Rows without images: enough for sampling and splitting. groups_by_class: label -> sizes."""
    rows, group = [], 0
    for label, sizes in groups_by_class.items():
        cls = "COVID" if label else "Normal"
        for size in sizes:
            for _ in range(size):
                n = len(rows)
                rows.append({"path": f"/d/{cls}-{n}.png", "class": cls, "label": label,
                             "sha256": f"{n:064x}", "duplicate_group": group})
            group += 1
    return pd.DataFrame(rows)


def test_split_keeps_groups_whole_and_counts_exact():
    manifest = _synthetic_manifest({0: [4, 3, 2, 2] + [1] * 89, 1: [5, 2] + [1] * 93})
    split = data.split_dataset(manifest, seed=0)
    assert (split.groupby("duplicate_group")["split"].nunique() == 1).all()
    counts = data.split_summary(split).loc[["Normal", "COVID"], ["train", "val", "test"]]
    assert counts.to_numpy().tolist() == [[80, 10, 10], [80, 10, 10]]
    assert split.attrs["split_exact"] and split.attrs["images_kept_together"] == 18
    assert split.attrs["groups_kept_together"] == 6


def test_split_with_a_group_too_large_for_any_place_left_overshoots_and_says_so():
    manifest = _synthetic_manifest({0: [12] + [1] * 8, 1: [1] * 20})
    split = data.split_dataset(manifest, fractions=(0.5, 0.25, 0.25), seed=0)
    assert (split.groupby("duplicate_group")["split"].nunique() == 1).all()
    assert not split.attrs["split_exact"]


def test_split_rejects_bad_fractions():
    manifest = _synthetic_manifest({0: [1] * 4, 1: [1] * 4})
    with pytest.raises(ValueError, match="adding up to 1"):
        data.split_dataset(manifest, fractions=(0.8, 0.1))
    with pytest.raises(ValueError, match="adding up to 1"):
        data.split_dataset(manifest, fractions=(0.8, 0.3, -0.1))
