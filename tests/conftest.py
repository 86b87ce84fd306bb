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


@pytest.fixture(scope="session")
def real_subset(real_data, tmp_path_factory):
    """A small copy of the dataset's layout: the first 40 real images of each class (natural
    order), linked from ``real_data`` (no image is copied), so that a chapter that rebuilds the
    manifest on its own does so in a second instead of indexing the whole folder."""
    from cxr_utils import data

    layout = data.find_dataset(real_data)
    root = tmp_path_factory.mktemp("real-subset") / "dataset"
    for name, folder in layout.class_dirs.items():
        target = root / name / data.IMAGES_SUBFOLDER
        target.mkdir(parents=True)
        for image in data.layout._image_files(folder)[:40]:
            (target / image.name).symlink_to(image.resolve())
    return root


@pytest.fixture
def kernel_environment(monkeypatch):
    """What ``run.execute_series`` sets for the papermill kernels it starts: this interpreter
    first on PATH, figures drawn inline. Returns a function executing one notebook of the series
    alone with papermill (its PapermillExecutionError is not translated)."""
    import sys

    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    def execute(name: str, parameters: dict, output: Path) -> Path:
        import papermill

        from cxr_utils import run

        source = run.NOTEBOOKS_DIR / f"{name}.ipynb"
        output.parent.mkdir(parents=True, exist_ok=True)
        papermill.execute_notebook(str(source), str(output), parameters=run._notebook_parameters(source, parameters),
                                   kernel_name="python3", cwd=str(run.NOTEBOOKS_DIR), progress_bar=False)
        return output

    return execute


@pytest.fixture(scope="session")
def imagenet_standin(tmp_path_factory):
    """A stand-in for Keras' ImageNet ResNet50 no-top weights: a seeded ResNet50 with
    ``weights=None``, saved in the format and under the name Keras downloads
    (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``, a Keras 2 HDF5 weights file that
    ``keras.applications.ResNet50`` reads with ``load_weights``). Not ImageNet: its numbers mean
    nothing, but every code path that loads, freezes and uses the real file runs on it."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(include_top=False, weights=None)
    path = tmp_path_factory.mktemp("imagenet-standin") / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return path
