"""The paper's three classifiers as Keras 3 models (backend-agnostic: no TensorFlow calls).

Every model takes a batch of (224, 224, 3) images scaled to [0, 1] (see ``cxr_utils.data``)
and ends in one sigmoid unit giving P(COVID). Models that use ResNet50 are composed of two
named sub-models, ``backbone`` (images -> 7x7x2048 feature map) and ``head`` (feature map ->
probability), so training can compute a frozen backbone's features once and fit the head
alone (``cxr_utils.training``): the same model, minutes instead of hours.

The paper leaves several choices open (book/paper.md, "What the paper leaves open"); each is a named
argument here, its default justified where it is defined. Explained in notebooks/03_resnet50, 04_lstm
and 05_resnet50_lstm.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import keras
from keras import layers

from cxr_utils import config
from cxr_utils.config import PROTOCOL

INPUT_SHAPE = (PROTOCOL.image_size, PROTOCOL.image_size, 3)

# Keras' ImageNet weights for ResNet50 expect "caffe" inputs: 0-255, BGR, ImageNet mean removed.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
PAPER_LSTM_UNITS = (32, 16, 8)  # paper section 3.1: the hybrid's recurrent stack
# Each backbone built here -> (weights, input_scaling) it was built with (``backbone_source``).
_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights could not be downloaded or a weights file could not be read."""


@keras.saving.register_keras_serializable(package="cxr_utils")
class GrayscaleRows(layers.Layer):
    """(H, W, 3) image -> sequence of H rows of W grey values (the channels are identical copies)."""

    def call(self, images):
        return keras.ops.mean(images, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape[:-1]


def _sigmoid_output(name: str = "p_covid") -> layers.Dense:
    # One sigmoid unit is the binary form of the paper's "num_classes = 2 with sigmoid": two
    # sigmoid units would model two independent probabilities that need not sum to one.
    # float32 keeps the probability exact under mixed precision.
    return layers.Dense(1, activation="sigmoid", dtype="float32", name=name)


def _lstm_stack(x, units, dropout):
    for i, n_units in enumerate(units):
        # Every LSTM but the last passes its whole sequence on, so each layer reads a sequence;
        # the last returns its final state only, for the classifier.
        x = layers.LSTM(n_units, return_sequences=i < len(units) - 1, name=f"lstm_{n_units}_{i + 1}")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return _sigmoid_output()(x)


def resnet50_backbone(
    weights: str | Path | None = "imagenet",
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    input_scaling: str = "paper",
    bn_momentum: float | str | None = "auto",
) -> keras.Model:
    """ResNet50 without its top (``keras.applications``): images in [0, 1] -> 7x7x2048 map.

    Args:
        weights: "imagenet" (downloaded by Keras on first use), the path of a local copy
            (``*_notop.h5`` / ``.weights.h5``), or None (random initialisation, from scratch).
        input_scaling: "paper" feeds the [0, 1] images as they are, because section 2.2
            describes division by 255 and nothing else. "imagenet" maps them to what the
            ImageNet weights were trained on (0-255, mean removed: Keras' ``preprocess_input``
            for ResNet50); use it with ``weights="imagenet"`` to test that choice.
        bn_momentum: of the BatchNormalization moving statistics. "auto" keeps Keras' 0.99 for
            pretrained weights and uses 0.9 from scratch (``config.batchnorm_momentum``). Why:
            with 0.99 the moving averages remember ~100 steps; a 15-epoch run on 800 images has
            only 375 steps while the weights change fast, so the statistics can describe earlier
            weights than the ones validated (the reasoning; no committed run measures 0.99
            against 0.9). 0.9 remembers ~10 steps. None keeps the Keras default.
    """
    if input_scaling not in ("paper", "imagenet"):
        raise ValueError(f"input_scaling must be 'paper' or 'imagenet', not {input_scaling!r}")
    weights = config.parse_weights(weights)
    if config.weights_kind(weights) == "file":
        weights_path = Path(weights).expanduser()
        if not weights_path.is_file():
            raise WeightsUnavailableError(
                f"weights file {weights_path} not found; pass weights='imagenet' (needs a network), "
                "weights=None (train from scratch), or the path of ResNet50 no-top weights "
                "(resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)"
            )
        weights = str(weights_path)
    try:
        resnet = keras.applications.ResNet50(
            include_top=False, weights=weights, input_shape=input_shape
        )
    except Exception as error:  # Keras raises a bare Exception on a failed download
        raise WeightsUnavailableError(
            f"could not load ResNet50 weights {weights!r}: {error}. Without a network, pass "
            "weights=None to train from scratch, or download "
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 elsewhere and pass its path."
        ) from error

    if bn_momentum == "auto":
        bn_momentum = config.batchnorm_momentum(weights)
    if bn_momentum is not None:
        for layer in resnet.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = float(bn_momentum)

    images = keras.Input(input_shape, name="images")
    x = images
    if input_scaling == "imagenet":
        x = layers.Rescaling(255.0, name="to_0_255")(x)
        # The three channels are identical grey copies, so RGB->BGR order changes nothing;
        # only the per-channel means differ.
        x = layers.Normalization(
            mean=IMAGENET_BGR_MEAN, variance=(1.0, 1.0, 1.0), name="imagenet_mean"
        )(x)
    backbone = keras.Model(images, resnet(x), name="backbone")
    _SOURCES[backbone] = (config.parse_weights(weights), input_scaling)
    return backbone


def backbone_source(backbone: keras.Model) -> tuple[str | None, str] | None:
    """(weights, input_scaling) that ``resnet50_backbone`` built ``backbone`` with, None for a
    backbone built elsewhere (a loaded model). What a frozen backbone computes depends on them, so
    ``cxr_utils.experiment.prepare_inputs`` keys its feature cache with them: read from the model,
    the key cannot disagree with the weights the chapter built it with."""
    return _SOURCES.get(backbone)


def _assemble(backbone: keras.Model, head: keras.Model, weights, trainable_backbone, name: str):
    # By default frozen when pretrained (feature extraction, the paper's wording in 2.3); a random
    # backbone must learn, so it trains.
    if trainable_backbone is None:
        trainable_backbone = config.weights_kind(weights) == "scratch"
    backbone.trainable = bool(trainable_backbone)
    images = keras.Input(backbone.input_shape[1:], name="images")
    return keras.Model(images, head(backbone(images)), name=name)


def build_resnet50(
    weights: str | Path | None = "imagenet",
    trainable_backbone: bool | None = None,
    head: str = "gap",
    dropout: float = 0.0,
    input_scaling: str = "paper",
    bn_momentum: float | str | None = "auto",
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
) -> keras.Model:
    """ResNet50 alone (paper model 1).

    Args:
        weights, input_scaling, bn_momentum: see ``resnet50_backbone``.
        trainable_backbone: None means frozen when pretrained, trained when from scratch.
        head: "gap" (global average pooling -> sigmoid unit; Keras' own transfer-learning
            recipe and 2,049 parameters, little to overfit on 800 images) or "flatten"
            (7*7*2048 = 100,352 inputs to the sigmoid). The paper names no head.
        dropout: before the output unit; the paper mentions dropout only for the hybrid.
    """
    backbone = resnet50_backbone(weights, input_shape, input_scaling, bn_momentum)
    features = keras.Input(backbone.output_shape[1:], name="features")
    if head == "gap":
        x = layers.GlobalAveragePooling2D(name="gap")(features)
    elif head == "flatten":
        x = layers.Flatten(name="flatten")(features)
    else:
        raise ValueError(f"head must be 'gap' or 'flatten', not {head!r}")
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    head_model = keras.Model(features, _sigmoid_output()(x), name="head")
    return _assemble(backbone, head_model, weights, trainable_backbone, "resnet50")


def build_resnet50_lstm(
    weights: str | Path | None = "imagenet",
    trainable_backbone: bool | None = None,
    lstm_units: tuple[int, ...] = PAPER_LSTM_UNITS,
    dropout: float = 0.2,
    input_scaling: str = "paper",
    bn_momentum: float | str | None = "auto",
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
) -> keras.Model:
    """The paper's proposed hybrid (paper model 3, section 3.1).

    ResNet50's 7x7x2048 feature map is reshaped to a sequence of 49 steps of 2,048 features
    (the paper's "2x2 ... 2048" cannot arise from a 224x224 input; 7x7 is what ResNet50
    gives, read row by row), then LSTM(32) -> LSTM(16) -> LSTM(8) -> Dropout -> sigmoid.

    Args:
        weights, trainable_backbone, input_scaling, bn_momentum: as in ``build_resnet50``.
        dropout: the paper names a Dropout layer but not its rate; 0.2 is a light rate for an
            8-unit state (0.5 would silence half of eight features at every step).
    """
    backbone = resnet50_backbone(weights, input_shape, input_scaling, bn_momentum)
    head_model = resnet50_lstm_head(backbone.output_shape[1:], lstm_units, dropout)
    return _assemble(backbone, head_model, weights, trainable_backbone, "resnet50_lstm")


def resnet50_lstm_head(
    feature_shape: tuple[int, int, int] = (7, 7, 2048),
    lstm_units: tuple[int, ...] = PAPER_LSTM_UNITS,
    dropout: float = 0.2,
) -> keras.Model:
    """The hybrid's head alone: a (height, width, depth) feature map read row by row as a
    sequence of height x width steps, then the recurrent stack (``build_resnet50_lstm``)."""
    height, width, depth = feature_shape
    features = keras.Input((height, width, depth), name="features")
    sequence = layers.Reshape((height * width, depth), name="feature_map_to_sequence")(features)
    return keras.Model(features, _lstm_stack(sequence, lstm_units, dropout), name="head")


def build_lstm(
    lstm_units: tuple[int, ...] = PAPER_LSTM_UNITS,
    dropout: float = 0.2,
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
) -> keras.Model:
    """LSTM alone (paper model 2): the image read top to bottom, one row per time step.

    The paper does not say how an image becomes a sequence; rows as time steps (224 steps of
    224 grey values) is the usual reading. The three identical channels are averaged back to
    one. The recurrent stack and dropout are the hybrid's, so the two models differ only in
    what the LSTMs read: raw pixel rows here, ResNet50 features there.
    """
    images = keras.Input(input_shape, name="images")
    rows = GrayscaleRows(name="image_rows")(images)
    return keras.Model(images, _lstm_stack(rows, lstm_units, dropout), name="lstm")


def build_model(name: str, **options) -> keras.Model:
    """Build a model of ``config.REGISTRY`` (id or the paper's name) with the paper's settings,
    overridden by ``options``; backbone options are dropped for a model without a backbone."""
    spec = config.model_spec(name)
    if not spec.has_backbone:
        options = {k: v for k, v in options.items() if k not in config.BACKBONE_OPTIONS}
    return spec.build(**options)


def frozen_backbone(model: keras.Model) -> keras.Model | None:
    """The model's ``backbone`` sub-model when it is frozen (fast path possible), else None."""
    try:
        backbone = model.get_layer("backbone")
    except ValueError:
        return None
    return None if backbone.trainable else backbone


def has_backbone(model: keras.Model) -> bool:
    """Whether ``model`` has a ``backbone`` sub-model (the ResNet50 models; Grad-CAM needs it)."""
    try:
        model.get_layer("backbone")
    except ValueError:
        return False
    return True
