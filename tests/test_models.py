"""The paper's three architectures, their documented choices, and the weights errors."""

import keras
import numpy as np
import pytest

from cxr_utils import config, models


def _layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


def test_hybrid_matches_paper_section_3_1():
    model = models.build_resnet50_lstm(weights=None)
    head = model.get_layer("head")
    assert model.get_layer("backbone").output_shape[1:] == (7, 7, 2048)
    assert head.get_layer("feature_map_to_sequence").output.shape[1:] == (49, 2048)
    lstms = [layer for layer in head.layers if isinstance(layer, keras.layers.LSTM)]
    assert [layer.units for layer in lstms] == [32, 16, 8]
    assert [layer.return_sequences for layer in lstms] == [True, True, False]
    assert isinstance(head.layers[-2], keras.layers.Dropout)
    output = head.layers[-1]
    assert output.units == 1 and output.activation.__name__ == "sigmoid"
    assert model.output_shape == (None, 1)


def test_from_scratch_backbone_trains_and_pretrained_is_frozen_by_default(tmp_path):
    scratch = models.build_resnet50(weights=None)
    assert scratch.get_layer("backbone").trainable
    assert models.frozen_backbone(scratch) is None
    frozen = models.build_resnet50(weights=None, trainable_backbone=False)
    assert models.frozen_backbone(frozen) is frozen.get_layer("backbone")
    # Only the 2,048 + 1 head weights train when the backbone is frozen.
    trainable = sum(np.prod(w.shape) for w in frozen.trainable_weights)
    assert trainable == 2048 + 1


def test_bn_momentum_auto_depends_on_weights(tmp_path):
    def momenta(backbone):
        return {
            layer.momentum
            for layer in backbone.get_layer("resnet50").layers
            if isinstance(layer, keras.layers.BatchNormalization)
        }

    assert momenta(models.resnet50_backbone(weights=None)) == {0.9}
    assert momenta(models.resnet50_backbone(weights=None, bn_momentum=0.95)) == {0.95}
    assert momenta(models.resnet50_backbone(weights=None, bn_momentum=None)) == {0.99}


def test_lstm_reads_image_rows():
    model = models.build_lstm()
    rows = model.get_layer("image_rows")
    assert rows.output.shape[1:] == (224, 224)
    images = np.random.default_rng(0).random((2, 224, 224, 1), dtype=np.float32).repeat(3, -1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rows(images)), images[..., 0], rtol=1e-6)


def test_resnet50_heads_and_imagenet_scaling():
    gap = models.build_resnet50(weights=None, head="gap")
    flat = models.build_resnet50(weights=None, head="flatten")
    assert gap.get_layer("head").count_params() == 2049
    assert flat.get_layer("head").count_params() == 7 * 7 * 2048 + 1
    scaled = models.resnet50_backbone(weights=None, input_scaling="imagenet")
    ones = np.ones((1, 224, 224, 3), dtype=np.float32)
    to_caffe = keras.Model(scaled.input, scaled.get_layer("imagenet_mean").output)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(to_caffe(ones))[0, 0, 0], 255.0 - np.array(models.IMAGENET_BGR_MEAN), rtol=1e-5
    )
    with pytest.raises(ValueError, match="head must be"):
        models.build_resnet50(weights=None, head="dense")
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model("vgg16")


def test_missing_weights_file_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(models.WeightsUnavailableError, match="nope.h5.*weights=None"):
        models.build_resnet50(weights=missing)


def test_imagenet_download_failure_is_explained(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(models.WeightsUnavailableError, match="weights=None"):
        models.build_resnet50_lstm(weights="imagenet")


def test_local_weights_file_is_loaded(tmp_path):
    source = models.build_resnet50(weights=None, input_shape=(64, 64, 3))
    resnet = source.get_layer("backbone").get_layer("resnet50")
    path = tmp_path / "resnet50_notop.weights.h5"
    resnet.save_weights(path)
    loaded = models.build_resnet50(weights=path, input_shape=(64, 64, 3))
    for a, b in zip(resnet.get_weights(), loaded.get_layer("backbone").get_layer("resnet50").get_weights()):
        np.testing.assert_array_equal(a, b)
    assert models.frozen_backbone(loaded) is not None  # pretrained -> frozen by default


def test_saved_models_round_trip(tmp_path):
    images = np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32)
    for name in config.REGISTRY:
        # Backbone options are dropped for the LSTM, which has none.
        model = models.build_model(name, weights=None, input_shape=(64, 64, 3))
        path = tmp_path / f"{name}.keras"
        model.save(path)
        restored = keras.saving.load_model(path)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(restored(images)), keras.ops.convert_to_numpy(model(images)), rtol=1e-5
        )
