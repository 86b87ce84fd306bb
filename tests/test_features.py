"""One backbone pass for both ResNet chapters: cached feature maps equal a fresh pass, and the
second chapter and the extended test set compute nothing new."""

import keras
import numpy as np
import pandas as pd
import pytest

from cxr_utils import data, extended_set, features, inference, models, runtime, training

SIZE = 64


@pytest.fixture(scope="module")
def local_weights(tmp_path_factory):
    """A local ResNet50 no-top weights file (random: this checks plumbing, not accuracy)."""
    runtime.set_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet50_notop.weights.h5"
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)).save_weights(path)
    return str(path)


@pytest.fixture(scope="module")
def split(real_manifest):
    return data.split_dataset(data.sample_balanced(real_manifest, n_per_class=20, seed=5), seed=5)


def test_identity_names_what_the_backbone_computes(local_weights):
    assert features.backbone_identity(None) is None  # from scratch: nothing to share
    assert features.backbone_identity("imagenet") == "imagenet|scaling:paper"
    assert features.backbone_identity("imagenet", "imagenet") != features.backbone_identity("imagenet")
    assert features.backbone_identity(local_weights).startswith("file:")


def test_cached_features_equal_a_fresh_pass(local_weights, split, tmp_path, monkeypatch):
    backbone = models.resnet50_backbone(local_weights, input_shape=(SIZE, SIZE, 3))
    identity = features.backbone_identity(local_weights)
    fresh = inference.predict_in_batches(backbone, data.load_images(split, image_size=SIZE, progress=False))
    first = features.backbone_features(backbone, split, identity, SIZE, tmp_path)
    np.testing.assert_allclose(first, fresh, atol=1e-6)
    assert len(list(tmp_path.rglob("*.npy"))) == split["sha256"].nunique()

    def no_backbone_pass(*args, **kwargs):
        raise AssertionError("the cache should have served every image")

    monkeypatch.setattr(features, "predict_in_batches", no_backbone_pass)
    reordered = split.iloc[::-1]
    np.testing.assert_array_equal(features.backbone_features(backbone, reordered, identity, SIZE, tmp_path),
                                  first[::-1])


@pytest.mark.slow
def test_both_resnet_chapters_and_the_extended_set_share_one_pass(local_weights, split, real_manifest, tmp_path,
                                                                  monkeypatch):
    config = training.TrainingConfig(epochs=2, batch_size=8, seed=2, progress=False, inference_check_images=0)
    options = {"weights": local_weights}
    uncached = training.run_experiment("resnet50", split, tmp_path / "uncached", config, options, image_size=SIZE)
    cache = tmp_path / "cache"
    cached = training.run_experiment("resnet50", split, tmp_path / "run", config, options, cache, image_size=SIZE)
    assert cached["result"].fast_path
    # Same results as a pass of its own.
    pd.testing.assert_frame_equal(cached["predictions"], uncached["predictions"], atol=1e-6)
    pd.testing.assert_frame_equal(cached["result"].history, uncached["result"].history, atol=1e-6)

    calls = []
    original = inference.predict_in_batches

    def counting(model, inputs, batch_size=32):
        if model.name == "backbone":
            calls.append(len(inputs))
        return original(model, inputs, batch_size)

    monkeypatch.setattr(features, "predict_in_batches", counting)
    training.run_experiment("resnet50_lstm", split, tmp_path / "run", config, options, cache, image_size=SIZE)
    assert calls == []  # the hybrid's chapter reused chapter 3's feature maps
    training.run_experiment("lstm", split, tmp_path / "run", config, {}, cache, image_size=SIZE)

    extended = extended_set.extended_test_set(real_manifest, split, max_images=20, seed=0)
    predictions = extended_set.predict_saved_models(tmp_path / "run", extended, image_size=SIZE, cache_dir=cache)
    assert calls == [len(extended)]  # the extended set's maps: computed once, for both ResNet models
    assert list(predictions) == ["ResNet50", "LSTM", "ResNet50-LSTM"]
    for table in predictions.values():
        assert list(table["path"]) == list(extended["path"]) and table["probability"].between(0, 1).all()
