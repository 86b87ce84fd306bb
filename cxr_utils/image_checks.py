"""Which images a finished run's models are given at all: the size rule of predict and external.

A model scores whatever array it is handed. A 1 x 1 pixel PNG, resized to 224 px, becomes a flat
grey square and came out as P(COVID) = 0.500, "Normal", as confidently as a chest X-ray gets its
score. ``python -m cxr_utils.predict`` and ``python -m cxr_utils.external`` therefore check each
image's size as stored, before it is resized to the model's input, and refuse (name, give the
reason, leave out of every metric) an image that breaks the rule below. ``size_problem`` is the
rule, stated once: predict calls it on each decoded image, external on the sizes of its
manifest (``refuse_by_size``), and the README states it in words (``RULE``).
"""

from __future__ import annotations

import numpy as np
from cxr_utils.data import require_columns

# Shortest side, in pixels. The dataset's images are 224 x 224 (the copy the tests use) or
# 299 x 299 (Kaggle's); the models take 224 px. Below 64 px over 90% of the model's input pixels
# are interpolated, not measured (224 / 64 = 3.5 times per side), and the lung markings the
# models are meant to read are gone: such a file is an icon, not a radiograph. A real X-ray,
# even a downsized copy, lies far above 64 px and is never refused.
MIN_SIDE = 64

# Long side / short side. Chest films are near square (14 x 17 inch cassettes: 1.21; the
# dataset's images: 1.0) and the models see a square; beyond 2:1 the image is squeezed to less
# than half its height or width on the way in, and what it shows is a strip, a crop or a screen
# capture, not a whole chest.
MAX_ASPECT = 2.0

RULE = f"at least {MIN_SIDE} px on each side and at most {MAX_ASPECT:g}:1, long side to short side"


def size_problem(width: int, height: int) -> str | None:
    """Why an image of ``width`` x ``height`` pixels (as stored, before any resizing) is not
    scored, naming its size and the rule; None when it may be scored."""
    width, height = int(width), int(height)
    size = f"{width} x {height} px"
    if min(width, height) < MIN_SIDE:
        return f"{size}, too small to score (images must be {RULE})"
    if max(width, height) > MAX_ASPECT * min(width, height):
        ratio = max(width, height) / min(width, height)
        return f"{size}, {ratio:.2f}:1 is too elongated for a chest X-ray (images must be {RULE})"
    return None


def refuse_by_size(manifest):
    """A manifest (``cxr_utils.data.build_manifest``: its width and height are each file's size as
    stored) split into the rows ``size_problem`` admits and those it refuses; ``refused`` adds
    ``reason`` (the size and the rule). The rows admitted keep the manifest's attrs."""

    require_columns(manifest, ["path", "width", "height"])
    reasons = [size_problem(width, height) for width, height in zip(manifest["width"], manifest["height"])]
    refused_rows = np.array([reason is not None for reason in reasons], dtype=bool)
    kept = manifest.loc[~refused_rows].reset_index(drop=True)
    refused = manifest.loc[refused_rows].reset_index(drop=True).assign(reason=[r for r in reasons if r])
    kept.attrs, refused.attrs = dict(manifest.attrs), {}
    return kept, refused
