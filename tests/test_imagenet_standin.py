"""The paper's setting, ImageNet weights, executed offline with a stand-in weights file.

Keras downloads ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`` with
``keras.src.utils.file_utils.get_file`` (keras/src/applications/resnet.py), which checks the
file's hash, so a cached copy of another file is refused. The tests route that call to the
stand-in (tests/conftest.py: a seeded ResNet50 saved in the same format under the same name),
in this process and, through the ``sitecustomize.py`` of ``cxr_utils.standin_weights`` on the
kernels' PYTHONPATH (the route benchmarks/imagenet_path.py uses too), in the kernels papermill
starts. The route answers only the exact file and address Keras asks for and records
every call; nothing reaches the network (connections leaving this machine are refused).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cxr_utils import comparison, config, data, run, standin_weights, summaries

KERAS_FILE = standin_weights.KERAS_FILE


def _refuse_remote_connections(monkeypatch):
    connect = socket.socket.connect

    def local_only(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"a test tried to reach the network: {address}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)


@pytest.fixture
def imagenet_route(imagenet_standin, monkeypatch):
    """Keras' ImageNet download answered by the stand-in, in this process; returns the calls."""
    from keras.src.utils import file_utils

    calls = []

    def get_file(fname=None, origin=None, *args, **kwargs):
        calls.append((fname, origin, kwargs.get("cache_subdir"), kwargs.get("file_hash")))
        if fname != KERAS_FILE or origin != standin_weights.keras_origin():
            raise AssertionError(f"unexpected download {fname!r} from {origin!r}")
        return str(imagenet_standin)

    monkeypatch.setattr(file_utils, "get_file", get_file)
    _refuse_remote_connections(monkeypatch)
    return calls


def _standin_weights(imagenet_standin, input_shape):
    import keras

    return keras.applications.ResNet50(include_top=False, weights=str(imagenet_standin),
                                       input_shape=input_shape).get_weights()


def _resnet_weights(model):
    return model.get_layer("backbone").get_layer("resnet50").get_weights()


def _assert_same(weights, expected):
    assert len(weights) == len(expected)
    for mine, theirs in zip(weights, expected):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("model_id", ["resnet50", "resnet50_lstm"])
def test_imagenet_weights_load_the_downloaded_file_into_a_frozen_backbone(model_id, imagenet_route, imagenet_standin):
    from cxr_utils import models

    model = models.build_model(model_id, weights="imagenet", input_shape=(32, 32, 3))
    assert imagenet_route == [(KERAS_FILE, standin_weights.keras_origin(), "models", imagenet_route[0][3])]
    assert imagenet_route[0][3]  # Keras asks for the real file's hash: a cached stand-in alone is refused
    _assert_same(_resnet_weights(model), _standin_weights(imagenet_standin, (32, 32, 3)))
    backbone = models.frozen_backbone(model)
    assert backbone is not None and not backbone.trainable
    assert not any(w.trainable for w in backbone.weights)
    # Pretrained batch-norm statistics keep Keras' momentum (bn_momentum="auto").
    norms = [layer for layer in backbone.get_layer("resnet50").layers
             if layer.__class__.__name__ == "BatchNormalization"]
    assert norms and all(layer.momentum == pytest.approx(0.99) for layer in norms)


def test_a_local_weights_file_is_the_imagenet_setting(imagenet_route, imagenet_standin):
    from cxr_utils import models

    path = str(imagenet_standin)
    model = models.build_model("resnet50", weights=path, input_shape=(32, 32, 3))
    assert imagenet_route == []  # read from the file, nothing downloaded
    _assert_same(_resnet_weights(model), _standin_weights(imagenet_standin, (32, 32, 3)))
    assert models.frozen_backbone(model) is not None  # frozen by default, as with "imagenet"
    assert config.weights_kind(path) == "file" and config.is_paper_setting(path)
    assert config.weights_label(path) == f"ImageNet weights from file {KERAS_FILE}"
    assert config.weights_label("imagenet") == "ImageNet weights"
    for weights in ("imagenet", path):
        line = summaries.settings_markdown({"profile": "paper", "weights": weights})
        assert "Trained from scratch" not in line and f"weights={weights!r}" in line
    assert "Trained from scratch" in summaries.settings_markdown({"weights": None})


@pytest.mark.parametrize("weights", ["imagenet", "file"])
def test_training_takes_the_fast_path_with_the_configured_input_scaling(weights, imagenet_route, imagenet_standin,
                                                                        real_subset, tmp_path):
    from cxr_utils import training

    weights = str(imagenet_standin) if weights == "file" else weights
    manifest = data.add_duplicate_groups(data.build_manifest(real_subset, progress=False))
    split = data.split_dataset(data.sample_balanced(manifest, n_per_class=10, seed=42), seed=42)
    settings = training.TrainingConfig(epochs=1, batch_size=8, seed=42, progress=False)
    outcome = training.run_experiment("resnet50", split, tmp_path, settings, image_size=32, save_model=False,
                                      model_options={"weights": weights, "input_scaling": "imagenet"})
    record = json.loads((tmp_path / "resnet50" / "run.json").read_text())
    assert record["settings"]["fast_path"] is True
    assert record["settings"]["model_options"] == {"weights": weights, "input_scaling": "imagenet"}
    backbone = outcome["result"].model.get_layer("backbone")
    assert [layer.name for layer in backbone.layers[1:3]] == ["to_0_255", "imagenet_mean"]
    assert len(imagenet_route) == (1 if weights == "imagenet" else 0)


# -- the paper profile's code path, end to end, in the kernels papermill starts ----------------

@pytest.mark.slow
def test_the_paper_setting_runs_end_to_end_in_papermill(imagenet_standin, real_subset, tmp_path, monkeypatch):
    log = tmp_path / "downloads.log"
    site = standin_weights.write_site(tmp_path / "site")
    for name, value in standin_weights.route_environment(site, log, imagenet_standin).items():
        monkeypatch.setenv(name, value)  # the kernels papermill starts inherit the route
    _refuse_remote_connections(monkeypatch)

    results = tmp_path / "results"
    small = {"weights": "imagenet", "n_per_class": 10, "epochs": 1, "batch_size": 8, "image_size": 32,
             "extended_test_size": 10, "cache_dir": str(tmp_path / "cache")}
    parameters = run.profile_parameters("sample", data_dir=real_subset, results_dir=results, overrides=small)
    record = run.execute_series(parameters, progress=False, log=lambda *_: None)
    assert all(entry["status"] == "ok" for entry in record["notebooks"].values())

    # Each ResNet50 model asked Keras for the ImageNet file once and got the stand-in, nothing else:
    # in its own chapter, and again in chapter 8, which trains it with the lungs blanked.
    lines = standin_weights.route_lines(log)
    backbones = [spec for spec in config.REGISTRY.values() if spec.has_backbone]
    assert lines == [f"ROUTED {KERAS_FILE} {standin_weights.keras_origin()}"] * (2 * len(backbones))
    for spec in backbones:
        settings = json.loads((results / spec.id / "run.json").read_text())["settings"]
        assert settings["fast_path"] is True and settings["model_options"]["weights"] == "imagenet"
        page = (results / "notebooks" / f"{spec.chapter}.ipynb").read_text()
        assert "weights='imagenet'" in page and "Trained from scratch" not in page
        # Chapter 8's lungs-blanked copy: the same frozen backbone, fed blanked images.
        from cxr_utils.blanked import BLANKED_DIR

        blanked = json.loads((results / BLANKED_DIR / spec.id / "run.json").read_text())["settings"]
        assert blanked["fast_path"] is True and blanked["blanked"].startswith("lungbox:")

    # Table 7 and the verdicts speak of the ImageNet setting, not of training from scratch.
    ours = comparison.compare_with_paper(results)["table7"].iloc[-1]
    assert ours["author"] == "This run" and ours["method"] == "ResNet50 + LSTM (ImageNet weights)"
    for name in ("verdicts.csv", "verdicts_extended.csv"):
        verdicts = pd.read_csv(results / "evaluation" / name)
        assert len(verdicts) >= 3 and verdicts["verdict"].notna().all()
        assert not verdicts.astype(str).apply(lambda column: column.str.contains("scratch")).any().any()
    for name in ("report.md", "report_extended.md"):
        assert "scratch" not in (results / name).read_text()
    assert "scratch" not in (results / "notebooks" / "07_comparison.ipynb").read_text()


def test_the_kernels_route_answers_keras_imagenet_download_and_nothing_else(tmp_path):
    """``standin_weights.write_site``'s sitecustomize (the route the slow test above and
    benchmarks/imagenet_path.py give papermill's kernels), in a fresh interpreter."""
    standin = tmp_path / standin_weights.KERAS_FILE
    standin.write_bytes(b"stand-in")  # get_file only returns the path; Keras would read it
    route_log = tmp_path / "downloads.log"
    site = standin_weights.write_site(tmp_path / "site")
    name = standin_weights.KERAS_FILE
    code = (
        "import socket\n"
        "from keras.src.applications import resnet\n"
        "from keras.src.utils import file_utils\n"
        f"print(file_utils.get_file({name!r}, resnet.BASE_WEIGHTS_PATH + {name!r}, cache_subdir='models'))\n"
        "try:\n    file_utils.get_file('other.h5', 'https://example.com/other.h5')\n"
        "except RuntimeError:\n    print('refused')\n"
        "try:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\n"
        "except OSError:\n    print('offline')\n"
    )
    env = {**os.environ, **standin_weights.route_environment(site, route_log, standin, pythonpath=""),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == [str(standin), "refused", "offline"]
    assert standin_weights.route_counts(route_log) == {"downloads_routed": 1, "downloads_refused": 1,
                                                       "network_refused": 1}
    assert standin_weights.route_lines(route_log)[0] == f"ROUTED {name} {standin_weights.keras_origin()}"


def test_importing_the_aid_routes_nothing():
    """Importing cxr_utils.standin_weights neither imports Keras nor touches the download path."""
    code = ("import sys, socket\n"
            "connect = socket.socket.connect\n"
            "import cxr_utils.standin_weights\n"
            "assert socket.socket.connect is connect\n"
            "assert not any(m == 'keras' or m.startswith('keras.') for m in sys.modules), 'Keras imported'\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
