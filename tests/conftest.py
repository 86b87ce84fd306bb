"""Shared fixtures: the real chest X-rays of ../shared/data, read in place (never copied)."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "covid19-radiography-224"

os.environ.setdefault("MPLBACKEND", "Agg")
# Tests must never reach the network: Kaggle downloads are exercised offline only.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


# `make test` runs the suite in two pytest-xdist workers (--dist loadgroup): tests that share a
# costly module- or session-scoped fixture go to one worker, so that fixture is built once.
SHARED_FIXTURE_GROUPS = {"sample_run": "series", "tiny_study": "tiny-study", "tiny_run": "blanked",
                         "small_run": "small-run"}


# tryfirst: xdist reads the groups in its own collection hook, so they must be marked before it
# runs (pytest-dev/pytest-xdist#1241); tests/test_environment.py checks that a group shares one fixture.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        group = next((g for name, g in SHARED_FIXTURE_GROUPS.items() if name in item.fixturenames), None)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # xdist hands out the groups first (largest first), then single tests in this order: the slow
        # ones (minutes each) first, so that they do not run last on one worker while the other idles.
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
        for image in data.layout.image_files(folder)[:40]:
            (target / image.name).symlink_to(image.resolve())
    return root


@pytest.fixture
def kernel_environment(monkeypatch):
    """What ``run.execute_series`` sets for the papermill kernels it starts
    (``run.kernel_environment``: this interpreter first on PATH, figures drawn inline). Returns a
    function executing one notebook of the series alone with papermill (its
    PapermillExecutionError is not translated)."""
    from cxr_utils import run

    for name, value in run.kernel_environment().items():
        monkeypatch.setenv(name, value)

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
    from cxr_utils.standin_weights import make_standin

    return make_standin(tmp_path_factory.mktemp("imagenet-standin"))


SMALL_RUN_SIZE = 32  # px: every registry model trains in seconds at this size on a 2-core CPU


def make_small_run(folder: Path, manifest, weights=None, n_per_class: int = 8, seed: int = 3) -> Path:
    """A complete, tiny results folder of real images, laid out as ``python -m cxr_utils.run``
    leaves one (manifest, sample, split, every registry model with its model.keras, evaluation,
    an extended set, run.json), at ``SMALL_RUN_SIZE`` px and one epoch: its numbers mean nothing.
    ``weights``: the ResNet50 models' (a weights file freezes their backbone: minutes faster)."""
    from cxr_utils import config, data, evaluation, extended_set, runtime, training

    folder.mkdir(parents=True, exist_ok=True)
    sample = data.sample_balanced(manifest, n_per_class=n_per_class, seed=seed)
    split = data.split_dataset(sample, seed=seed)
    for name, table in (("manifest", manifest), ("sample", sample), ("split", split)):
        data.save_manifest(table, folder / f"{name}.csv")
    settings = training.TrainingConfig(epochs=1, batch_size=8, seed=seed, progress=False, inference_check_images=0)
    for model_id in config.REGISTRY:
        training.run_experiment(model_id, split, folder, settings, model_options={"weights": weights},
                                image_size=SMALL_RUN_SIZE, cache_dir=folder.parent / "cache")
    evaluation.evaluate_test_set(folder, seed=seed)
    extended_set.evaluate_extended(folder, max_images=12, seed=seed, image_size=SMALL_RUN_SIZE,
                                   cache_dir=folder.parent / "cache")
    parameters = {"n_per_class": n_per_class, "epochs": 1, "batch_size": 8, "seed": seed,
                  "weights": None if weights is None else str(weights),
                  "image_size": SMALL_RUN_SIZE, "extended_test_size": 12, "data_dir": str(manifest.attrs.get("root")),
                  "results_dir": str(folder), "profile": "test"}
    notebooks = {name: {"status": "ok", "wall_time_s": 0.0, "code_sha256": ""} for name in
                 ("01_data_collection", "02_preprocessing", *(s.chapter for s in config.REGISTRY.values()),
                  "06_evaluation", "07_comparison")}
    runtime.write_json(runtime.run_record(parameters, notebooks=notebooks, profile="test"), folder / "run.json")
    return folder


@pytest.fixture(scope="session")
def small_run(real_manifest, imagenet_standin, tmp_path_factory):
    """``make_small_run`` once per session (about a minute), its ResNet50 backbones frozen with the
    ImageNet stand-in's weights (both share one backbone pass, as with real ImageNet weights);
    read-only: tests that write into a run folder take ``small_run_copy``."""
    return make_small_run(tmp_path_factory.mktemp("small-run") / "results", real_manifest, weights=imagenet_standin)


@pytest.fixture
def small_run_copy(small_run, tmp_path):
    """A writable copy of ``small_run``. Its model files are symbolic links to the session's (large,
    and only ever read); every other file is copied, since code that rewrites a results file
    (``evaluation.save`` among others) writes in place, which through a link would change the
    session's run for every later test."""
    import shutil

    def copy_or_link(source, target):
        if str(source).endswith(".keras"):
            os.symlink(source, target)
        else:
            shutil.copy2(source, target)

    return Path(shutil.copytree(small_run, tmp_path / "run", copy_function=copy_or_link))


def make_external_folder(root: Path, manifest, split) -> dict:
    """A labelled folder unlike the dataset's layout (``<root>/hospital-x/covid/`` and ``NORMAL/``,
    no images/ subfolder), built from real images the run never saw, in other formats and sizes:
    a JPEG, a 16-bit PNG, a 512 px PNG, a CMYK JPEG, an EXIF-rotated JPEG, a palette PNG, an RGBA
    PNG and a plain copy; plus one unreadable file (a truncated PNG), a byte-identical copy of a
    training image and a re-encoded (near) copy of another. Returns the folder and what is where."""
    import numpy as np
    from PIL import Image

    unused = manifest[~manifest["duplicate_group"].isin(set(split["duplicate_group"]))]
    covid = unused[unused["label"] == 1]["path"].head(4).tolist()
    normal = unused[unused["label"] == 0]["path"].head(4).tolist()
    train = split[split["split"] == "train"]
    train_covid, train_normal = train[train["label"] == 1]["path"].tolist(), train[train["label"] == 0]["path"].tolist()
    folder = root / "hospital-x"
    covid_dir, normal_dir = folder / "covid", folder / "NORMAL"
    covid_dir.mkdir(parents=True)
    normal_dir.mkdir(parents=True)

    def grey(path):
        return Image.open(path).convert("L")

    grey(covid[0]).convert("RGB").save(covid_dir / "c-jpeg.jpg", quality=92)
    Image.fromarray((np.asarray(grey(covid[1]), dtype=np.uint16) * 257)).save(covid_dir / "c-16bit.png")
    grey(covid[2]).resize((512, 512), Image.Resampling.BICUBIC).save(covid_dir / "c-512.png")
    grey(covid[3]).convert("CMYK").save(covid_dir / "c-cmyk.jpg", quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: stored rotated, to be shown turned 90 degrees clockwise
    grey(normal[0]).transpose(Image.Transpose.ROTATE_90).save(normal_dir / "n-exif.jpg", exif=exif.tobytes())
    grey(normal[1]).convert("P").save(normal_dir / "n-palette.png")
    grey(normal[2]).convert("RGBA").save(normal_dir / "n-rgba.png")
    (normal_dir / "n-copy.png").write_bytes(Path(normal[3]).read_bytes())
    truncated = Path(normal[0]).read_bytes()
    (normal_dir / "n-broken.png").write_bytes(truncated[: len(truncated) // 2])
    (covid_dir / "dup-exact.png").write_bytes(Path(train_covid[0]).read_bytes())
    grey(train_normal[0]).save(normal_dir / "dup-near.jpg", quality=85)
    readable = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "n-broken.png")
    return {"folder": folder, "readable": readable, "broken": normal_dir / "n-broken.png",
            "duplicates": {"exact": covid_dir / "dup-exact.png", "near": normal_dir / "dup-near.jpg"}}


@pytest.fixture(scope="session")
def external_folder(real_manifest, small_run, tmp_path_factory):
    """``make_external_folder`` for ``small_run``, once per session (read-only)."""
    from cxr_utils import data

    return make_external_folder(tmp_path_factory.mktemp("external"), real_manifest,
                                data.read_manifest(small_run / "split.csv"))
