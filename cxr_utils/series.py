"""The notebook series as facts: its notebooks in reading order, the profiles it runs under (one
frozen ``Profile`` each) and the parameters a profile gives, and the hash of a notebook's code that
ties a run to the sources. ``cxr_utils.run`` executes the series with them; ``cxr_utils.publish``
checks a published run against them; the studies take a profile's parameters from here. No heavy
import.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from pathlib import Path

from cxr_utils import config
from cxr_utils.config import PROTOCOL
from cxr_utils.paths import REPO_ROOT


def series() -> tuple[str, ...]:
    """The notebooks in reading order: data, preprocessing, one chapter per model of
    ``config.REGISTRY``, evaluation, comparison, then the further chapters (shortcuts)."""
    return ("01_data_collection", "02_preprocessing", *(spec.chapter for spec in config.REGISTRY.values()),
            "06_evaluation", "07_comparison", "08_shortcuts")


@dataclasses.dataclass(frozen=True)
class Profile:
    """What a profile sets: the knobs of the series that every notebook's parameters cell may
    declare (each notebook receives the ones it declares). The paper's protocol
    (``config.PROTOCOL``) unless a field says otherwise; checked when made (``config.check_parameters``)."""

    n_per_class: int = PROTOCOL.n_per_class
    epochs: int = PROTOCOL.epochs
    batch_size: int = PROTOCOL.batch_size
    seed: int = PROTOCOL.seed
    weights: str | None = PROTOCOL.weights
    image_size: int = PROTOCOL.image_size
    # Chapter 6's extended test set. None: all images outside the sample, minus copies of its
    # training and validation images; a number: a balanced subset of them.
    extended_test_size: int | None = None

    def __post_init__(self):
        config.check_parameters(self.parameters())

    def parameters(self) -> dict:
        return dataclasses.asdict(self)


PROFILES = {
    # The paper's protocol: 500 + 500 images, 80/10/10, 15 epochs, batch 32, ResNet50 with
    # ImageNet weights.
    "paper": Profile(),
    # What CI runs: the same code on a small real subset, from scratch, in minutes on 2 CPU cores.
    # Its numbers show that the pipeline works, not how good the models are.
    "sample": Profile(n_per_class=60, epochs=2, batch_size=16, weights=None, extended_test_size=60),
}


class SeriesError(RuntimeError):
    """A notebook of the series failed; the message names the notebook and the cell."""


def parse_value(text: str):
    """``-p name=value`` values: Python literals (None, 15, 0.5, 'x'), anything else a string."""
    if text.lower() == "none":
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def code_hash(notebook_path: Path) -> str:
    """SHA-256 of a notebook's code cells (sources only), to tell when results and code drift."""
    notebook = json.loads(Path(notebook_path).read_text())
    digest = hashlib.sha256()
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = cell["source"]
            digest.update(("".join(source) if isinstance(source, list) else source).encode())
            digest.update(b"\0")
    return digest.hexdigest()


def profile_parameters(profile: str, data_dir=None, results_dir=None, overrides=None) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    parameters = PROFILES[profile].parameters()
    parameters["data_dir"] = None if data_dir is None else str(Path(data_dir).resolve())
    parameters["results_dir"] = str(Path(results_dir or REPO_ROOT / "results" / profile).resolve())
    parameters["cache_dir"] = str((REPO_ROOT / ".cache" / "images").resolve())
    parameters["profile"] = profile
    unknown = set(overrides or {}) - set(parameters)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(parameters))}"
        )
    parameters.update(overrides or {})
    return config.check_parameters(parameters)
