"""Grad-CAM (Selvaraju et al. 2017): where in an X-ray the ResNet50 models find their evidence.

For one image, Grad-CAM weights each channel of a convolutional feature map by the spatial mean
of the gradient of the class score with respect to that channel, sums the weighted channels,
keeps the positive part (ReLU) and upsamples the result to the image. Here the feature map is
the backbone's output (7x7x2048 for a 224 px image), which both heads read, so the ResNet50 and
the ResNet50-LSTM maps are computed at the same place and can be compared; the LSTM alone has
no feature map and gets none. The class score is the logit of the "p_covid" unit (its negative
for Normal), computed from the unit's own kernel and bias: the probability saturates at exactly
0 or 1 in float32 on confident images, and a score read from it would have no gradient.

Chapter 8 asks with these maps whether the models look at the lungs (``lung_share`` inside
``shortcuts.LungBox``) or at the collection's traces around them. Explained in
notebooks/08_shortcuts.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
from keras import ops

from cxr_utils import metrics
from cxr_utils.config import CLASS_NAMES, CLASSES, PAPER_ORDER
from cxr_utils.shortcuts import LungBox
from cxr_utils.data.manifest import require_columns
from cxr_utils.metrics import labels_from_probabilities

TARGETS = ("predicted", "covid", "normal")
OUTPUT_LAYER = "p_covid"
EXAMPLE_COLUMNS = ("path", "label", "probability")
OVERLAY_ALPHA = 0.45
COLORMAP = "jet"


def _parts(model: keras.Model):
    """(backbone, head, the head's output unit) of ``model``; ValueError naming what it lacks."""
    name = getattr(model, "name", type(model).__name__)
    try:
        backbone = model.get_layer("backbone")
    except ValueError:
        raise ValueError(
            f"model {name!r} has no 'backbone' sub-model: Grad-CAM needs a convolutional feature map "
            "(the ResNet50 models' 7x7x2048 backbone output), and this model reads the image without "
            "one (the LSTM reads pixel rows), so it has no Grad-CAM map"
        ) from None
    try:
        head = model.get_layer("head")
        dense = head.get_layer(OUTPUT_LAYER)
    except (ValueError, AttributeError):
        raise ValueError(
            f"model {name!r} has a backbone but no 'head' sub-model ending in a Dense unit named "
            f"{OUTPUT_LAYER!r}; build it with cxr_utils.models"
        ) from None
    return backbone, head, dense


def _logit_function(head: keras.Model, dense):
    """features -> logit of P(COVID), shape (n,): the head up to the input of ``dense``, then its
    kernel and bias applied with keras.ops (the sigmoid left out)."""
    before_output = keras.Model(head.inputs, dense.input, name="head_to_logit")

    def logits(features, variables=None):
        if variables is None:
            x = before_output(features, training=False)
        else:  # JAX: a pure function of the variables' values
            x, _ = before_output.stateless_call(*variables, features, training=False)
        z = ops.matmul(ops.cast(x, "float32"), ops.cast(dense.kernel, "float32"))
        if dense.use_bias:
            z = z + ops.cast(dense.bias, "float32")
        return z[:, 0]

    return before_output, logits


def _logits_and_gradients(before_output, logits, features):
    """(logits (n,), gradient of their sum with respect to ``features``), which is each image's own
    gradient: an image's logit depends on its own features only (inference mode).

    keras.ops has no gradient function, so this is the one backend-specific step. Only the
    TensorFlow branch runs in this project's tests (CPU); the JAX and PyTorch branches follow each
    framework's documented way of differentiating a Keras model but are untested here.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        features = tf.convert_to_tensor(features)
        with tf.GradientTape() as tape:
            tape.watch(features)
            z = logits(features)
            total = tf.reduce_sum(z)
        return z, tape.gradient(total, features)
    if backend == "jax":
        import jax

        # stateless_call: Keras' way of making a model a pure function of its variables, which
        # jax.grad needs (untested here, see above).
        variables = ([v.value for v in before_output.trainable_variables],
                     [v.value for v in before_output.non_trainable_variables])

        def total(f):
            z = logits(f, variables)
            return ops.sum(z), z

        gradients, z = jax.grad(total, has_aux=True)(features)
        return z, gradients
    if backend == "torch":
        import torch

        # Untested here, see above. Keras' cuDNN LSTM runs in training mode (dropout 0) whenever
        # gradients are enabled, as cuDNN's backward pass requires, so the hybrid needs nothing more.
        features = features.detach().requires_grad_(True)
        with torch.enable_grad():
            z = logits(features)
            (gradients,) = torch.autograd.grad(z.sum(), features)
        return z.detach(), gradients
    raise ValueError(f"Grad-CAM supports the tensorflow, jax and torch backends, not {backend!r}")


def _signs(z, target: str):
    """+1 where the map explains COVID, -1 where it explains Normal, shape (n, 1, 1, 1)."""
    if target == "predicted":  # the model's own threshold, P(COVID) >= 0.5 (metrics.labels_from_probabilities)
        sign = ops.where(ops.sigmoid(z) >= 0.5, 1.0, -1.0)
    else:
        sign = ops.ones_like(z) if target == "covid" else -ops.ones_like(z)
    return ops.reshape(ops.cast(sign, "float32"), (-1, 1, 1, 1))


def grad_cam(model: keras.Model, images, target: str = "predicted", batch_size: int = 16) -> np.ndarray:
    """Grad-CAM maps of ``images`` (N, H, W, C), ``upsample(grad_cam_cells(...), H, W)``: float32
    (N, H, W), each map upsampled (bilinear) and divided by its maximum, so in [0, 1] with maximum 1,
    or all 0 where no position of the feature map raises the score (the ReLU leaves nothing).

    ``model`` needs a ``backbone`` and a ``head`` (``models.build_resnet50``, ``build_resnet50_lstm``
    or one loaded from a run); the LSTM raises ValueError. ``target``: "covid" explains the COVID
    logit, "normal" its negative (the Normal score), "predicted" each image's predicted class
    (P(COVID) >= 0.5 means COVID). Inference mode throughout (dropout off, batch-norm moving
    statistics). Explained in notebooks/08_shortcuts.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (N, H, W, C), got shape {images.shape}")
    return upsample(grad_cam_cells(model, images, target=target, batch_size=batch_size), *images.shape[1:3])


def grad_cam_cells(model: keras.Model, images=None, features=None, target: str = "predicted",
                   batch_size: int = 16) -> np.ndarray:
    """Grad-CAM at the feature map's own resolution, float32 (N, h, w) (7x7 for 224 px images),
    before upsampling: what a model chapter saves for chapter 8 while the weights are in memory
    (``gradcam_cells.npz``, a few kilobytes). Give ``images`` (N, H, W, C) or the backbone's
    ``features`` for them (the fast path's feature maps: the same cells, without the backbone).
    ``target`` and ``batch_size`` as in ``grad_cam``."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size}")
    if (images is None) == (features is None):
        raise ValueError("give either images or features")
    backbone, head, dense = _parts(model)
    inputs = np.asarray(images if features is None else features)
    if inputs.ndim != 4:
        raise ValueError(f"{'images' if features is None else 'features'} must be a batch (N, H, W, C), "
                         f"got shape {inputs.shape}")
    before_output, logits = _logit_function(head, dense)
    cells = []
    for start in range(0, len(inputs), int(batch_size)):
        batch = ops.convert_to_tensor(inputs[start:start + int(batch_size)], dtype="float32")
        # predict_on_batch runs the backbone as one compiled function: called eagerly, Grad-CAM of ResNet50
        # on 16-image batches at 224 px peaked about 2.7 GB above its start in chapter 8, compiled about
        # 0.25 GB, the maps the same bit for bit (measured on the 2-core CPU). No gradient flows through
        # the backbone: only the head is differentiated.
        features_batch = ops.convert_to_tensor(backbone.predict_on_batch(batch)) if features is None else batch
        z, gradients = _logits_and_gradients(before_output, logits, features_batch)
        gradients = ops.cast(gradients, "float32") * _signs(z, target)
        channel_weights = ops.mean(gradients, axis=(1, 2), keepdims=True)
        cam = ops.relu(ops.sum(channel_weights * ops.cast(features_batch, "float32"), axis=-1))
        cells.append(ops.convert_to_numpy(cam).astype(np.float32))
    return np.concatenate(cells) if cells else np.zeros((0, *backbone.output_shape[1:3]), dtype=np.float32)


def upsample(cells, height: int, width: int, batch_size: int = 16) -> np.ndarray:
    """``grad_cam_cells`` maps upsampled (bilinear) to ``height`` x ``width`` and divided by their
    maximum: float32 (N, height, width) in [0, 1], all 0 where a map is all 0."""
    cells = np.asarray(cells, dtype=np.float32)
    if cells.ndim != 3:
        raise ValueError(f"cells must be maps (N, h, w) as grad_cam_cells returns, got shape {cells.shape}")
    maps = []
    for start in range(0, len(cells), int(batch_size)):
        cam = ops.convert_to_tensor(cells[start:start + int(batch_size)])
        cam = ops.image.resize(cam[..., None], (height, width), interpolation="bilinear")[..., 0]
        # Normalised after upsampling: bilinear interpolation lowers the peak between cell centres.
        peak = ops.max(cam, axis=(1, 2), keepdims=True)
        cam = ops.where(peak > 0, cam / ops.where(peak > 0, peak, 1.0), 0.0)
        maps.append(np.clip(ops.convert_to_numpy(cam), 0.0, 1.0).astype(np.float32))
    return np.concatenate(maps) if maps else np.zeros((0, height, width), dtype=np.float32)


def lung_share(cams, box: LungBox) -> np.ndarray:
    """Per map of ``cams`` (N, S, S; square, non-negative), the share of its mass inside ``box``:
    1 when all of it lies on the lungs' rectangle, 0 when none does, NaN for an all-zero map.
    Compare with ``box.area_fraction(S)``, the share of a uniform map. Explained in
    notebooks/08_shortcuts.
    """
    cams = np.asarray(cams, dtype=np.float64)
    if cams.ndim == 2:
        cams = cams[None]
    if cams.ndim != 3 or cams.shape[1] != cams.shape[2]:
        raise ValueError(f"cams must be square maps (N, S, S) as grad_cam returns, got shape {cams.shape}")
    if np.any(cams < 0):
        raise ValueError("cams must be non-negative (grad_cam's maps are)")
    total = cams.sum(axis=(1, 2))
    inside = (cams * box.mask(cams.shape[1])).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


BELOW, EVEN, ABOVE = "below", "even", "above"  # a mean share against the box's share of the image


def share_against_area(shares, area: float, seed: int = 0) -> dict:
    """The mean of per-image ``lung_share`` values with its 95% bootstrap interval over the images
    (``metrics.mean_with_interval``), against ``area``, the share of a map spread evenly:
    ``relation`` is BELOW when the interval lies below ``area``, ABOVE when above it, EVEN when it
    holds it, None without an interval. Explained in notebooks/08_shortcuts."""
    interval = metrics.mean_with_interval(shares, seed=seed)
    low, high = interval["low"], interval["high"]
    relation = None
    if np.isfinite(low) and np.isfinite(high):
        relation = BELOW if high < area else ABOVE if low > area else EVEN
    return {"mean_lung_share": interval["mean"], "share_low": low, "share_high": high,
            "share_method": interval["method"], "box_area_share": float(area), "relation": relation}


def gradcam_examples(predictions, per_group: int = 2, seed: int = 0) -> pd.DataFrame:
    """Test images for a Grad-CAM grid: up to ``per_group`` of each cell of true class (COVID,
    Normal) x prediction (correct, wrong), drawn with ``seed``, COVID first, correct first; a cell
    with fewer images gives what it has.

    ``predictions``: a table with columns path, label (1 COVID) and probability (P(COVID)), as a
    model's predictions.csv; or a dict of model name -> such tables on the same images (as
    ``evaluation.load_predictions`` returns): the first model's predictions define the groups, and
    every model's probability is added as a column "p_<name>" (what ``plot_gradcam_grid`` shows).

    Returns the chosen rows with added columns true_class, predicted (1 COVID), correct and group
    ("COVID, correct", ...); ``attrs["grouped_by"]`` names the model that set the groups (None for
    a single table). Explained in notebooks/08_shortcuts.
    """
    if int(per_group) != per_group or per_group < 1:
        raise ValueError(f"per_group must be a positive whole number, got {per_group}")
    tables = predictions if isinstance(predictions, dict) else {None: predictions}
    if not tables:
        raise ValueError("predictions is an empty dict; pass model name -> predictions table")
    for name, table in tables.items():
        what = "predictions" if name is None else f"predictions[{name!r}]"
        require_columns(table, EXAMPLE_COLUMNS, what, error=ValueError,
                        not_a_table="{what} must be a pandas DataFrame", fix="it has {columns}",
                        quote=True, empty="{what} is empty; there is nothing to choose from")
    table = next(iter(tables.values())).reset_index(drop=True).copy()
    if None not in tables:
        for name, other in tables.items():
            by_path = other.drop_duplicates("path").set_index("path")["probability"]
            missing = ~table["path"].isin(by_path.index)
            if missing.any():
                raise ValueError(f"predictions[{name!r}] lacks {int(missing.sum())} of the first model's "
                                 f"images (e.g. {table.loc[missing, 'path'].iloc[0]}); pass tables of "
                                 "the same test images")
            table[f"p_{name}"] = table["path"].map(by_path).to_numpy()
    table["predicted"] = labels_from_probabilities(table["probability"])
    table["true_class"] = table["label"].map(CLASS_NAMES)
    table["correct"] = table["predicted"] == table["label"]
    chosen = []
    for class_name in PAPER_ORDER:
        for correct in (True, False):
            cell = table[(table["label"] == CLASSES[class_name]) & (table["correct"] == correct)]
            picked = cell.sample(n=min(int(per_group), len(cell)), random_state=seed)
            chosen.append(picked.assign(group=f"{class_name}, {'correct' if correct else 'wrong'}"))
    chosen = pd.concat(chosen, ignore_index=True)
    chosen.attrs["grouped_by"] = next(iter(tables))
    return chosen


def plot_gradcam_grid(images, cams_by_model: dict, rows: pd.DataFrame, box: LungBox | None = None, path=None):
    """One row per example image: the X-ray, then each model's Grad-CAM map laid over it (jet,
    red = most weight), titled with its P(COVID) and, given ``box``, its share inside the dashed box.

    ``images``: (N, H, W[, C]) in [0, 1], the rows' images in order; ``cams_by_model``: model name
    -> (N, H, W) maps from ``grad_cam``; ``rows``: N rows with label and, per model, its P(COVID)
    in "p_<name>" (``gradcam_examples`` adds these from a dict of predictions) or, for a single
    model, in probability. Returns the figure, saved as PNG to ``path`` when given. Explained in
    notebooks/08_shortcuts.
    """
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    from cxr_utils.plots import PAGE_WIDTH_IN, finish_figure  # matplotlib: only when the figure is drawn

    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]  # the three channels are identical grey copies
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"images must be (N, H, W[, C]) with N >= 1, got shape {np.asarray(images).shape}")
    if not cams_by_model:
        raise ValueError("cams_by_model is empty; pass model name -> grad_cam maps")
    if not isinstance(rows, pd.DataFrame) or "label" not in rows.columns or len(rows) != len(images):
        raise ValueError(f"rows must be a table with a label column and one row per image ({len(images)}); "
                         "pass what gradcam_examples returns")
    probabilities = {}
    for name, cams in cams_by_model.items():
        if np.shape(cams) != images.shape:
            raise ValueError(f"cams_by_model[{name!r}] has shape {np.shape(cams)}, the images {images.shape}")
        column = f"p_{name}"
        if column not in rows.columns:
            if len(cams_by_model) > 1 or "probability" not in rows.columns:
                raise ValueError(f"rows has no column {column!r}: add each model's P(COVID) as p_<name>, "
                                 "or pass gradcam_examples a dict of predictions")
            column = "probability"
        probabilities[name] = rows[column].to_numpy(dtype=float)
    shares = {name: lung_share(cams, box) for name, cams in cams_by_model.items()} if box is not None else {}

    n_rows, n_cols = len(images), 1 + len(cams_by_model)
    panel = PAGE_WIDTH_IN / n_cols
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(PAGE_WIDTH_IN, panel * 1.12 * n_rows + 0.8),
                                squeeze=False, layout="constrained")
    labels = rows["label"].to_numpy()
    correct = rows["correct"].to_numpy() if "correct" in rows.columns else [None] * n_rows
    grouped_by = rows.attrs.get("grouped_by")
    if box is not None:
        row0, row1, col0, col1 = box.pixels(images.shape[1])
    for i in range(n_rows):
        true_class = CLASS_NAMES.get(int(labels[i]), str(labels[i]))
        axes[i, 0].imshow(images[i], cmap="gray", vmin=0, vmax=1)
        verdict = "" if correct[i] is None else ("correct" if correct[i] else "wrong")
        if verdict and grouped_by:
            verdict = f"{grouped_by}: {verdict}"
        axes[i, 0].set_title(f"true: {true_class}" + (f"\n({verdict})" if verdict else ""))
        for ax, (name, cams) in zip(axes[i, 1:], cams_by_model.items()):
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=1)
            ax.imshow(cams[i], cmap=COLORMAP, alpha=OVERLAY_ALPHA, vmin=0, vmax=1)
            title = f"{name}\nP(COVID) = {probabilities[name][i]:.2f}"
            if box is not None:
                share = shares[name][i]
                title += "\nin box: " + ("no map" if np.isnan(share) else f"{share:.0%}")
            ax.set_title(title)
        for ax in axes[i]:
            if box is not None:
                ax.add_patch(Rectangle((col0 - 0.5, row0 - 0.5), col1 - col0, row1 - row0, fill=False,
                                       edgecolor="white", linestyle="--", linewidth=1.2))
            ax.set(xticks=[], yticks=[])
    colorbar = figure.colorbar(ScalarMappable(Normalize(0, 1), cmap=COLORMAP), ax=axes[-1, :].tolist(),
                               orientation="horizontal", fraction=0.5 / n_rows, aspect=40)
    colorbar.set_label("Grad-CAM weight (each map scaled to its maximum)")
    return finish_figure(figure, path)
