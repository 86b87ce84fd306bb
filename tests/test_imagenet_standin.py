"""The paper's setting, ImageNet weights, executed offline with a stand-in weights file.

Keras downloads ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`` with
``keras.src.utils.file_utils.get_file`` (keras/src/applications/resnet.py), which checks the
file's hash, so a cached copy of another file is refused. The tests route that call to the
stand-in (tests/conftest.py: a seeded ResNet50 saved in the same format under the same name),
in this process and, through a ``sitecustomize.py`` on the kernels' PYTHONPATH, in the kernels
papermill starts. The route answers only the exact file and address Keras asks for and records
every call; nothing reaches the network (connections leaving this machine are refused).
"""

import json
import os
import socket
import textwrap

import numpy as np
import pandas as pd
import pytest

from cxr_utils import comparison, config, data, run, summaries

KERAS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _keras_origin() -> str:
    from keras.src.applications import resnet

    return f"{resnet.BASE_WEIGHTS_PATH}{KERAS_FILE}"


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
        if fname != KERAS_FILE or origin != _keras_origin():
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
    assert imagenet_route == [(KERAS_FILE, _keras_origin(), "models", imagenet_route[0][3])]
    assert imagenet_route[0][3]  # Keras asks for the real file's hash: a cached stand-in alone is refused
    _assert_same(_resnet_weights(model), _standin_weights(imagenet_standin, (32, 32, 3)))
    backbone = models.frozen_backbone(model)
    assert backbone is not None and not backbone.trainable
    assert not any(w.trainable for w in backbone.weights)
    # Pretrained batch-norm statistics keep Keras' momentum (bn_momentum="auto").
    norms = [layer for layer in backbone.get_layer("resnet50").layers if layer.__class__.__name__ == "BatchNormalization"]
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

SITECUSTOMIZE = '''
"""Started with every Python process of this test's kernels (PYTHONPATH): Keras' ImageNet
download answered by the stand-in file, every call logged, connections off this machine refused."""
import os
import socket

_LOG = os.environ["CXR_STANDIN_LOG"]


def _log(line):
    with open(_LOG, "a") as handle:
        handle.write(line + "\\n")


_connect = socket.socket.connect


def _local_only(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
        _log(f"NETWORK {address!r}")
        raise OSError(f"network access refused in tests: {address!r}")
    return _connect(self, address)


socket.socket.connect = _local_only

from keras.src.utils import file_utils  # noqa: E402


def _get_file(fname=None, origin=None, *args, **kwargs):
    if fname == os.environ["CXR_STANDIN_NAME"] and origin == os.environ["CXR_STANDIN_ORIGIN"]:
        _log(f"ROUTED {fname} {origin}")
        return os.environ["CXR_STANDIN_FILE"]
    _log(f"REFUSED {fname} {origin}")
    raise RuntimeError(f"unexpected download in a test: {fname!r} from {origin!r}")


file_utils.get_file = _get_file
'''


@pytest.mark.slow
def test_the_paper_setting_runs_end_to_end_in_papermill(imagenet_standin, real_subset, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    log = tmp_path / "downloads.log"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("CXR_STANDIN_LOG", str(log))
    monkeypatch.setenv("CXR_STANDIN_NAME", KERAS_FILE)
    monkeypatch.setenv("CXR_STANDIN_ORIGIN", _keras_origin())
    monkeypatch.setenv("CXR_STANDIN_FILE", str(imagenet_standin))
    _refuse_remote_connections(monkeypatch)

    results = tmp_path / "results"
    small = {"weights": "imagenet", "n_per_class": 10, "epochs": 1, "batch_size": 8, "image_size": 32,
             "extended_test_size": 10, "cache_dir": str(tmp_path / "cache")}
    parameters = run.profile_parameters("sample", data_dir=real_subset, results_dir=results, overrides=small)
    record = run.execute_series(parameters, progress=False, log=lambda *_: None)
    assert all(entry["status"] == "ok" for entry in record["notebooks"].values())

    # Each ResNet50 chapter asked Keras for the ImageNet file once and got the stand-in; nothing else.
    lines = log.read_text().splitlines()
    backbones = [spec for spec in config.REGISTRY.values() if spec.has_backbone]
    assert lines == [f"ROUTED {KERAS_FILE} {_keras_origin()}"] * len(backbones)
    for spec in backbones:
        settings = json.loads((results / spec.id / "run.json").read_text())["settings"]
        assert settings["fast_path"] is True and settings["model_options"]["weights"] == "imagenet"
        page = (results / "notebooks" / f"{spec.chapter}.ipynb").read_text()
        assert "weights='imagenet'" in page and "Trained from scratch" not in page

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
