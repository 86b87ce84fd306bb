"""The lungs-blanked models (cxr_utils.blanked; its command: python -m cxr_utils.study blanked) on
a tiny real run: the LSTM only, 8 images per class, 32 px, 1 epoch (seconds). Trains beside the
run, resumes without training again, refuses other settings, sets blanked beside intact, and its
command's exit codes."""

import json

import numpy as np
import pytest

from cxr_utils import blanked as blanked_study
from cxr_utils import chapters, metrics, runtime, study, training
from cxr_utils.shortcuts import LungBox
from cxr_utils.study import blanked as blanked_command

SIZE, SEED, N_PER_CLASS = 32, 3, 8


def _config(epochs=1):
    return training.TrainingConfig(epochs=epochs, batch_size=8, seed=SEED, progress=False, inference_check_images=0)


@pytest.fixture(scope="module")
def tiny_run(real_subset, tmp_path_factory):
    """A run folder as the notebooks leave it, with only its LSTM trained (intact), and run.json."""
    folder = tmp_path_factory.mktemp("tiny-run") / "results"
    folder.mkdir()
    cache = folder.parent / "cache"
    split = chapters.split(folder, real_subset, n_per_class=N_PER_CLASS, seed=SEED, log=lambda *_: None)
    training.run_experiment("lstm", split, folder, _config(), image_size=SIZE, cache_dir=cache, save_model=False)
    parameters = {"n_per_class": N_PER_CLASS, "epochs": 1, "batch_size": 8, "seed": SEED, "weights": None,
                  "image_size": SIZE, "data_dir": str(real_subset), "cache_dir": str(cache)}
    runtime.write_json(runtime.run_record(parameters), folder / "run.json")
    return folder, split, cache


@pytest.fixture(scope="module")
def trained(tiny_run):
    folder, split, cache = tiny_run
    log = []
    record = blanked_study.train_blanked(folder, split, LungBox(), _config(), {"weights": None}, cache, SIZE,
                                 models=["lstm"], log=log.append)
    return folder, split, cache, record, log


def test_the_lstm_is_trained_with_the_lungs_blanked_beside_the_run(trained):
    folder, split, _, record, log = trained
    model_folder = folder / "shortcuts" / "blanked" / "lstm"
    assert (model_folder / "metrics.json").is_file() and not (model_folder / "model.keras").exists()
    settings = json.loads((model_folder / "run.json").read_text())["settings"]
    assert settings["blanked"] == LungBox().key and settings["training"]["epochs"] == 1
    saved = json.loads((folder / "shortcuts" / "blanked" / "blanked.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["settings"]["box"] == LungBox().key
    assert saved["settings"]["split"] == blanked_study.split_fingerprint(split)
    assert set(saved["runs"]) == {"lstm"} and saved["runs"]["lstm"]["wall_time_s"] > 0
    assert "1 model to train" in log[0]
    # Progress names the model, its time and what is left (the intact run's time scaled to the epochs).
    assert log[-1].startswith("LSTM: ") and "nothing left" in log[-1]
    assert not (folder / "shortcuts" / "blanked" / "resnet50").exists()


def test_a_second_call_trains_nothing(trained, monkeypatch):
    folder, split, cache, _, _ = trained
    metrics_json = folder / "shortcuts" / "blanked" / "lstm" / "metrics.json"
    written = metrics_json.stat().st_mtime_ns

    def must_not_train(*args, **kwargs):
        raise AssertionError("a complete model was trained again")

    monkeypatch.setattr(training, "run_experiment", must_not_train)
    log = []
    blanked_study.train_blanked(folder, split, LungBox(), _config(), {}, cache, SIZE, models=["LSTM"], log=log.append)
    assert "0 models to train" in log[0] and "LSTM: complete, skipped." in log
    assert metrics_json.stat().st_mtime_ns == written


@pytest.mark.parametrize("change, named", [
    ({"config": _config(epochs=2)}, "epochs"),
    ({"box": LungBox(top=0.2, height=0.6)}, "box"),
    ({"size": 48}, "image_size"),
])
def test_other_settings_are_refused_not_mixed(trained, change, named):
    folder, split, cache, _, _ = trained
    record = (folder / "shortcuts" / "blanked" / "blanked.json").read_text()
    with pytest.raises(blanked_study.BlankedError, match=f"holds models trained with {named}=.*but this asks for {named}="):
        blanked_study.train_blanked(folder, split, change.get("box", LungBox()), change.get("config", _config()), {}, cache,
                            change.get("size", SIZE), models=["lstm"], log=lambda *_: None)
    assert (folder / "shortcuts" / "blanked" / "blanked.json").read_text() == record


def test_blanked_results_set_blanked_beside_intact(trained):
    import pandas as pd

    folder = trained[0]
    table = blanked_study.blanked_results(folder)
    assert list(table["model_id"]) == ["resnet50", "lstm", "resnet50_lstm"]
    assert table.attrs["missing"] == ["resnet50", "resnet50_lstm"]
    lstm = table.set_index("model_id").loc["lstm"]
    assert lstm["status"] == "complete"
    for side, path in (("intact", folder / "lstm"), ("blanked", folder / "shortcuts" / "blanked" / "lstm")):
        predictions = pd.read_csv(path / "predictions.csv")
        expected = metrics.metrics_with_intervals(predictions["label"], predictions["predicted"]).loc["accuracy"]
        assert lstm[f"{side}_accuracy"] == pytest.approx(expected["value"])
        assert (lstm[f"{side}_accuracy_low"], lstm[f"{side}_accuracy_high"]) == pytest.approx(
            (expected["low"], expected["high"]))
        assert lstm["n"] == len(predictions)
    assert lstm["accuracy_difference"] == pytest.approx(lstm["blanked_accuracy"] - lstm["intact_accuracy"])
    assert 0 <= lstm["mcnemar_p"] <= 1
    resnet = table.set_index("model_id").loc["resnet50"]
    assert resnet["status"] == "intact and blanked missing" and np.isnan(resnet["intact_accuracy"])


def test_a_blanked_run_tested_on_other_images_is_refused(trained, tmp_path):
    import shutil

    import pandas as pd

    folder = shutil.copytree(trained[0], tmp_path / "run")
    tested = folder / "shortcuts" / "blanked" / "lstm" / "predictions.csv"
    # The same images in another order: McNemar's test pairs them row by row, so this is refused too.
    pd.read_csv(tested).iloc[::-1].to_csv(tested, index=False)
    with pytest.raises(ValueError, match="blanked run in .* was tested on other images than its intact run"):
        blanked_study.blanked_results(folder)


def test_run_protocol_reads_the_run_and_falls_back_to_the_records(tiny_run, tmp_path):
    import shutil

    folder = tiny_run[0]
    protocol = blanked_command.run_protocol(folder, {"epochs": 4})
    assert (protocol["n_per_class"], protocol["seed"], protocol["epochs"], protocol["batch_size"],
            protocol["image_size"], protocol["weights"]) == (N_PER_CLASS, SEED, 4, 8, SIZE, None)
    # Without run.json: the split's record and the LSTM's own record say the same.
    copy = shutil.copytree(folder, tmp_path / "copy", ignore=shutil.ignore_patterns("shortcuts"))
    (copy / "run.json").unlink()
    fallback = blanked_command.run_protocol(copy)
    assert {k: fallback[k] for k in ("n_per_class", "seed", "epochs", "batch_size", "image_size")} == {
        "n_per_class": N_PER_CLASS, "seed": SEED, "epochs": 1, "batch_size": 8, "image_size": SIZE}


def test_the_command_resumes_and_reports(trained, monkeypatch, capsys):
    folder = trained[0]
    monkeypatch.setattr(training, "run_experiment", lambda *a, **k: pytest.fail("nothing should train"))
    assert study.main(["blanked", "--run", str(folder), "--models", "lstm"]) == 0
    out = capsys.readouterr().out
    assert "LSTM: complete, skipped." in out and "LSTM: test accuracy" in out
    assert (folder / "shortcuts" / "blanked" / "results.csv").is_file()


@pytest.mark.parametrize("argv, code, message", [
    (["--run", "{missing}"], 1, "holds no split.csv"),
    (["--run", "{run}", "-p", "seed=1"], 2, "defines the comparison"),
    (["--run", "{run}", "-p", "lr=1"], 2, "unknown parameter"),
    (["--run", "{run}", "-p", "epochs"], 2, "NAME=VALUE"),
    (["--run", "{run}", "-p", "epochs=0"], 2, "positive integer"),
    (["--run", "{run}", "--models", "vgg16"], 2, "unknown model"),
    (["--run", "{run}", "--models", "lstm", "-p", "epochs=2"], 1, "holds models trained with epochs=1"),
])
def test_command_errors_are_one_line_with_exit_codes(trained, tmp_path, capsys, argv, code, message):
    argv = [a.format(run=trained[0], missing=tmp_path / "absent") for a in argv]
    assert study.main(["blanked", *argv]) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
