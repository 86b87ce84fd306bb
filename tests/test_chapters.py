"""Each chapter runs alone on a fresh machine: chapters 1-5 rebuild what the chapters before them
would have written, chapters 6 to 8 stop with one sentence naming the chapters to run, and a
results folder holding another run's sample or split is refused, never mixed (cxr_utils.chapters)."""

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from cxr_utils import chapters, config, data, paths, publish, run

TINY = {"n_per_class": 10, "epochs": 1, "batch_size": 8, "image_size": 32, "weights": None,
        "extended_test_size": 10}


def _parameters(results: Path, data_dir, tmp_path: Path, **overrides) -> dict:
    return run.profile_parameters("sample", data_dir=data_dir, results_dir=results,
                                  overrides={**TINY, "cache_dir": str(tmp_path / "cache"), **overrides})


def _expected_split(data_dir, n_per_class: int, seed: int) -> pd.DataFrame:
    manifest = data.add_duplicate_groups(data.build_manifest(data_dir, progress=False))
    return data.split_dataset(data.sample_balanced(manifest, n_per_class=n_per_class, seed=seed), seed=seed)


# -- the launch buttons open the source notebooks ------------------------------------------------


def test_launch_buttons_open_the_source_notebooks(book_copy):
    import re

    import yaml

    settings = yaml.safe_load((paths.REPO_ROOT / "_config.yml").read_text())
    repository = settings["repository"]["url"].removeprefix("https://github.com/")
    colab = settings["launch_buttons"]["colab_url"].rstrip("/")
    blob = f"{colab}/github/{repository}/blob/{settings['repository']['branch']}"
    html = publish.build_book(book_copy())
    for name in run.series():
        page = (html / "book" / "executed" / f"{name}.html").read_text()
        links = re.findall(r'href="(https://colab\.research\.google\.com/[^"]*)"', page)
        assert links == [f"{blob}/notebooks/{name}.ipynb"], (name, links)
        assert "book/executed" not in " ".join(re.findall(r'href="(https?://[^"]*)"', page))
        # The page still shows the committed run's outputs: its settings line and its figures.
        assert "Run settings:" in page
    for page in ("intro", "reproducibility"):  # prose pages get no launch button; text may link the run-all notebook
        text = (html / "book" / f"{page}.html").read_text()
        links = re.findall(r'href="(https://colab\.research\.google\.com/[^"]*)"', text)
        assert all(link == f"{blob}/notebooks/{run.RUN_ALL}.ipynb" for link in links), (page, links)


# -- each chapter alone, from an empty results_dir, through papermill -----------------------------

WRITES = {
    "01_data_collection": ["manifest.csv", "sample.csv", "figures/image_grid.png"],
    "02_preprocessing": ["manifest.csv", "sample.csv", "split.csv", "figures/preprocessing_steps.png"],
    **{spec.chapter: ["manifest.csv", "sample.csv", "split.csv",
                      *(f"{spec.id}/{name}" for name in ("history.csv", "predictions.csv", "metrics.json",
                                                         "run.json", "model.keras"))]
       for spec in config.REGISTRY.values()},
}


@pytest.mark.slow
@pytest.mark.parametrize("chapter", list(WRITES))
def test_a_chapter_alone_rebuilds_its_inputs(chapter, real_subset, kernel_environment, tmp_path, request):
    results = tmp_path / "results"
    overrides = {}
    if any(spec.chapter == chapter and spec.has_backbone for spec in config.REGISTRY.values()):
        # A local weights file (tests/conftest.py's stand-in for the ImageNet file): the frozen
        # backbone's fast path, minutes less than training ResNet50 from scratch on 2 cores.
        overrides["weights"] = str(request.getfixturevalue("imagenet_standin"))
    parameters = _parameters(results, real_subset, tmp_path, **overrides)
    start = time.perf_counter()
    executed = kernel_environment(chapter, parameters, tmp_path / "executed" / f"{chapter}.ipynb")
    print(f"{chapter} alone: {time.perf_counter() - start:.1f} s")

    missing = [name for name in WRITES[chapter] if not (results / name).is_file()]
    assert not missing, missing
    seed, n_per_class = parameters["seed"], parameters["n_per_class"]
    sample = data.read_manifest(results / "sample.csv")
    assert sample["class"].value_counts().to_dict() == {"COVID": n_per_class, "Normal": n_per_class}
    if (results / "split.csv").is_file():
        split, expected = data.read_manifest(results / "split.csv"), _expected_split(real_subset, n_per_class, seed)
        assert split[["path", "label", "split"]].equals(expected[["path", "label", "split"]])
    if chapter != "01_data_collection":
        outputs = "".join("".join(o.get("text", "")) for c in json.loads(executed.read_text())["cells"]
                          for o in c.get("outputs", []))
        assert "not found in" in outputs and "rebuilding it" in outputs  # says what it rebuilt
        # What the chapter rebuilt carries the settings it was made with.
        assert chapters.recorded_settings(results / "sample.csv") == {"n_per_class": n_per_class, "seed": seed}


@pytest.mark.slow  # each starts a kernel that imports TensorFlow
@pytest.mark.parametrize("chapter, names", [
    ("06_evaluation", [f"notebooks/{spec.chapter}.ipynb" for spec in config.REGISTRY.values()]),
    ("07_comparison", [f"notebooks/{spec.chapter}.ipynb" for spec in config.REGISTRY.values()]
     + ["notebooks/06_evaluation.ipynb"]),
    ("08_shortcuts", [f"notebooks/{spec.chapter}.ipynb" for spec in config.REGISTRY.values()]),
])
def test_chapters_6_to_8_alone_stop_with_one_sentence(chapter, names, kernel_environment, tmp_path):
    from papermill.exceptions import PapermillExecutionError

    results = tmp_path / "results"
    output = tmp_path / "executed" / f"{chapter}.ipynb"
    with pytest.raises(PapermillExecutionError) as error:
        kernel_environment(chapter, _parameters(results, None, tmp_path), output)
    assert error.value.ename == "MissingInputs"
    message = error.value.evalue
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    for name in names:
        assert name in message
    assert str(results) in message and "results_dir" in message
    # The executed notebook shows the sentence alone: no traceback, no frames of library code.
    errors = [o for c in json.loads(output.read_text())["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert len(errors) == 1
    assert errors[0]["traceback"] == [f"MissingInputs: {message}"]


# -- inputs from another run are refused, naming the file, both settings and the fix -------------


@pytest.fixture
def subset_manifest(real_subset):
    return data.add_duplicate_groups(data.build_manifest(real_subset, progress=False))


def test_a_sample_is_recorded_and_one_with_other_settings_refused(real_subset, tmp_path):
    sample = chapters.sample(tmp_path, real_subset, n_per_class=10, seed=42, log=lambda *_: None)
    assert chapters.recorded_settings(tmp_path / "sample.csv") == {"n_per_class": 10, "seed": 42}
    assert (tmp_path / "sample.settings.json").is_file()
    # Asked again with the same settings: read, not rebuilt, and the same.
    again = chapters.sample(tmp_path, real_subset, n_per_class=10, seed=42, log=pytest.fail)
    assert again["path"].equals(sample["path"])
    for other in ({"seed": 7, "n_per_class": 10}, {"seed": 42, "n_per_class": 12}):
        with pytest.raises(chapters.MismatchedInputs) as error:
            chapters.sample(tmp_path, real_subset, **other, log=pytest.fail)
        message = str(error.value)
        assert "sample.csv" in message and str(tmp_path) in message
        assert "n_per_class=10, seed=42" in message  # recorded
        assert f"n_per_class={other['n_per_class']}, seed={other['seed']}" in message  # requested
        assert "new folder" in message and f"delete {tmp_path / 'sample.csv'}" in message  # the fix
        assert isinstance(error.value, chapters.MissingInputs)  # shown without a traceback too


def test_chapter_1s_own_sample_is_checked_by_its_contents(real_subset, subset_manifest, tmp_path):
    # Chapters 1 and 2 write their CSV files themselves (data.save_manifest), without a record.
    data.save_manifest(subset_manifest, tmp_path / "manifest.csv")
    data.save_manifest(data.sample_balanced(subset_manifest, n_per_class=10, seed=1), tmp_path / "sample.csv")
    logged = []
    with pytest.raises(chapters.MismatchedInputs, match=r"another seed .*n_per_class=10, seed=42"):
        chapters.sample(tmp_path, real_subset, n_per_class=10, seed=42, log=logged.append)
    with pytest.raises(chapters.MismatchedInputs, match=r"holds 10 COVID, 10 Normal images.*n_per_class=12"):
        chapters.sample(tmp_path, real_subset, n_per_class=12, seed=1, log=logged.append)
    assert not (tmp_path / "sample.settings.json").exists()
    # The settings that made it pass, and are recorded from then on.
    chapters.sample(tmp_path, real_subset, n_per_class=10, seed=1, log=logged.append)
    assert chapters.recorded_settings(tmp_path / "sample.csv") == {"n_per_class": 10, "seed": 1}
    assert any("recorded" in line for line in logged)
    # Chapter 1 run again with another seed writes a new sample.csv: the old record no longer counts.
    data.save_manifest(data.sample_balanced(subset_manifest, n_per_class=10, seed=2), tmp_path / "sample.csv")
    assert chapters.recorded_settings(tmp_path / "sample.csv") is None
    chapters.sample(tmp_path, real_subset, n_per_class=10, seed=2, log=logged.append)
    with pytest.raises(chapters.MismatchedInputs, match="recorded in sample.settings.json"):
        chapters.sample(tmp_path, real_subset, n_per_class=10, seed=1, log=logged.append)


def test_chapter_2s_own_split_is_checked_and_a_recorded_one_refused(real_subset, subset_manifest, tmp_path):
    data.save_manifest(subset_manifest, tmp_path / "manifest.csv")
    sample = data.sample_balanced(subset_manifest, n_per_class=10, seed=42)
    data.save_manifest(sample, tmp_path / "sample.csv")
    data.save_manifest(data.split_dataset(sample, seed=3), tmp_path / "split.csv")  # split with another seed
    with pytest.raises(chapters.MismatchedInputs) as error:
        chapters.split(tmp_path, real_subset, n_per_class=10, seed=42, log=lambda *_: None)
    message = str(error.value)
    assert "split.csv" in message and "n_per_class=10, seed=42" in message and "model folders" in message
    # As chapter 2 writes it for these settings: accepted, recorded, equal to what they give.
    expected = data.split_dataset(data.sample_balanced(subset_manifest, 10, 42), seed=42)
    data.save_manifest(expected, tmp_path / "split.csv")
    split = chapters.split(tmp_path, real_subset, n_per_class=10, seed=42, log=lambda *_: None)
    assert split[["path", "split"]].equals(expected[["path", "split"]])
    assert chapters.recorded_settings(tmp_path / "split.csv") == {"n_per_class": 10, "seed": 42}
    with pytest.raises(chapters.MismatchedInputs, match=r"n_per_class=10, seed=42 \(recorded in split.settings.json\)"):
        chapters.split(tmp_path, real_subset, n_per_class=10, seed=5, log=pytest.fail)


def test_models_tested_on_another_runs_split_are_refused(subset_manifest, tmp_path):
    split = data.split_dataset(data.sample_balanced(subset_manifest, 10, 42), seed=42)
    data.save_manifest(split, tmp_path / "split.csv")
    test = split[split["split"] == "test"]
    for spec in config.REGISTRY.values():
        (tmp_path / spec.id).mkdir()
        test[["path", "label"]].assign(probability=0.5, predicted=1).to_csv(tmp_path / spec.id / "predictions.csv", index=False)
    chapters.require_trained_models(tmp_path)
    other = data.split_dataset(data.sample_balanced(subset_manifest, 10, 9), seed=9)
    other[other["split"] == "test"][["path", "label"]].assign(probability=0.5, predicted=1).to_csv(
        tmp_path / "lstm" / "predictions.csv", index=False)
    with pytest.raises(chapters.MismatchedInputs, match=r"lstm/predictions.csv .*notebooks/04_lstm.ipynb"):
        chapters.require_trained_models(tmp_path)


def test_chapter_6_fetches_the_dataset_when_the_manifests_images_are_elsewhere(subset_manifest, tmp_path, monkeypatch):
    split = data.split_dataset(data.sample_balanced(subset_manifest, 10, 42), seed=42)
    data.save_manifest(split, tmp_path / "split.csv")
    for spec in config.REGISTRY.values():
        (tmp_path / spec.id).mkdir()
        split[split["split"] == "test"][["path", "label"]].to_csv(tmp_path / spec.id / "predictions.csv", index=False)
    data.save_manifest(subset_manifest, tmp_path / "manifest.csv")
    fetched = []
    monkeypatch.setattr(data, "resolve_dataset", lambda data_dir=None: fetched.append(data_dir))
    chapters.require_trained_models(tmp_path, "/some/data")
    assert fetched == []  # the images are here: nothing to fetch
    elsewhere = subset_manifest.assign(path=["/elsewhere/" + Path(p).name for p in subset_manifest["path"]])
    data.save_manifest(elsewhere, tmp_path / "manifest.csv")
    with pytest.raises(chapters.MissingInputs, match=r"manifest.csv .*/elsewhere/.*extended test set"):
        chapters.require_trained_models(tmp_path, "/some/data")
    assert fetched == ["/some/data"]


def test_a_table_written_on_another_machine_points_at_this_machines_images(real_subset, subset_manifest, tmp_path):
    # A results folder shared through Google Drive: the split lists the images where another
    # machine had the dataset. Read here, its paths are re-anchored at this machine's copy.
    split = data.split_dataset(data.sample_balanced(subset_manifest, 10, 42), seed=42)
    elsewhere = split.assign(path=[p.replace(str(real_subset), "/elsewhere/kagglehub/dataset") for p in split["path"]])
    assert not any(os.path.isfile(p) for p in elsewhere["path"])
    data.save_manifest(elsewhere, tmp_path / "split.csv")
    chapters.record(tmp_path / "split.csv", n_per_class=10, seed=42)
    logged = []
    here = chapters.split(tmp_path, real_subset, n_per_class=10, seed=42, log=logged.append)
    assert here["path"].tolist() == split["path"].tolist()
    assert "are not on this machine" in logged[0]
    # A copy of the dataset that lacks them: named, with the fix.
    empty = tmp_path / "other-copy"
    for name in ("COVID", "Normal"):
        (empty / name / "images").mkdir(parents=True)
        (empty / name / "images" / "x.png").symlink_to(Path(split["path"].iloc[0]))
    with pytest.raises(chapters.MissingInputs, match=r"lacks 20 of them .*data_dir="):
        chapters.split(tmp_path, empty, n_per_class=10, seed=42, log=logged.append)


# -- bad input on Colab -------------------------------------------------------------------------


def test_drive_folder_outside_colab_says_what_to_do_instead(tmp_path):
    with pytest.raises(chapters.MissingInputs) as error:
        chapters.folders(tmp_path / "results", tmp_path / "cache", drive_folder="cxr-run")
    message = str(error.value)
    assert "drive_folder='cxr-run'" in message and "Google Colab" in message
    assert "drive_folder=None" in message and "results_dir" in message
    assert error.value._render_traceback_() == [f"MissingInputs: {message}"]
    assert not (tmp_path / "results").exists()


def _kagglehub_raising(monkeypatch, error):
    kagglehub = pytest.importorskip("kagglehub")
    calls = []

    def dataset_download(handle, *args, **kwargs):
        calls.append(handle)
        raise error

    monkeypatch.setattr(kagglehub, "dataset_download", dataset_download)
    return calls


def _kaggle_401():
    import requests
    from kagglehub.exceptions import KaggleApiHTTPError

    response = requests.Response()
    response.status_code, response.url = 401, data.KAGGLE_URL
    return KaggleApiHTTPError(f"401 Client Error.\n\nYou don't have permission to access resource at URL: "
                              f"{data.KAGGLE_URL}. Please make sure you are authenticated", response=response)


@pytest.mark.parametrize("error", ["unauthenticated", "http-401"])
def test_no_kaggle_credentials_says_how_to_add_them_or_upload_the_data(error, monkeypatch, tmp_path):
    from kagglehub.exceptions import UnauthenticatedError

    raised = UnauthenticatedError() if error == "unauthenticated" else _kaggle_401()
    calls = _kagglehub_raising(monkeypatch, raised)
    with pytest.raises(data.DatasetError) as caught:
        data.download_dataset()
    message = str(caught.value)
    assert calls == [data.KAGGLE_HANDLE] and caught.value.__cause__ is raised
    assert "\n" not in message  # one message, on one line (the command line prints it as one)
    assert type(raised).__name__ in message and "credentials" in message
    for text in ("Colab", "secrets", "KAGGLE_USERNAME", "KAGGLE_KEY", "~/.kaggle/kaggle.json",
                 "upload", "data_dir=", "--data-dir", data.KAGGLE_URL):
        assert text in message, text
    # The same message where a chapter rebuilds its inputs on a fresh machine (data_dir=None).
    with pytest.raises(data.DatasetError, match="KAGGLE_USERNAME"):
        chapters.sample(tmp_path, None, n_per_class=10, seed=42, log=lambda *_: None)


def test_no_network_still_explains_the_hand_download(monkeypatch):
    _kagglehub_raising(monkeypatch, ConnectionError("Failed to resolve 'www.kaggle.com'"))
    with pytest.raises(data.DatasetError) as caught:
        data.download_dataset()
    message = str(caught.value)
    assert "network" in message and data.KAGGLE_URL in message and "KAGGLE_USERNAME" in message
    assert "Kaggle refused" not in message


# -- Google Colab ---------------------------------------------------------------------------------


def test_on_colab_the_default_folders_go_below_content(tmp_path, monkeypatch):
    import sys
    import types

    monkeypatch.setattr(chapters, "COLAB_CONTENT", tmp_path / "content")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # where a notebook runs in a checkout
    results, cache = chapters.folders("../results/paper", "../.cache/images")
    assert results == Path("../results/paper") and cache == Path("../.cache/images")  # not on Colab: as given
    assert (tmp_path / "results" / "paper").is_dir()
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    results, cache = chapters.folders("../results/paper", "../.cache/images")
    assert results == tmp_path / "content" / "results" / "paper" and results.is_dir()
    assert cache == tmp_path / "content" / ".cache" / "images"
    absolute = tmp_path / "elsewhere"
    assert chapters.folders(absolute, absolute / "cache")[0] == absolute  # an absolute folder stays


def test_every_run_this_first_message_names_drive_folder(tmp_path):
    with pytest.raises(chapters.MissingInputs, match="run notebooks/.*first.*same drive_folder"):
        chapters.require_trained_models(tmp_path)
    with pytest.raises(chapters.MissingInputs, match="06_evaluation.*same drive_folder"):
        chapters.require_evaluation(tmp_path)


def test_the_first_cell_warns_in_one_line_without_a_gpu():
    from cxr_utils import runtime

    line = runtime.accelerator_summary()
    assert "\n" not in line
    if not runtime.gpu_names():
        assert "none (CPU only)" in line and "Warning: no GPU" in line and "Change runtime type > GPU" in line
