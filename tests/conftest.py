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


@pytest.fixture
def book_copy(tmp_path):
    """Build-ready copy of the book (configuration and book/) in a temporary folder.

    ``book_copy(with_executed=False)`` leaves out the published run, for a test that
    publishes its own."""
    import shutil

    def copy(with_executed: bool = True) -> Path:
        root = tmp_path / "book-root"
        root.mkdir()
        for name in ("_config.yml", "_toc.yml"):
            shutil.copy2(REPO_ROOT / name, root / name)
        ignore = None if with_executed else shutil.ignore_patterns("executed*")
        shutil.copytree(REPO_ROOT / "book", root / "book", ignore=ignore)
        return root

    return copy


@pytest.fixture
def benchmark_module():
    """Import a script of benchmarks/ (not a package) by name: ``benchmark_module("speed")``."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", REPO_ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
