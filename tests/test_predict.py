"""``python -m cxr_utils.predict``: every readable image scored as training preprocessed it, the
unreadable ones and those outside the size rule listed, one model or all, safe-mode loading, and
clear exits for unusable runs."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_utils import data, image_checks, predict, report, saved_models

REPO_ROOT = Path(__file__).resolve().parents[1]


def _fake_run(folder, models=("resnet50", "lstm", "resnet50_lstm"), with_weights=True):
    """A run folder's shape without trained models: manifest, model folders, empty model files."""
    folder.mkdir(parents=True)
    (folder / "manifest.csv").write_text(",".join(data.MANIFEST_COLUMNS) + "\n")
    for model_id in models:
        (folder / model_id).mkdir()
        (folder / model_id / "metrics.json").write_text("{}")
        if with_weights:
            (folder / model_id / "model.keras").write_bytes(b"")
    return folder


def _command(*args):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "cxr_utils.predict", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO_ROOT, env=environment, timeout=300)


def test_find_images_searches_folders_and_names_missing_paths(tmp_path):
    (tmp_path / "scans" / "sub").mkdir(parents=True)
    for name in ("scans/b-10.png", "scans/b-2.JPG", "scans/sub/c.tiff", "scans/.hidden.png", "scans/notes.txt",
                 "odd.dat"):
        (tmp_path / name).write_bytes(b"x")
    files, problems = predict.find_images([tmp_path / "scans", tmp_path / "odd.dat", tmp_path / "gone.png",
                                           tmp_path / "scans" / "b-2.JPG"])
    names = [p.relative_to(tmp_path).as_posix() for p in files]
    # Natural order in a folder; a file named on the command line is tried whatever its suffix;
    # a file found twice is scored once; hidden files and other suffixes in folders are skipped.
    assert names == ["scans/b-2.JPG", "scans/b-10.png", "scans/sub/c.tiff", "odd.dat"]
    assert problems == [{"path": str(tmp_path / "gone.png"), "reason": "no such file or folder"}]


def test_a_run_folder_without_the_models_is_a_usage_error_that_names_it_and_the_fix(tmp_path, real_data):
    image = next((real_data / "COVID" / "images").iterdir())
    published = _fake_run(tmp_path / "published", with_weights=False)  # like book/executed/results
    result = _command(image, "--run", published)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(published) in result.stderr and "resnet50/model.keras" in result.stderr
    assert "published copy" in result.stderr and "python -m cxr_utils.run" in result.stderr


def test_a_run_missing_one_model_or_no_folder_is_a_usage_error(tmp_path, real_data, capsys):
    image = next((real_data / "COVID" / "images").iterdir())
    missing_one = _fake_run(tmp_path / "partial", models=("resnet50", "resnet50_lstm"))
    assert predict.main([str(image), "--run", str(missing_one), "--model", "lstm"]) == 2
    error = capsys.readouterr().err
    assert "lstm/model.keras" in error and "notebooks/04_lstm.ipynb" in error and str(missing_one) in error
    assert predict.main([str(image), "--run", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    (tmp_path / "empty").mkdir()
    assert predict.main([str(tmp_path / "empty"), "--run", str(run)]) == 2
    assert "no image files" in capsys.readouterr().err
    assert predict.main([str(tmp_path / "empty"), "--run", str(run), "--model", "vgg16"]) == 2
    assert "unknown model 'vgg16'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(tmp_path / "empty")])  # no --run
    assert exit_info.value.code == 2


def _save(model, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)


def _rewrite_config(path, change):
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    change(config)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)


def test_model_files_that_would_run_code_are_refused(tmp_path, monkeypatch):
    import keras

    run = _fake_run(tmp_path / "run")
    inputs = keras.Input((4,))
    _save(keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)), run / "lstm" / "model.keras")
    with pytest.raises(saved_models.RunFolderError, match="refused to load .*Lambda layer"):
        saved_models.load_model(run, "lstm")

    # Keras' own safe mode is on too: without this module's check, Keras refuses the lambda.
    monkeypatch.setattr(saved_models, "_unsafe_entries", lambda config: [])
    with pytest.raises(saved_models.RunFolderError, match="cannot be loaded .*Lambda"):
        saved_models.load_model(run, "lstm")
    monkeypatch.undo()

    # A layer from a module outside Keras and cxr_utils would be imported: refused before Keras sees it.
    _save(keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]), run / "resnet50" / "model.keras")

    def foreign(config):
        config["config"]["layers"][-1].update(module="evil.layers", class_name="Dense")

    _rewrite_config(run / "resnet50" / "model.keras", foreign)
    with pytest.raises(saved_models.RunFolderError, match="module 'evil.layers'"):
        saved_models.load_model(run, "resnet50")

    (run / "resnet50_lstm" / "model.keras").write_bytes(b"not a zip archive")
    with pytest.raises(saved_models.RunFolderError, match="not a Keras model archive"):
        saved_models.load_model(run, "resnet50_lstm")


@pytest.mark.slow
def test_predict_scores_every_readable_image_and_lists_the_unreadable(small_run, external_folder, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    code = predict.main([str(external_folder["folder"]), "--run", str(small_run), "--csv", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 1  # one file could not be scored; the others were

    table = pd.read_csv(out)
    assert sorted(table["path"]) == sorted(map(str, external_folder["readable"]))
    assert list(table.columns) == ["path", *(f"{m}_{c}" for m in ("resnet50", "lstm", "resnet50_lstm")
                                             for c in ("probability", "decision"))]
    for model_id in ("resnet50", "lstm", "resnet50_lstm"):
        probabilities = table[f"{model_id}_probability"]
        assert probabilities.between(0, 1).all()
        assert (table[f"{model_id}_decision"] == np.where(probabilities >= 0.5, "COVID", "Normal")).all()

    assert f"{external_folder['broken']}: truncated image" in printed
    assert "Could not score 1 of 11 files" in printed
    assert report.DISCLAIMER in printed
    recorded = pd.read_csv(small_run / "evaluation" / "metrics.csv")
    first = recorded.iloc[0]
    assert predict.interval_text(first["value"], first["low"], first["high"]) in printed


@pytest.mark.slow
def test_scores_equal_the_runs_own_predictions_and_training_preprocessing(small_run, external_folder):
    import keras

    from cxr_utils import training

    split = data.read_manifest(small_run / "split.csv")
    test = split[split["split"] == "test"]
    table, problems = predict.predict(test["path"], small_run)
    assert not problems
    for model_id in ("resnet50", "lstm", "resnet50_lstm"):
        saved = pd.read_csv(small_run / model_id / "predictions.csv").set_index("path")["probability"]
        np.testing.assert_allclose(table[model_id], saved.loc[table["path"]].to_numpy(), atol=1e-5)

    # Other formats, modes and sizes: the same input as training's loader gives (data.load_images).
    readable = [str(p) for p in external_folder["readable"]]
    table, problems = predict.predict(readable, small_run, models=["lstm"])
    assert not problems and list(table.columns) == ["path", "lstm"]
    model = keras.saving.load_model(small_run / "lstm" / "model.keras", safe_mode=True)
    size = saved_models.run_image_size(small_run)
    expected = training.predict_probabilities(model, data.load_images(readable, image_size=size, progress=False))
    np.testing.assert_allclose(table.set_index("path").loc[readable, "lstm"], expected, atol=1e-6)


@pytest.mark.slow
def test_each_model_loads_once_and_frozen_backbones_share_one_pass(small_run, external_folder, monkeypatch):
    import keras

    from cxr_utils import inference

    loads, backbone_passes = [], []
    real_load, real_predict = keras.saving.load_model, inference.predict_in_batches
    monkeypatch.setattr(keras.saving, "load_model",
                        lambda path, **kw: loads.append((path, kw)) or real_load(path, **kw))

    def counted(model, inputs, batch_size=32):
        if model.name == "backbone":
            backbone_passes.append(len(inputs))
        return real_predict(model, inputs, batch_size)

    monkeypatch.setattr(inference, "predict_in_batches", counted)
    loaded = saved_models.load_models(small_run)
    assert loaded["resnet50_lstm"].shares_backbone_with == "resnet50"
    table, problems = predict.score_images(loaded, external_folder["readable"], 32, chunk_size=3)
    assert len(table) == len(external_folder["readable"]) and not problems
    assert len(loads) == 3 and all(kw["safe_mode"] is True for _, kw in loads)
    assert sum(backbone_passes) == len(external_folder["readable"])  # once per image, for both models


@pytest.mark.slow
def test_model_lstm_scores_one_model(small_run, external_folder, tmp_path, capsys):
    out = tmp_path / "lstm.csv"
    image = external_folder["readable"][0]
    assert predict.main([str(image), "--run", str(small_run), "--model", "lstm", "--csv", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["path", "lstm_probability", "lstm_decision"] and len(table) == 1
    printed = capsys.readouterr().out
    assert "LSTM P(COVID)" in printed and "ResNet50 P(COVID)" not in printed


def test_an_exif_rotated_file_is_scored_upright(real_data, tmp_path):
    # What score_images hands the model: a stand-in model records its inputs (no run needed).
    from PIL import Image

    class Recorder:
        def __init__(self):
            self.inputs = []

        def predict_on_batch(self, batch):
            self.inputs.append(np.array(batch))
            return np.full((len(batch), 1), 0.5, np.float32)

    original = sorted((real_data / "Normal" / "images").iterdir())[0]
    upright = data.decode_grayscale(original)[:, :160]  # not square: a sideways read changes the shape
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to show
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.png", exif=exif.tobytes())
    Image.fromarray(upright).save(tmp_path / "upright.png")
    recorder = Recorder()
    loaded = {"probe": saved_models.LoadedModel(id="probe", name="probe", model=recorder)}
    table, problems = predict.score_images(loaded, [tmp_path / "turned.png", tmp_path / "upright.png"], 64,
                                           batch_size=2)
    assert not problems and len(table) == 2
    (batch,) = recorder.inputs
    np.testing.assert_array_equal(batch[0], batch[1])
    np.testing.assert_array_equal(batch[0], data.preprocess(upright, 64))


class _Probe:
    """A stand-in model (no run, no training): records the inputs it is given and scores each
    image with its mean grey level."""

    input_shape = (None, 64, 64, 3)

    def __init__(self):
        self.inputs = []

    def predict_on_batch(self, batch):
        self.inputs.append(np.array(batch))
        return np.asarray(batch).mean(axis=(1, 2, 3)).reshape(-1, 1).astype(np.float32)


@pytest.mark.parametrize("width, height, refused", [
    (1, 1, "1 x 1 px, too small"), (20, 300, "20 x 300 px, too small"), (63, 100, "too small"),
    (224, 100, "224 x 100 px, 2.24:1 is too elongated"), (64, 129, "too elongated"),
    (64, 64, None), (64, 128, None), (224, 224, None), (299, 299, None), (1024, 1240, None),
])
def test_the_size_rule(width, height, refused):
    reason = image_checks.size_problem(width, height)
    if refused is None:
        assert reason is None
    else:
        assert refused in reason and image_checks.RULE in reason
        assert image_checks.size_problem(height, width) == reason.replace(f"{width} x {height}", f"{height} x {width}")


def test_the_readme_states_the_size_rule_of_the_code():
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    assert (f"at least {image_checks.MIN_SIDE} px on each side and at most {image_checks.MAX_ASPECT:g}:1 "
            "(long side to short side)") in readme


def test_images_too_small_or_too_elongated_are_named_and_not_scored(real_data, tmp_path, monkeypatch, capsys):
    # The case: a 1 x 1 px PNG scored P(COVID) = 0.500 with exit status 0. Now it, a
    # sliver and a strip cut from a real X-ray are listed with their size and the rule, and the
    # real X-ray beside them is still scored.
    from PIL import Image

    real = sorted((real_data / "COVID" / "images").iterdir())[0]
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a-real.png").write_bytes(real.read_bytes())
    Image.new("L", (1, 1), 128).save(scans / "b-dot.png")
    Image.new("L", (20, 300), 128).save(scans / "c-sliver.png")
    gray = data.decode_grayscale(real)
    Image.fromarray(gray[:100]).save(scans / "d-strip.png")  # the full width, 100 rows: 2.24:1
    probe = _Probe()
    monkeypatch.setattr(predict, "load_models", lambda results_dir, ids: {
        model_id: saved_models.LoadedModel(id=model_id, name="LSTM", model=probe) for model_id in ids})
    out = tmp_path / "scores.csv"
    code = predict.main([str(scans), "--run", str(_fake_run(tmp_path / "run")), "--model", "lstm", "--csv", str(out),
                         "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 1
    scored, listed = printed.split("Could not score 3 of 4 files:")
    assert f"{scans / 'b-dot.png'}: 1 x 1 px, too small to score (images must be {image_checks.RULE})" in listed
    assert f"{scans / 'c-sliver.png'}: 20 x 300 px, too small to score" in listed
    assert f"{scans / 'd-strip.png'}: {gray.shape[1]} x 100 px, 2.24:1 is too elongated" in listed
    assert "a-real.png" in scored and not any(name in scored for name in ("b-dot", "c-sliver", "d-strip"))

    table = pd.read_csv(out)
    assert list(table["path"]) == [str(scans / "a-real.png")] and table["lstm_probability"].notna().all()
    (batch,) = probe.inputs
    np.testing.assert_array_equal(batch, data.preprocess(gray, 64)[None])  # only the real X-ray reached the model
