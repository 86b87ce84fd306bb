"""benchmarks/imagenet_path.py, extended_memory.py and predict_speed.py at their tiniest: what they
record, that --render gives back their Markdown, and the parts a full run relies on (the
kernels' route to the ImageNet stand-in, the feature cache emptied per chapter, synthetic images
that the duplicate check keeps apart, the two ways of scoring measured side by side). The
expensive parts (the notebook series, training, ResNet50 passes) are stand-ins here, so that
these tests take seconds; the one test that scores with real saved models is marked slow."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_utils import config, run, standin_weights


def _tiny_dataset(folder: Path, benchmark_module) -> Path:
    """Four synthetic images per class in the dataset's layout (no real image needed)."""
    extended_memory = benchmark_module("extended_memory")
    extended_memory.synthesise(folder, {"COVID": 4, "Normal": 4}, size=32)
    return folder


def _rendered_again(module, record_path: Path, tmp_path: Path) -> str:
    again = tmp_path / "again.md"
    assert module.main(["--render", str(record_path), "--markdown", str(again)]) == 0
    return again.read_text()


def test_imagenet_path_measures_both_ways_side_by_side_and_renders_them(tmp_path, benchmark_module, monkeypatch):
    """Both ways get `make run`'s parameters (the paper profile, ImageNet weights, their own
    temporary folders); the per-chapter way empties the feature cache as each notebook starts,
    so chapter 5 no longer finds chapter 3's features. The series is a stand-in here (the real
    one takes minutes); the worker around it is the script's own."""
    imagenet_path = benchmark_module("imagenet_path")
    for name in ("PYTHONPATH", standin_weights.LOG_VARIABLE, standin_weights.FILE_VARIABLE):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # the worker sets them: restored after the test
    weights_file = tmp_path / standin_weights.KERAS_FILE
    weights_file.write_bytes(b"stand-in")  # never read: the series is a stand-in too
    seen = {}

    def execute_series(parameters, progress=True, log=print):
        assert (parameters["profile"], parameters["weights"], parameters["n_per_class"]) == ("paper", "imagenet", 4)
        assert parameters["extended_test_size"] is None and parameters["epochs"] == config.PROTOCOL.epochs
        assert str(tmp_path) in parameters["cache_dir"] and str(tmp_path) in parameters["results_dir"]
        # The kernels papermill would start inherit the route to the stand-in.
        assert os.environ[standin_weights.FILE_VARIABLE] == str(weights_file)
        assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "work" / "site")
        assert (tmp_path / "work" / "site" / "sitecustomize.py").read_text() == standin_weights.SITECUSTOMIZE
        features = Path(parameters["cache_dir"]) / "features"
        notebooks = run.series()
        for index, name in enumerate(notebooks, 1):
            log(f"[{index}/{len(notebooks)}] {name} ...")
            if name == "03_resnet50":
                features.mkdir(parents=True, exist_ok=True)
                (features / "image.npy").write_bytes(b"")
            if name == "05_resnet50_lstm":
                seen[parameters["results_dir"]] = (features / "image.npy").is_file()
        time.sleep(0.2)  # a series that takes time
        cost = {"05_resnet50_lstm": 2.0 if seen[parameters["results_dir"]] else 5.0}
        memory = {"08_shortcuts": 900}
        return {"wall_time_s": 9.0, "notebooks": {name: {"status": "ok", "wall_time_s": cost.get(name, 1.0),
                                                         "peak_memory_mb": memory.get(name, 500)}
                                                  for name in notebooks}}

    monkeypatch.setattr(imagenet_path, "run_mode", lambda spec: imagenet_path.series_worker(spec, execute_series))
    out, markdown = tmp_path / "path.json", tmp_path / "path.md"
    data = _tiny_dataset(tmp_path / "data", benchmark_module)
    assert imagenet_path.main(["--data-dir", str(data), "--n-per-class", "4", "--weights-file", str(weights_file),
                               "--work-dir", str(tmp_path / "work"), "--out", str(out),
                               "--markdown", str(markdown)]) == 0
    assert sorted(seen.values()) == [False, True]  # per chapter: chapter 5 made its own features
    record = json.loads(out.read_text())
    results = record["results"]
    assert list(results["modes"]) == ["shared", "per_chapter"] and "incomplete" not in record
    assert results["data"] == {"images": 8, "per_class": {"COVID": 4, "Normal": 4}}
    assert results["paper_scale"] is False and results["goals"] == imagenet_path.GOALS
    for mode in results["modes"].values():
        assert mode["status"] == "ok" and mode["run_record_s"] == 9.0
        assert mode["downloads_routed"] == mode["network_refused"] == 0
    shared, own = results["modes"]["shared"], results["modes"]["per_chapter"]
    assert results["per_chapter_vs_shared"] == round(own["series_s"] / shared["series_s"], 2)
    rows = {row["notebook"]: row for row in results["notebooks"]}
    assert list(rows) == list(run.series())
    assert rows["05_resnet50_lstm"] == {"notebook": "05_resnet50_lstm", "shared_s": 2.0, "per_chapter_s": 5.0,
                                        "shared_peak_mb": 500, "per_chapter_peak_mb": 500, "difference_s": 3.0}
    whole = shared["runner_peak_memory_mb"] + shared["kernel_peak_memory_mb"]
    assert shared["runner_peak_memory_mb"] > 0 and shared["notebooks_peak_mb"]["08_shortcuts"] == 900
    text = markdown.read_text()
    assert text == imagenet_path.render(record) == _rendered_again(imagenet_path, out, tmp_path)
    assert text.index("**In short**") < text.index("| mode")
    assert f"{results['per_chapter_vs_shared']}x the shared cache's time" in text
    assert "05_resnet50_lstm takes 5.0 s with its own backbone pass vs 2.0 s" in text
    assert "scaled down to n_per_class=4" in text
    assert (f"at most {whole} MB, the runner's peak ({shared['runner_peak_memory_mb']} MB) plus the largest "
            "kernel's (the goal of under 4000 MB is for the paper's settings); the largest notebook, "
            "08_shortcuts, 900 MB") in text


def test_imagenet_path_explains_a_missed_time_goal_with_the_passes_no_cache_shares(benchmark_module):
    """At the paper's settings a missed time goal comes with the backbone passes every series
    needs (the sample, the extended set, the blanked sample), timed at the rate of the chapter
    whose own pass made the largest difference; a met goal needs no such line."""
    imagenet_path = benchmark_module("imagenet_path")
    row = {"notebook": "05_resnet50_lstm", "shared_s": 65.0, "per_chapter_s": 179.0, "difference_s": 114.0}
    settings = {"n_per_class": 500, "epochs": 15, "image_size": 224}
    modes = {"shared": {"status": "ok", "series_s": 800.0, "sampled_images": 1000, "extended_images": 983,
                        "notebooks_s": {}},
             "per_chapter": {"status": "ok", "series_s": 900.0, "notebooks_s": {}}}
    results = {"settings": settings, "paper_scale": True, "modes": modes, "notebooks": [row],
               "weights_source": "a stand-in", "per_chapter_vs_shared": 1.12}
    lines = imagenet_path.headlines(results)
    passes = [line for line in lines if line.startswith("**The backbone passes sharing cannot remove**")]
    assert len(passes) == 1
    assert "about 114.0 s (its difference above, 114 ms an image)" in passes[0]
    assert "2983 images: about 340 s at that rate, against the goal of 180 s" in passes[0]
    modes["shared"]["series_s"] = 170.0
    assert not any(line.startswith("**The backbone passes") for line in imagenet_path.headlines(results))


def test_extended_memory_records_and_renders_a_tiny_run(tmp_path, benchmark_module, monkeypatch):
    """The script's own steps on 12 synthetic images (synthesis, manifest, duplicate check, the
    extended set, the record, its rendering), with the scoring process a stand-in: no model runs."""
    extended_memory = benchmark_module("extended_memory")
    models = tmp_path / "models"
    for model_id in config.REGISTRY:
        (models / model_id).mkdir(parents=True)
        (models / model_id / "model.keras").write_bytes(b"")  # never loaded: the scoring is a stand-in
    specs = []

    def run_worker(spec, work):
        specs.append(spec)
        images = spec.get("limit") or len(pd.read_csv(spec["rows"]))
        steps = [{"way": spec["way"], "step": m, "seconds": 0.5, "of_which_loading_s": 0.1,
                  "peak_memory_mb_so_far": 300} for m in config.REGISTRY]
        return {"way": spec["way"], "images": images, "models": len(config.REGISTRY), "seconds": 1.5,
                "images_per_s": round(images / 1.5, 1), "peak_memory_mb": 321, "memory_after_imports_mb": 250,
                "steps": steps}

    monkeypatch.setattr(extended_memory, "run_worker", run_worker)
    out, markdown = tmp_path / "memory.json", tmp_path / "memory.md"
    assert extended_memory.main(["--images", "12", "--train-per-class", "2", "--image-size", "32", "--models-from",
                                 str(models), "--old-way-images", "4", "--work-dir", str(tmp_path / "work"),
                                 "--out", str(out), "--markdown", str(markdown)]) == 0
    assert [spec["way"] for spec in specs] == ["streamed", "one_array"] and specs[1]["limit"] == 4
    assert all(spec["results_dir"] == str(models.resolve()) and spec["image_size"] == 32 for spec in specs)
    record = json.loads(out.read_text())
    results = record["results"]
    assert results["setup"]["per_class"] == {"COVID": 3, "Normal": 9} and results["setup"]["images"] == 12
    # Distinct images: the duplicate check links none, so every image is scored (none was the models').
    assert results["near_duplicate_groups"] == results["excluded_as_duplicates"] == 0
    assert results["streamed"]["images"] == 12 and results["old_way"]["measured"]["images"] == 4
    assert results["old_way"]["computed"] == extended_memory.old_way_array_mb(12, 32)
    assert results["full_scale"] is False and results["goals"] == extended_memory.GOALS
    text = markdown.read_text()
    assert text == extended_memory.render(record) == _rendered_again(extended_memory, out, tmp_path)
    assert text.index("**In short**") < text.index("| way")
    assert "peak host memory of the scoring process 321 MB, 250 MB of it already after importing" in text
    assert "measured on the first 4 images: peak 321 MB" in text
    assert "scaled down: the goal of under" in text and "the saved models of MODELS_FROM_DIR/models" in text
    assert str(tmp_path) not in out.read_text() + text  # the record names no folder of this machine


@pytest.mark.slow
def test_extended_memory_scores_the_set_in_a_fresh_process_and_renders_it(tmp_path, benchmark_module, small_run):
    """The whole script but the training (``--models-from``: the session's small run, whose
    ResNet50 models share the ImageNet stand-in's frozen backbone): synthetic images, the
    duplicate check, the scoring process, the record and its rendering; then the old way."""
    extended_memory = benchmark_module("extended_memory")
    size = json.loads((small_run / "run.json").read_text())["settings"]["image_size"]
    out, markdown, work = tmp_path / "memory.json", tmp_path / "memory.md", tmp_path / "work"
    assert extended_memory.main(["--images", "12", "--train-per-class", "2", "--image-size", str(size),
                                 "--models-from", str(small_run), "--work-dir", str(work),
                                 "--out", str(out), "--markdown", str(markdown)]) == 0
    record = json.loads(out.read_text())
    results = record["results"]
    assert results["setup"]["per_class"] == {"COVID": 3, "Normal": 9} and results["setup"]["images"] == 12
    # Distinct images: the duplicate check links none, so every image is scored (none was the models').
    assert results["near_duplicate_groups"] == results["excluded_as_duplicates"] == 0
    streamed = results["streamed"]
    assert streamed["way"] == "streamed" and streamed["images"] == 12
    assert streamed["models"] == len(config.REGISTRY)
    assert [step["step"] for step in streamed["steps"]] == list(config.REGISTRY)  # in predict_saved_models' order
    assert sum(step["seconds"] for step in streamed["steps"]) == pytest.approx(streamed["seconds"], abs=0.3)
    assert 0 < streamed["memory_after_imports_mb"] <= streamed["peak_memory_mb"]
    assert streamed["images_per_s"] == pytest.approx(streamed["images"] / streamed["seconds"], rel=0.1, abs=0.06)
    assert results["old_way"]["computed"] == extended_memory.old_way_array_mb(12, size)
    assert results["full_scale"] is False and results["training"]["models_from"] == "MODELS_FROM_DIR/results"  # portable (write_record)
    assert results["feature_cache_files"] == streamed["images"]  # one backbone pass for both ResNet50 models
    text = markdown.read_text()
    assert text == extended_memory.render(record) == _rendered_again(extended_memory, out, tmp_path)
    assert f"peak host memory of the scoring process {streamed['peak_memory_mb']} MB" in text
    assert "scaled down: the goal of under" in text and "the saved models of MODELS_FROM_DIR/results" in text

    # The old way (every image in one array, each whole model on it), here in this process.
    old = extended_memory.score_worker({"way": "one_array", "rows": str(work / "extended_rows.csv"), "limit": 4,
                                        "results_dir": str(small_run), "cache_dir": None, "image_size": size})
    assert old["images"] == 4 and old["models"] == len(config.REGISTRY)
    assert [step["step"] for step in old["steps"]][-len(config.REGISTRY):] == list(config.REGISTRY)
    record["results"]["old_way"]["measured"] = old
    assert "measured on the first 4 images" in extended_memory.render(record)


def test_the_old_ways_array_size_at_the_full_extended_set(benchmark_module):
    """12,800 images of 224 x 224 x 3 float32 values: 7350 MiB before a single image is scored."""
    sizes = benchmark_module("extended_memory").old_way_array_mb(12_800, 224)
    assert sizes == {"images": 12_800, "float32_array_mb": 7350,
                     "uint8_array_mb": round(12_800 * 224 * 224 * 3 / 2**20)}


def test_synthetic_images_are_distinct_and_deterministic(tmp_path, benchmark_module):
    extended_memory = benchmark_module("extended_memory")
    first = extended_memory.synthetic_image("COVID", 1, 64, seed=0)
    assert first.shape == (64, 64, 3) and first.dtype.name == "uint8"
    assert (first == extended_memory.synthetic_image("COVID", 1, 64, seed=0)).all()
    assert (first != extended_memory.synthetic_image("Normal", 1, 64, seed=0)).any()
    assert extended_memory.class_counts(12_832, 16) == {"COVID": 3360, "Normal": 9472}


MEASURED = Path(__file__).resolve().parents[1] / "book" / "measured"


SCRIPTS = ["imagenet_path", "extended_memory", "predict_speed"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_committed_measurements_are_rendered_from_their_json(script, benchmark_module):
    """book/measured/<script>_cpu.md is exactly the rendering of the JSON beside it."""
    json_path, markdown_path = MEASURED / f"{script}_cpu.json", MEASURED / f"{script}_cpu.md"
    if not json_path.is_file():
        pytest.skip(f"no measurement committed at {json_path}")
    assert benchmark_module(script).render(json.loads(json_path.read_text())) == markdown_path.read_text()


def test_the_readme_states_the_measured_memory_and_time_of_the_extended_set(benchmark_module):
    """The README gives the extended-set benchmark's peak memory and time as the line its
    committed record renders, so the figures are the record's."""
    json_path = MEASURED / "extended_memory_cpu.json"
    if not json_path.is_file():
        pytest.skip(f"no measurement committed at {json_path}")
    line = benchmark_module("extended_memory").readme_sentence(json.loads(json_path.read_text()))
    assert line in (MEASURED.parents[1] / "README.md").read_text().splitlines(), line


@pytest.mark.parametrize("script", SCRIPTS)
def test_render_rejects_a_file_that_is_not_such_a_record(tmp_path, script):
    bogus = tmp_path / "record.json"
    bogus.write_text('{"results": {}}')
    completed = subprocess.run([sys.executable, str(MEASURED.parents[1] / "benchmarks" / f"{script}.py"),
                                "--render", str(bogus)], capture_output=True, text=True)
    assert completed.returncode == 2
    assert f"{bogus} is not a benchmark JSON" in completed.stderr


# -- predict_speed.py ------------------------------------------------------------------------------


def _way(name, calls, total_s, loading_s, probabilities):
    """A stand-in for predict_speed.predict_way or series_way: each call takes the next of
    ``total_s`` (``loading_s`` of it loading) and gives ``probabilities`` for every model."""
    def way(results_dir, rows, image_size, batch_size):
        calls.append(name)
        total = total_s.pop(0)
        times = {"way": name, "images": len(rows), "models": len(config.REGISTRY), "total_s": total,
                 "loading_s": loading_s, "scoring_s": total - loading_s,
                 "images_per_s": round(len(rows) / (total - loading_s), 1),
                 "images_per_s_with_loading": round(len(rows) / total, 1)}
        return times, {model_id: np.asarray(probabilities) for model_id in config.REGISTRY}

    return way


def test_predict_speed_interleaves_the_ways_and_keeps_each_ones_fastest_round(benchmark_module):
    predict_speed = benchmark_module("predict_speed")
    rows = pd.DataFrame({"path": ["a.png", "b.png", "c.png", "d.png"]})
    calls = []
    ways = {"predict": _way("predict", calls, [9.0, 7.0, 8.0], 1.0, [0.1, 0.2, 0.3, 0.4]),
            "series": _way("series", calls, [12.0, 15.0, 11.0], 3.0, [0.1, 0.2, 0.3, 0.4 + 2e-6])}
    results = predict_speed.measure("run", rows, 32, rounds=3, ways=ways)
    assert calls == ["predict", "series", "series", "predict", "predict", "series"]  # the order alternates
    assert [r["round"] for r in results["rounds"]] == [1, 1, 2, 2, 3, 3]
    predict, series = results["ways"]["predict"], results["ways"]["series"]
    assert (predict["total_s"], series["total_s"]) == (7.0, 11.0)  # each way's fastest round
    assert results["predict_vs_series"] == {"scoring": round(8.0 / 6.0, 2), "with_loading": round(11.0 / 7.0, 2)}
    assert results["largest_probability_difference"] == pytest.approx(
        {model_id: 2e-6 for model_id in config.REGISTRY}, abs=1e-9)


def _predict_speed_record(benchmark_module, tmp_path, monkeypatch, series_total_s=11.0, difference=0.0):
    """predict_speed.main on a stand-in run: its rows, checks and both ways replaced."""
    predict_speed = benchmark_module("predict_speed")
    from cxr_utils import saved_models

    run_dir = tmp_path / "results" / "sample"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"settings": {"profile": "sample", "weights": None}}))
    rows = pd.DataFrame({"path": [f"{k}.png" for k in range(6)], "class": ["COVID"] * 3 + ["Normal"] * 3})
    monkeypatch.setattr(saved_models, "check_run_folder", lambda results_dir, ids: Path(results_dir))
    monkeypatch.setattr(predict_speed, "run_rows", lambda results_dir, images: (rows.head(images), 32))
    calls = []
    monkeypatch.setattr(predict_speed, "predict_way", _way("predict", calls, [7.0, 9.0], 1.0, [0.5] * 6))
    monkeypatch.setattr(predict_speed, "series_way",
                        _way("series", calls, [series_total_s, series_total_s + 1], 3.0, [0.5 + difference] * 6))
    out, markdown = tmp_path / "speed.json", tmp_path / "speed.md"
    assert predict_speed.main(["--run", str(run_dir), "--images", "6", "--rounds", "2", "--out", str(out),
                               "--markdown", str(markdown)]) == 0
    return predict_speed, json.loads(out.read_text()), markdown.read_text(), out


def test_predict_speed_records_and_renders_the_ratios(tmp_path, benchmark_module, monkeypatch):
    predict_speed, record, text, out = _predict_speed_record(benchmark_module, tmp_path, monkeypatch)
    results = record["results"]
    assert results["setup"] == {"run": "RESULTS_DIR (…/sample)", "profile": "sample", "weights": "from scratch",
                                "image_size": 32, "images": 6, "per_class": {"COVID": 3, "Normal": 3},
                                "models": len(config.REGISTRY), "rounds": 2, "batch_size": config.PROTOCOL.batch_size}
    assert record["settings"]["run"] == "RESULTS_DIR (…/sample)"  # no machine's path in a committed record
    assert results["goals"] == predict_speed.GOALS and list(results["ways_explained"]) == ["predict", "series"]
    ratio = results["predict_vs_series"]["scoring"]
    assert ratio == round(8.0 / 6.0, 2)
    assert text == predict_speed.render(record) == _rendered_again(predict_speed, out, tmp_path)
    assert text.index("**In short**") < text.index("| round")
    assert f"predict at {ratio}x the series' speed (goal: at least 1.0x, met)" in text
    assert "differ by at most 0.0e+00 (the same numbers)" in text


def test_predict_speed_says_when_predict_is_slower_or_the_ways_disagree(tmp_path, benchmark_module, monkeypatch):
    _, record, text, _ = _predict_speed_record(benchmark_module, tmp_path, monkeypatch, series_total_s=5.0,
                                               difference=0.01)
    assert record["results"]["predict_vs_series"]["scoring"] < 1
    assert "missed)" in text and "**not the same numbers**" in text


def test_predict_speed_needs_a_run(benchmark_module, tmp_path, capsys):
    predict_speed = benchmark_module("predict_speed")
    with pytest.raises(SystemExit) as exit_info:
        predict_speed.main(["--out", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2 and "--run RESULTS_DIR is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        predict_speed.main(["--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2 and not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_predict_speed_scores_a_real_run_both_ways_alike(benchmark_module, small_run):
    """Both real ways on the session's small run: the same probabilities, positive times."""
    predict_speed = benchmark_module("predict_speed")
    rows, size = predict_speed.run_rows(small_run, 4)
    results = predict_speed.measure(small_run, rows, size, rounds=1)
    assert set(results["ways"]) == {"predict", "series"} and len(results["rounds"]) == 2
    for way in results["ways"].values():
        assert way["images"] == len(rows) and way["models"] == len(config.REGISTRY)
        assert 0 < way["loading_s"] < way["total_s"]
    assert max(results["largest_probability_difference"].values()) <= predict_speed.AGREEMENT


FULL_SCALE = {
    "imagenet_path": "python benchmarks/imagenet_path.py",
    "extended_memory": "python benchmarks/extended_memory.py --old-way-images 1000",
    "predict_speed": "python benchmarks/predict_speed.py --run results/sample",
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_appendix_shows_each_measurement_or_says_it_is_missing(script):
    """book/appendix_benchmarks.md says how each benchmark's figures are made, and either includes
    book/measured/<script>_cpu.md (which must then exist: the book build, warnings as errors,
    fails on a missing include) or says in a note that it has not been measured yet."""
    page = (MEASURED.parent / "appendix_benchmarks.md").read_text()
    command = (f"{FULL_SCALE[script]} --out book/measured/{script}_cpu.json "
               f"--markdown book/measured/{script}_cpu.md")
    assert command in " ".join(page.split())  # the page says how its figures were made
    section = page.split(command.split(" --out")[0].removeprefix("python "), 1)[1].split("\n## ", 1)[0]
    if f"```{{include}} measured/{script}_cpu.md" in section:
        missing = [p.name for p in (MEASURED / f"{script}_cpu.json", MEASURED / f"{script}_cpu.md")
                   if not p.is_file()]
        assert not missing, f"book/measured/ lacks {missing}: run `{command}`"
    else:
        assert "Not yet measured" in section and not (MEASURED / f"{script}_cpu.md").is_file()
