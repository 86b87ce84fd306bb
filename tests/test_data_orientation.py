"""EXIF orientation: a file whose Orientation tag says it is stored rotated is decoded upright,
everywhere the package decodes images, and files without the tag decode exactly as before.

The rotated files are made in tmp_path from real images of ../shared/data: the upright grey image,
turned the way a camera or scanner would have stored it, saved as a JPEG (or a lossless PNG or
TIFF) with the Orientation tag that tells a viewer how to turn it back.
"""

import numpy as np
import pytest
from PIL import Image

from cxr_utils import data
from cxr_utils.data import decode

ORIENTATION = 0x0112
# Orientation tag -> how the upright image was turned to get the stored pixels (the inverse of
# what a viewer, and Pillow's ImageOps.exif_transpose, applies to show it).
STORED_AS = {
    6: Image.Transpose.ROTATE_90,   # shown after turning 90 degrees clockwise
    3: Image.Transpose.ROTATE_180,
    8: Image.Transpose.ROTATE_270,  # shown after turning 90 degrees counter-clockwise
    2: Image.Transpose.FLIP_LEFT_RIGHT,
}
JPEG_TOLERANCE = 3.0  # mean absolute grey-level difference of a quality-95 JPEG round trip


def _upright(real_data) -> np.ndarray:
    """A real X-ray's grey pixels, cropped to a non-square shape so that a 90-degree turn shows
    in the array's shape, not only in its values."""
    path = sorted((real_data / "COVID" / "images").iterdir())[0]
    return data.decode_grayscale(path)[:, :176].copy()  # (224, 176): taller than wide


def _stored(upright: np.ndarray, orientation: int, path, **save) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(upright).transpose(STORED_AS[orientation]).save(path, exif=exif.tobytes(), **save)


def _mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("orientation", [6, 3, 8, 2])
def test_an_exif_rotated_jpeg_is_decoded_upright(real_data, tmp_path, orientation):
    upright = _upright(real_data)
    path = tmp_path / f"orientation-{orientation}.jpg"
    _stored(upright, orientation, path, quality=95)
    decoded = data.decode_grayscale(path)
    assert decoded.shape == upright.shape
    assert _mean_difference(decoded, upright) < JPEG_TOLERANCE
    # Read as stored, the pixels are far from the upright image: the test would see a miss.
    with Image.open(path) as stored:
        as_stored = np.asarray(stored.convert("L"))
    assert as_stored.shape != upright.shape or _mean_difference(as_stored, upright) > 5 * JPEG_TOLERANCE


@pytest.mark.parametrize("orientation", [6, 3, 8])
def test_every_decoding_path_reads_the_rotated_file_upright(real_data, tmp_path, orientation):
    from cxr_utils import predict

    upright = _upright(real_data)
    path = tmp_path / f"orientation-{orientation}.jpg"
    _stored(upright, orientation, path, quality=95)
    gray = data.decode_grayscale(path)
    expected = data.preprocess(gray, 64)
    # Training's loader (with and without its cache), the notebook's steps and predict's decoder
    # all give the model the same upright input.
    np.testing.assert_array_equal(data.load_images([path], image_size=64, progress=False)[0], expected)
    np.testing.assert_array_equal(
        data.load_images([path], image_size=64, cache_dir=tmp_path / "cache", progress=False)[0], expected)
    steps = data.preprocessing_steps(path, image_size=64)
    np.testing.assert_array_equal(steps["grayscale"], gray)
    np.testing.assert_array_equal(steps["three_channel"], expected)
    array, reason = predict._decode(path, 64)
    assert reason is None
    np.testing.assert_array_equal(array, expected)


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_lossless_rotated_files_are_decoded_to_the_exact_upright_pixels(real_data, tmp_path, suffix):
    # A PNG with an eXIf chunk is turned by the decoder; a TIFF is turned by Pillow when it opens
    # it (and the tag dropped): either way once, never twice.
    upright = _upright(real_data)
    path = tmp_path / f"orientation-6{suffix}"
    if suffix == ".tiff":
        Image.fromarray(upright).transpose(STORED_AS[6]).save(path, tiffinfo={ORIENTATION: 6})
    else:
        _stored(upright, 6, path)
    np.testing.assert_array_equal(data.decode_grayscale(path), upright)


def test_files_without_an_orientation_decode_exactly_as_stored(real_data, tmp_path):
    # The dataset's PNGs carry no EXIF: their pixels are those Pillow stores, untouched and not
    # copied, so the images the existing runs trained on are unchanged.
    for path in sorted((real_data / "Normal" / "images").iterdir())[:5]:
        with Image.open(path) as image:
            image.load()
            assert decode._upright(image) is image
            expected = np.asarray(image.convert("L"))
        np.testing.assert_array_equal(data.decode_grayscale(path), expected)
    # Orientation 1 means "stored upright": nothing to do either.
    upright = _upright(real_data)
    exif = Image.Exif()
    exif[ORIENTATION] = 1
    Image.fromarray(upright).save(tmp_path / "upright.png", exif=exif.tobytes())
    np.testing.assert_array_equal(data.decode_grayscale(tmp_path / "upright.png"), upright)


def test_a_rotated_copy_is_found_as_a_duplicate_of_its_original(real_data, tmp_path):
    # The manifest's perceptual hash is taken of the upright grey image, so a rotated copy of a
    # dataset image (or of a run's training image, in cxr_utils.external) is linked to it.
    sources = sorted((real_data / "COVID" / "images").iterdir())[:2]
    for class_name in ("COVID", "Normal"):
        (tmp_path / "set" / class_name).mkdir(parents=True)
    original = tmp_path / "set" / "COVID" / "COVID-1.png"
    original.write_bytes(sources[0].read_bytes())
    _stored(data.decode_grayscale(sources[0]), 6, tmp_path / "set" / "COVID" / "COVID-2.jpg", quality=95)
    (tmp_path / "set" / "Normal" / "Normal-1.png").write_bytes(sources[1].read_bytes())
    manifest = data.add_duplicate_groups(data.build_manifest(tmp_path / "set", progress=False))
    groups = manifest.set_index(manifest["path"].map(lambda p: p.rsplit("/", 1)[-1]))["duplicate_group"]
    assert groups["COVID-1.png"] == groups["COVID-2.jpg"] != groups["Normal-1.png"]
