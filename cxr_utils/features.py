"""One backbone pass for both ResNet chapters: a frozen ResNet50's feature maps, cached on disk.

With pretrained weights the backbone is frozen, so ResNet50 (chapter 3), the hybrid (chapter 5)
and the extended test set (chapter 6) all need the same thing from each image: its 7x7x2048
feature map (ResNet50's head averages it; the hybrid's reads it as 49 steps). It is computed
once per image and stored under a key of the weights, the input scaling, the image size, the
preprocessing version and the dtype policy, one file per image named by its SHA-256, so any set
of images reuses what an earlier chapter computed. Chunks of images stream through the
backbone, so memory stays bounded. From scratch nothing is cached: those weights train.
Explained in notebooks/05_resnet50_lstm, which reuses chapter 3's pass.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import config, data
from cxr_utils.atomic import atomic_write
from cxr_utils.data.decode import PREPROCESSING_VERSION
from cxr_utils.data.loading import save_npy
from cxr_utils.inference import predict_in_batches

FEATURES_FOLDER = "features"
CHUNK_IMAGES = 256  # images decoded and passed through the backbone at a time


def backbone_identity(weights, input_scaling: str = "paper", blank=None) -> str | None:
    """What the frozen backbone computes, as text for a cache key; None when it cannot be
    cached (from scratch: random weights that differ with the seed). ``blank``: the
    ``shortcuts.LungBox`` blanked in every image first, if any."""
    kind = config.weights_kind(weights)
    if kind == "scratch":
        return None
    source = "imagenet"
    if kind == "file":
        source = f"file:{hashlib.sha256(Path(weights).expanduser().read_bytes()).hexdigest()[:16]}"
    identity = f"{source}|scaling:{input_scaling}"
    return identity if blank is None else f"{identity}|{blank.key}"


def _cache_folder(cache_dir, identity: str, image_size: int) -> Path:
    import keras
    # The dtype policy too: features computed under mixed precision are not float32's.
    payload = json.dumps({"backbone": identity, "size": int(image_size), "preprocessing": PREPROCESSING_VERSION,
                          "dtype_policy": keras.mixed_precision.global_policy().name})
    return Path(cache_dir) / FEATURES_FOLDER / hashlib.sha256(payload.encode()).hexdigest()[:16]


def iter_features(backbone, rows: pd.DataFrame, identity: str | None, image_size: int, cache_dir=None,
                  batch_size: int = config.PROTOCOL.batch_size, progress: bool = False, blank=None):
    """Yield (row positions, feature maps) for ``rows`` a chunk at a time, computing only what
    the cache lacks (``identity`` None or no ``cache_dir``: nothing is cached). ``blank``: a
    ``shortcuts.LungBox`` blanked in every image before the backbone (``identity`` must say so)."""
    folder = None if identity is None or cache_dir is None else _cache_folder(cache_dir, identity, image_size)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        if "sha256" not in rows:
            raise ValueError("rows need a sha256 column to cache features; use a manifest from cxr_utils.data")
    names = rows["sha256"].astype(str).tolist() if "sha256" in rows else None
    chunks = range(0, len(rows), CHUNK_IMAGES)
    if progress:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc="ResNet50 features", unit="chunk")
    for start in chunks:
        positions = np.arange(start, min(start + CHUNK_IMAGES, len(rows)))
        files = [folder / f"{names[k]}.npy" for k in positions] if folder is not None else None
        missing = positions if files is None else np.array([k for k, f in zip(positions, files) if not f.is_file()], int)
        computed = {}
        if len(missing):
            images = data.load_images(rows.iloc[missing], image_size=image_size, progress=False)
            if blank is not None:
                images = blank.blank(images)
            maps = predict_in_batches(backbone, images, batch_size)
            computed = dict(zip(missing.tolist(), maps))
            if folder is not None:
                for k, feature_map in computed.items():
                    atomic_write(folder / f"{names[k]}.npy", lambda path, m=feature_map: save_npy(path, m))
        yield positions, np.stack([computed[k] if k in computed else np.load(files[k - start])
                                   for k in positions.tolist()])


def backbone_features(backbone, rows: pd.DataFrame, identity: str | None, image_size: int, cache_dir=None,
                      batch_size: int = config.PROTOCOL.batch_size, progress: bool = False,
                      blank=None) -> np.ndarray:
    """All feature maps of ``rows`` in row order, as one float32 array (N, 7, 7, 2048)."""
    features = np.empty((len(rows), *backbone.output_shape[1:]), dtype=np.float32)
    for positions, maps in iter_features(backbone, rows, identity, image_size, cache_dir, batch_size, progress,
                                         blank):
        features[positions] = maps
    return features
