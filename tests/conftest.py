"""Shared fixtures: the real chest X-rays of ../shared/data, read in place (never copied)."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "covid19-radiography-224"

os.environ.setdefault("MPLBACKEND", "Agg")
# Tests must never reach the network: Kaggle downloads are exercised offline only.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def real_data_dir() -> Path:
    return Path(os.environ.get("CXR_DATA_DIR", DEFAULT_DATA_DIR))


@pytest.fixture(scope="session")
def real_data():
    """Folder of the real Radiography Database images; skips (or fails under CI) when absent."""
    path = real_data_dir()
    if not path.is_dir():
        message = (
            f"real images not found at {path}; set CXR_DATA_DIR to the folder holding "
            "COVID/ and Normal/"
        )
        if os.environ.get("CXR_REQUIRE_DATA") == "1":
            pytest.fail(message + " (CXR_REQUIRE_DATA=1 makes this a failure)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def real_manifest(real_data):
    """Manifest of the real images with duplicate groups, built once per test session."""
    from cxr_utils import data

    return data.add_duplicate_groups(data.build_manifest(real_data, progress=False))
