"""The facts every module shares, each written once: the paper's protocol, the model registry,
the classes and metric names, and what ``weights`` means.

Nothing here imports Keras or TensorFlow, so any module (and any test) may read a fact cheaply.
Explained in book/method.
"""

from __future__ import annotations

import dataclasses
import importlib
import numbers
from pathlib import Path
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The paper's protocol (sections 2.1-3.1); every default elsewhere reads it from here."""

    n_per_class: int = 500  # 2.1: 500 COVID + 500 Normal images
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # 2.2: train / val / test
    image_size: int = 224  # 2.2: resized to 224x224
    epochs: int = 15  # 3.1
    batch_size: int = 32  # 2.2 and 3.1
    learning_rate: float = 1e-3  # 3.1: Adam, learning rate 0.001
    weights: str = "imagenet"  # 2.3: ResNet50 as an ImageNet feature extractor
    seed: int = 42  # not the paper's (it names none): this project's seed for sample, split, weights

    def split_sizes(self, n_per_class: int | None = None) -> dict[str, int]:
        """Images per split for ``n_per_class`` of each class: 400/50/50 per class at the paper's 500."""
        n_per_class = self.n_per_class if n_per_class is None else n_per_class
        train = round(n_per_class * self.split_fractions[0])
        val = round(n_per_class * self.split_fractions[1])
        return {"train": 2 * train, "val": 2 * val, "test": 2 * (n_per_class - train - val)}


PROTOCOL = Protocol()


@dataclasses.dataclass(frozen=True)
class Choices:
    """What this project decides where the paper is silent (the method page says why); every run
    and study records them (``protocol_record``)."""

    # BatchNorm's momentum: Keras' 0.99 with pretrained weights; 0.9 from scratch, so that the moving
    # statistics follow weights that change fast in a short run (``models.resnet50_backbone``).
    pretrained_batchnorm_momentum: float = 0.99
    scratch_batchnorm_momentum: float = 0.9
    restore_best: bool = True  # test the kept (best-validation) epoch's weights; the last epoch's beside
    inference_check_images: int = 200  # training images scored in inference mode after each epoch
    recompute_batchnorm_images: int = 0  # the remedy, off: the paper's protocol
    fit_batchnorm_images: int = 320  # claim 3's losses: BatchNorm statistics recomputed from these
    # After every epoch, the same weights scored again with BatchNorm statistics recomputed from
    # the fit_batchnorm_images images (callbacks.PairedBatchNormCheck): the diagnosis of unsteady
    # validation, which changes no weight; a no-op for a model without trainable BatchNorm.
    batchnorm_check: bool = True
    bootstrap_resamples: int = 2000  # every bootstrap interval of a run, seeded with the run's seed


CHOICES = Choices()


def batchnorm_momentum(weights) -> float:
    """The BatchNorm momentum a ResNet50 starting from ``weights`` trains with (``CHOICES``)."""
    if weights_kind(weights) == "scratch":
        return CHOICES.scratch_batchnorm_momentum
    return CHOICES.pretrained_batchnorm_momentum


def protocol_record(weights, image_size: int = PROTOCOL.image_size, seed: int | None = PROTOCOL.seed,
                    recompute_batchnorm_images: int = CHOICES.recompute_batchnorm_images,
                    mixed_precision="auto") -> dict:
    """Every protocol choice of a run or study, as its run.json / study.json records it: the
    BatchNorm momentum, restoring the best epoch, the remedy's images, mixed precision, the image
    size, claim 3's BatchNorm images and the bootstrap (resamples, seed; None: each run's own seed,
    as in a study of several seeds)."""
    return {
        "batchnorm_momentum": batchnorm_momentum(weights),
        "restore_best": CHOICES.restore_best,
        "recompute_batchnorm_images": int(recompute_batchnorm_images),
        "inference_check_images": CHOICES.inference_check_images,
        "fit_batchnorm_images": CHOICES.fit_batchnorm_images,
        "batchnorm_check": CHOICES.batchnorm_check,
        "mixed_precision": mixed_precision,
        "image_size": int(image_size),
        "bootstrap": {"resamples": CHOICES.bootstrap_resamples,
                      "seed": "each run's own seed" if seed is None else int(seed)},
    }

# Labels as the paper counts them: COVID is the positive class (Tables 3-6).
CLASSES = {"Normal": 0, "COVID": 1}
CLASS_NAMES = {label: name for name, label in CLASSES.items()}
# The paper's tables list COVID first: rows and columns of every confusion matrix.
PAPER_ORDER = [CLASS_NAMES[label] for label in sorted(CLASS_NAMES, reverse=True)]
# Table 6's metrics, COVID positive, in the paper's order.
METRICS = ("accuracy", "precision", "recall", "f1")
# One row per epoch of a training history (Keras' names); the run's Table 2 is its best row.
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
# The paired BatchNorm check's columns of a history (callbacks.PairedBatchNormCheck's epoch logs):
# a model whose history holds them ran the check.
PAIRED_CHECK_COLUMNS = ("val_accuracy_recomputed", "train_inference_accuracy_recomputed")

# Every knob a notebook's parameters cell may declare; ``cxr_utils.run`` profiles set them and
# each chapter's "Run settings" line shows the ones it has.
NOTEBOOK_PARAMETERS = (
    "data_dir", "results_dir", "cache_dir", "profile", "seed", "n_per_class", "weights", "epochs",
    "batch_size", "image_size", "extended_test_size", "drive_folder",
    # chapter 8 (shortcuts): the baselines' inputs and the lung rectangle
    "thumbnail_size", "border_width", "histogram_bins", "lung_box",
)


def _integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # NumPy's integers too


def _positive_integer(value) -> bool:
    return _integer(value) and value >= 1


def _count(value) -> bool:
    return _integer(value) and value >= 0


def _lung_box(value) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in value))


# What each parameter accepts, in words and as a check: every override (-p NAME=VALUE of run and
# study, a notebook's parameters, a profile, training.TrainingConfig's counts) is checked here, once.
PARAMETER_RULES: dict[str, tuple[str, Callable]] = {
    **{name: ("a positive integer", _positive_integer)
       for name in ("n_per_class", "epochs", "batch_size", "image_size", "thumbnail_size", "border_width",
                    "histogram_bins")},
    # seed, and the training options of run_experiment and the study (training.TrainingConfig)
    **{name: ("an integer of 0 or more", _count)
       for name in ("seed", "inference_check_images", "recompute_batchnorm_images")},
    "extended_test_size": ("None (all eligible images) or a positive integer", lambda v: v is None or _positive_integer(v)),
    "lung_box": ("four fractions (top, left, height, width) in [0, 1]", _lung_box),
}


class ParameterError(ValueError):
    """A parameter with a value it does not accept; the message names both and what it accepts."""


def check_parameters(parameters: dict) -> dict:
    """``parameters`` with ``weights`` read as ``parse_weights`` reads it, after checking every
    parameter that ``PARAMETER_RULES`` knows; ParameterError naming the first that fails and what
    it accepts (``epochs must be a positive integer, not 'abc'``)."""
    for name, value in parameters.items():
        if name in PARAMETER_RULES:
            accepts, check = PARAMETER_RULES[name]
            if not check(value):
                raise ParameterError(f"{name} must be {accepts}, not {value!r}")
    checked = dict(parameters)
    if "weights" in checked:
        try:
            checked["weights"] = parse_weights(checked["weights"])
        except ValueError as error:
            raise ParameterError(str(error)) from None
    return checked


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of the comparison.

    ``builder`` is a function returning a Keras model, or its "module:function" name (resolved
    on first use, so reading the registry never imports Keras). ``has_backbone``: built on
    ResNet50, so it takes the backbone options (``weights``, ``trainable_backbone``,
    ``input_scaling``, ``bn_momentum``). ``chapter`` is the notebook that trains it.
    """

    id: str
    paper_name: str
    builder: str | Callable
    has_backbone: bool
    chapter: str

    def build(self, **options):
        builder = self.builder
        if isinstance(builder, str):
            module, _, name = builder.partition(":")
            builder = getattr(importlib.import_module(module), name)
        return builder(**options)


# Every loop over "the models" walks this, in the paper's order: adding a model is one entry
# here and one chapter (tests/test_config.py proves it with a toy model).
REGISTRY: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec("resnet50", "ResNet50", "cxr_utils.models:build_resnet50", True, "03_resnet50"),
        ModelSpec("lstm", "LSTM", "cxr_utils.models:build_lstm", False, "04_lstm"),
        ModelSpec("resnet50_lstm", "ResNet50-LSTM", "cxr_utils.models:build_resnet50_lstm", True,
                  "05_resnet50_lstm"),
    )
}
BACKBONE_OPTIONS = ("weights", "trainable_backbone", "input_scaling", "bn_momentum")


def model_spec(model: str) -> ModelSpec:
    """The registry entry for a model id ("resnet50") or the paper's name ("ResNet50")."""
    for spec in REGISTRY.values():
        if model in (spec.id, spec.paper_name):
            return spec
    known = ", ".join(f"{spec.id!r} ({spec.paper_name!r})" for spec in REGISTRY.values())
    raise ValueError(f"unknown model {model!r}; use one of {known}")


def model_ids(names=None) -> list[str]:
    """Registry ids for ``names`` (ids or the paper's names; None or "all": every model), in the
    registry's order, once each; ValueError for an unknown name."""
    if not names or "all" in names:
        return list(REGISTRY)
    ids = {model_spec(name).id for name in names}
    return [model_id for model_id in REGISTRY if model_id in ids]


def paper_names() -> dict[str, str]:
    """Model id -> the paper's name, in the paper's order."""
    return {spec.id: spec.paper_name for spec in REGISTRY.values()}


# What ``weights`` means, everywhere: "imagenet" (Keras downloads the ImageNet weights), a path
# to a local copy of them (the offline route: the same setting as "imagenet"), or None (random
# initialisation, trained from scratch).
WEIGHTS_KINDS = ("imagenet", "file", "scratch")
_SCRATCH_WORDS = ("none", "scratch")


def parse_weights(value) -> str | None:
    """``weights`` as written on a command line or in a profile: "None"/"scratch" -> None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _SCRATCH_WORDS):
        return None
    if isinstance(value, Path):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"weights must be 'imagenet', None (from scratch) or the path of a weights file, not {value!r}"
        )
    return value.strip()


def weights_kind(weights) -> str:
    """"imagenet", "file" (a local ImageNet weights file) or "scratch"."""
    weights = parse_weights(weights)
    if weights is None:
        return "scratch"
    return "imagenet" if weights == "imagenet" else "file"


def is_paper_setting(weights) -> bool:
    """True for the paper's ImageNet transfer learning: downloaded or a local weights file."""
    return weights_kind(weights) != "scratch"


def weights_label(weights) -> str:
    """A few words for tables and captions: how this run's backbone started."""
    kind = weights_kind(weights)
    if kind == "scratch":
        return "from scratch"
    if kind == "file":
        return f"ImageNet weights from file {Path(str(weights)).name}"
    return "ImageNet weights"
