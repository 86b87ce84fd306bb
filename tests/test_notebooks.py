"""Notebook sources: clean, ordered, and built the way the book expects."""

import json
import os

import pytest

from cxr_utils import run

NOTEBOOKS = [run.NOTEBOOKS_DIR / f"{name}.ipynb" for name in run.series()]


def _cells(path):
    return json.loads(path.read_text())["cells"]


def test_the_series_is_complete_and_ordered():
    on_disk = sorted(p.stem for p in run.NOTEBOOKS_DIR.glob("*.ipynb"))
    assert on_disk == [run.RUN_ALL, *run.series()]


def test_the_run_all_notebook_is_clean_and_takes_the_series_parameters():
    import papermill

    path = run.NOTEBOOKS_DIR / f"{run.RUN_ALL}.ipynb"
    cells = _cells(path)
    assert not [c for c in cells if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    declared = papermill.inspect_notebook(str(path))
    assert {"profile", "data_dir", "results_dir", "weights", "seed", "drive_folder"} <= set(declared)
    assert "run.execute_series" in "".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                                           for c in cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_sources_carry_no_outputs(path):
    dirty = [i for i, c in enumerate(_cells(path)) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing (jupyter nbconvert --clear-output --inplace)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_title_objectives_imports_then_parameters(path):
    cells = _cells(path)
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    assert "Objectives" in "".join(cells[1]["source"]) and "What the paper says" in "".join(cells[1]["source"])
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "google.colab" in "".join(code[0]["source"])  # install on Colab, nothing elsewhere
    assert "import" in "".join(code[1]["source"])
    tagged = [i for i, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert tagged == [2], f"{path.name}: exactly one parameters cell, right after the imports"
    parameters = "".join(code[2]["source"])
    for name in ("results_dir", "seed", "data_dir"):
        assert f"{name} =" in parameters


def test_profiles_set_only_parameters_the_notebooks_declare():
    import papermill

    declared = set()
    for path in NOTEBOOKS:
        declared |= set(papermill.inspect_notebook(str(path)))
    for profile in run.PROFILES:
        parameters = run.profile_parameters(profile, data_dir="/tmp")
        assert set(parameters) <= declared, set(parameters) - declared


def test_unknown_override_is_refused():
    with pytest.raises(ValueError, match="unknown parameter"):
        run.profile_parameters("sample", overrides={"epoch": 3})
    assert run.parse_value("None") is None and run.parse_value("5") == 5 and run.parse_value("imagenet") == "imagenet"


@pytest.mark.parametrize("argv, message", [
    (["-p", "epochs=abc"], "error: epochs must be a positive integer, not 'abc'"),
    (["-p", "n_per_class=-3"], "error: n_per_class must be a positive integer, not -3"),
    (["-p", "seed=1.5"], "error: seed must be an integer of 0 or more, not 1.5"),
    (["-p", "extended_test_size=0"], "error: extended_test_size must be None (all eligible images) or a positive"),
    (["-p", "batch_size=True"], "error: batch_size must be a positive integer, not True"),
    (["-p", "weights=5"], "error: weights must be 'imagenet', None (from scratch) or the path"),
    (["-p", "epochs"], "write NAME=VALUE"),
])
def test_a_wrong_parameter_stops_the_run_with_one_line_naming_it(argv, message, capsys, tmp_path):
    assert run.main(["--profile", "sample", "--results-dir", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) or message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing ran, nothing written


def test_code_hash_changes_with_code_not_with_outputs(tmp_path):
    source = NOTEBOOKS[0]
    notebook = json.loads(source.read_text())
    before = run.code_hash(source)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x"}]
    copy = tmp_path / "with_outputs.ipynb"
    copy.write_text(json.dumps(notebook))
    assert run.code_hash(copy) == before
    next(c for c in notebook["cells"] if c["cell_type"] == "code")["source"] = "print('changed')"
    copy.write_text(json.dumps(notebook))
    assert run.code_hash(copy) != before


def test_a_failing_cell_stops_the_series_naming_notebook_and_cell(tmp_path, monkeypatch):
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell("results_dir = None")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("1 / 0")]
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nbformat.write(notebook, folder / "01_broken.ipynb")
    nbformat.write(notebook, folder / "02_never.ipynb")
    monkeypatch.setattr(run, "NOTEBOOKS_DIR", folder)
    results = tmp_path / "results"
    with pytest.raises(run.SeriesError, match=r"01_broken\.ipynb failed in cell \d+ .*ZeroDivisionError"):
        run.execute_series({"results_dir": str(results)}, notebooks=["01_broken", "02_never"], progress=False, log=lambda _: None)
    record = json.loads((results / "run.json").read_text())
    assert record["notebooks"]["01_broken"]["status"] == "failed"
    assert "02_never" not in record["notebooks"]
    assert (results / "notebooks" / "01_broken.ipynb").is_file()  # the traceback is kept for the reader


def _two_notebooks(tmp_path, monkeypatch):
    import nbformat

    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name in ("01_first", "02_second"):
        notebook = nbformat.v4.new_notebook()
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        parameters = nbformat.v4.new_code_cell("results_dir = None\nepochs = 1")
        parameters.metadata["tags"] = ["parameters"]
        notebook.cells = [parameters, nbformat.v4.new_code_cell(f"print({name!r})")]
        nbformat.write(notebook, folder / f"{name}.ipynb")
    monkeypatch.setattr(run, "NOTEBOOKS_DIR", folder)
    monkeypatch.setattr(run, "series", lambda: ("01_first", "02_second"))


@pytest.mark.slow  # starts two kernels
def test_running_only_some_notebooks_continues_the_runs_record(tmp_path, monkeypatch):
    _two_notebooks(tmp_path, monkeypatch)
    results = tmp_path / "results"
    parameters = {"results_dir": str(results), "epochs": 1, "cache_dir": "here"}
    run.execute_series(parameters, notebooks=["01_first"], progress=False, log=lambda _: None)
    first = json.loads((results / "run.json").read_text())
    # Another checkout's cache folder is a place, not a setting: the run goes on.
    run.execute_series({**parameters, "cache_dir": "there"}, notebooks=["02_second"], progress=False,
                       log=lambda _: None)
    record = json.loads((results / "run.json").read_text())
    assert [record["notebooks"][n]["status"] for n in ("01_first", "02_second")] == ["ok", "ok"]
    assert record["created_utc"] == first["created_utc"] and len(record["continued"]) == 1
    assert record["continued"][0]["notebooks"] == ["02_second"]
    assert record["wall_time_s"] > first["wall_time_s"]
    # Other settings are never mixed into the run: refused, naming what differs, the record kept.
    with pytest.raises(run.SeriesError, match=r"other parameters \(epochs differ\)"):
        run.execute_series({**parameters, "epochs": 2}, notebooks=["02_second"], progress=False, log=lambda _: None)
    assert json.loads((results / "run.json").read_text()) == record


@pytest.mark.slow  # starts two kernels
def test_one_thread_reaches_every_kernel_and_is_recorded(tmp_path, monkeypatch):
    import nbformat

    from cxr_utils import MALLOC_ARENAS, runtime

    seen = {**runtime.ONE_THREAD_ENVIRONMENT, "MALLOC_ARENA_MAX": str(MALLOC_ARENAS)}

    _two_notebooks(tmp_path, monkeypatch)
    for name in ("01_first", "02_second"):  # each kernel writes the thread and heap settings it sees
        path = run.NOTEBOOKS_DIR / f"{name}.ipynb"
        notebook = nbformat.read(path, as_version=4)
        notebook.cells.append(nbformat.v4.new_code_cell(
            "import json, os\n"
            f"json.dump({{k: os.environ.get(k) for k in {sorted(seen)}}}, "
            f"open({str(tmp_path / name)!r} + '.json', 'w'))"))
        nbformat.write(notebook, path)
    for variable in seen:
        monkeypatch.delenv(variable, raising=False)
    results = tmp_path / "results"
    run.execute_series({"results_dir": str(results), "epochs": 1}, progress=False, log=lambda _: None,
                       one_thread=True)
    for name in ("01_first", "02_second"):
        assert json.loads((tmp_path / f"{name}.json").read_text()) == seen
    record = json.loads((results / "run.json").read_text())
    assert record["one_thread"] is True
    assert all(entry["peak_memory_mb"] > 0 for entry in record["notebooks"].values())  # each kernel sampled
    assert record["hardware"]["tensorflow_threads"] == runtime.ONE_THREAD_ENVIRONMENT
    # The caller's environment is as it was, also after a refused call.
    assert not any(variable in os.environ for variable in seen)
    with pytest.raises(run.SeriesError):
        run.execute_series({"results_dir": str(results), "epochs": 2}, notebooks=["02_second"], progress=False,
                           log=lambda _: None, one_thread=True)
    assert not any(variable in os.environ for variable in runtime.ONE_THREAD_ENVIRONMENT)


def test_kernel_memory_is_the_peak_of_the_processes_started_inside():
    import subprocess
    import sys

    # A child that holds about 300 MB for two seconds, then exits: the peak outlives it.
    hold = "import time; block = bytearray(300 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(2)"
    with run.KernelMemory(interval_s=0.1) as memory:
        subprocess.run([sys.executable, "-c", hold], check=True)
    with run.KernelMemory(interval_s=0.1) as idle:
        pass
    assert memory.peak_mb - idle.peak_mb >= 300  # idle: whatever else this test session has running


@pytest.mark.parametrize("path", [run.NOTEBOOKS_DIR / f"{run.RUN_ALL}.ipynb", *NOTEBOOKS], ids=lambda p: p.stem)
def test_every_notebook_asks_colab_for_a_gpu(path):
    # Colab reads these two fields when it opens a notebook: a GPU runtime, and which GPU.
    metadata = json.loads(path.read_text())["metadata"]
    assert metadata.get("accelerator") == "GPU" and metadata.get("colab", {}).get("gpuType")
