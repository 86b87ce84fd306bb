"""Decoding (paper section 2.2): an image file becomes the grey image and then the model input.

Files are decoded strictly (a truncated or non-image file raises ``DatasetError`` naming it, even
where Pillow was told to accept truncated files) and turned upright by their EXIF Orientation tag;
every Pillow mode becomes 8-bit grey, which is resized (bilinear), scaled by 1/255 and repeated
into three channels. Explained in notebooks/02_preprocessing, which shows one image step by step.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, ImageOps

from cxr_utils.config import PROTOCOL
from cxr_utils.data.errors import DatasetError

IMAGE_SIZE = PROTOCOL.image_size

# Keys the image cache (data.loading) and the feature cache (cxr_utils.features): bump it when
# decoding or resizing changes. Version 2 turns EXIF-oriented images upright; the database's PNGs
# carry no EXIF and decode as under version 1, but a version-1 cache of someone's oriented JPEGs
# holds them sideways, and a cache must never return what the current code would not compute.
PREPROCESSING_VERSION = 2

# EXIF tag 274. Values 2-8 say how the stored pixels must be flipped or turned to be shown upright
# (6: 90 degrees clockwise, 3: 180, 8: 90 counter-clockwise); 1 or no tag: stored upright.
_ORIENTATION = 0x0112
_TURNED = range(2, 9)


@contextlib.contextmanager
def strict_decoding():
    """Within this block Pillow refuses truncated files (``ImageFile.LOAD_TRUNCATED_IMAGES`` off)."""
    # Pillow can be told globally to accept truncated files (filling the rest with grey);
    # a truncated X-ray must be reported, not silently padded.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _problem_reason(data: bytes, error: BaseException) -> str:
    """Why a file's bytes ``data`` could not be decoded, in words, from the ``error`` Pillow raised."""
    if not data:
        return "empty file (0 bytes)"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image Pillow can read (e.g. a text or HTML page saved under an image name)"
    message = str(error) or type(error).__name__
    if "truncated" in message.lower() or isinstance(error, EOFError):
        return f"truncated image, the file ends early ({message})"
    return f"corrupt or unsupported image ({type(error).__name__}: {message})"


FILE_FIX = "Re-download the dataset or delete this file, then build the manifest again"

# Errors Pillow raises for broken files; anything else is a bug and should propagate.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _file_error(path: Path, reason: str, fix: str | None = FILE_FIX) -> DatasetError:
    return DatasetError(f"{path}: {reason}" + (f". {fix}" if fix else ""), path=path, reason=reason)


def unreadable_file(path, error: OSError) -> DatasetError:
    """The ``DatasetError`` for a file the system cannot read (gone, no permission), naming it and the fix."""
    return _file_error(path, f"cannot be read ({error.strerror or error})")


def open_fully(path: Path) -> tuple[bytes, Image.Image]:
    """A file's bytes and its image, every pixel decoded strictly; ``DatasetError`` naming the file if not."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise unreadable_file(path, error) from error
    if not data:
        raise _file_error(path, "empty file (0 bytes)")
    try:
        with strict_decoding():
            image = Image.open(io.BytesIO(data))
            image.load()  # decodes every pixel, so truncated files fail here and not later
    except _DECODE_ERRORS as error:
        raise _file_error(path, _problem_reason(data, error)) from error
    return data, image


def _upright(image: Image.Image) -> Image.Image:
    # Without a tag (or with 1) the very same object comes back, not copied. TIFFs arrive upright
    # already: Pillow applies their orientation on opening and drops the tag.
    return ImageOps.exif_transpose(image) if image.getexif().get(_ORIENTATION, 1) in _TURNED else image


def to_grayscale(image: Image.Image, path: Path | str = "<image>") -> np.ndarray:
    """``image`` upright (EXIF orientation) as 8-bit grey, uint8 (H, W); ``path`` names it in errors."""
    # Every grey image of the package comes from here (load_images, preprocessing_steps, predict,
    # the manifest's perceptual hash), so every one is upright.
    try:
        image = _upright(image)
    except _DECODE_ERRORS as error:  # e.g. a PNG whose eXIf chunk is not EXIF: Pillow raises SyntaxError
        raise _file_error(path, f"corrupt EXIF data ({type(error).__name__}: {error})") from error
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow's convert("L") clips every value above 255 to white; 0-65535 / 257 -> 0-255 instead,
        # the same scale for every image, so that intensities keep their meaning across files.
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise _file_error(path, f"{mode} image with values outside 0-65535 ({values.min()}..{values.max()}); "
                                    "save it as an 8- or 16-bit PNG.", fix=None)
        return np.rint(values / 257.0).astype(np.uint8)
    if mode == "F":
        raise _file_error(path, "floating-point image (mode F) has no defined grey scale; save it as an "
                                "8- or 16-bit PNG.", fix=None)
    try:
        if mode == "LA":
            # Alpha dropped, not composited: X-rays carry no transparency; compositing invents intensities.
            image = image.getchannel("L")
        elif mode in ("RGBA", "PA"):
            image = image.convert("RGB")  # alpha dropped, as above
        if image.mode != "L":
            # RGB (identical channels in this database), palette (P), 1-bit, CMYK, YCbCr:
            # Pillow's ITU-R 601 luma, which returns the grey value when the channels are equal.
            image = image.convert("L")
    except (ValueError, OSError) as error:
        raise _file_error(path, f"image mode {mode} cannot be converted to grey ({error}); save it as an "
                                "8-bit grey or RGB PNG.", fix=None) from error
    return np.asarray(image, dtype=np.uint8).copy()


def decode_grayscale(path: str | os.PathLike) -> np.ndarray:
    """An image file as an upright 8-bit grey image: uint8 array of shape (H, W).

    Every Pillow mode: RGB (luma); RGBA/LA (alpha dropped, not composited); P; 1 (0/255); I;16 and
    I (0-65535 scaled to 0-255, where Pillow's conversion would clip). Broken files raise
    DatasetError naming the file. Explained in notebooks/01_data_collection, whose image grid
    (plots.plot_image_grid) reads the X-rays with it; load_images decodes every model input with it.
    """
    path = Path(path)
    return to_grayscale(open_fully(path)[1], path)


def resize_gray(gray: np.ndarray, image_size: int) -> np.ndarray:
    """Grey uint8 (H, W) resized (bilinear) to uint8 (image_size, image_size); the same array when it has that size."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 grey image, got {gray.dtype} array of shape {gray.shape}")
    if gray.shape == (image_size, image_size):
        return gray
    # Bilinear, the default of tf.image.resize (the paper used TensorFlow). Pillow widens the
    # filter when shrinking (antialiasing), so 299 -> 224 does not alias.
    return np.asarray(Image.fromarray(gray).resize((image_size, image_size), Image.Resampling.BILINEAR))


def to_model_input(resized: np.ndarray) -> np.ndarray:
    """Resized grey uint8 -> float32 in [0, 1] with the grey channel repeated three times (H, W, 3)."""
    scaled = resized.astype(np.float32) / np.float32(255.0)
    return np.repeat(scaled[..., None], 3, axis=-1)


def preprocess(gray: np.ndarray, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Grey uint8 (H, W) -> float32 (image_size, image_size, 3) in [0, 1], as in paper section 2.2:
    resize (bilinear), divide by 255, repeat the grey channel three times (ResNet50 expects RGB).

    Resizing the uint8 image before scaling differs from the paper's order (scale, then resize) by
    at most half a grey level, and lets the cache store uint8.
    """
    return to_model_input(resize_gray(np.asarray(gray), image_size))


def preprocessing_steps(path: str | os.PathLike, image_size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
    """Every intermediate array of section 2.2 for one file: raw (the pixels as stored), grayscale
    (8-bit, upright), resized, scaled (float32 / 255) and three_channel.
    Explained in notebooks/02_preprocessing.
    """
    path = Path(path)
    _, image = open_fully(path)
    gray = to_grayscale(image, path)
    resized = resize_gray(gray, image_size)
    three_channel = to_model_input(resized)
    return {
        "raw": np.asarray(image),
        "grayscale": gray,
        "resized": resized,
        "scaled": three_channel[..., 0].copy(),
        "three_channel": three_channel,
    }


def steps_table(steps: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per step of ``preprocessing_steps``: shape, dtype and value range of its array.
    Explained in notebooks/02_preprocessing."""
    return pd.DataFrame.from_dict(
        {name: {"shape": "x".join(map(str, array.shape)), "dtype": str(array.dtype),
                "min": float(array.min()), "max": float(array.max())} for name, array in steps.items()},
        orient="index",
    ).rename_axis("step")
