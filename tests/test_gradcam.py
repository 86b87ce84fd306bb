"""cxr_utils.gradcam: maps of the right shape and range, computed for the right class at the right
place, on a hand-built model whose answer is known and on the real builders with real X-rays."""

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from keras import layers

from cxr_utils import data, gradcam, models, plots
from cxr_utils.shortcuts import LungBox

SIZE = 64  # px: the real builders' smallest quick input (ResNet50 gives a 2x2x2048 map)
TOY_POOL = 8  # the toy backbone averages 8x8 pixels: a 64 px image gives an 8x8x3 feature map
TOP_LEFT = LungBox(top=0, left=0, height=0.5, width=0.5)
BOTTOM_RIGHT = LungBox(top=0.5, left=0.5, height=0.5, width=0.5)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def toy_model(bias: float = 0.0) -> keras.Model:
    """The real models' layout in miniature: images -> "backbone" (8x8 average pooling: an 8x8x3
    map whose channels keep the image's layout) -> "head" (global average pooling -> Dense
    "p_covid", sigmoid). The logit is mean(channel 0) - mean(channel 1) + bias: channel 0 is
    evidence for COVID, channel 1 for Normal, channel 2 is ignored.

    Grad-CAM weighs whole channels (the spatial mean of their gradients), so a map can point at a
    region only through channels that are active there; the toy images below put channel 0's
    activity in the top-left quadrant and channel 1's in the bottom-right one, so the COVID score
    depends on the top-left region only and the Normal score on the bottom-right one."""
    images = keras.Input((SIZE, SIZE, 3), name="images")
    backbone = keras.Model(images, layers.AveragePooling2D(TOY_POOL, name="pool")(images), name="backbone")
    features = keras.Input(backbone.output_shape[1:], name="features")
    output = layers.Dense(1, activation="sigmoid", name="p_covid")
    head = keras.Model(features, output(layers.GlobalAveragePooling2D(name="gap")(features)), name="head")
    output.set_weights([np.array([[1.0], [-1.0], [0.0]], dtype="float32"), np.array([bias], dtype="float32")])
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    return keras.Model(inputs, head(backbone(inputs)), name="toy")


def toy_images() -> np.ndarray:
    """Image 0: strong channel 0 top left, weak channel 1 bottom right (the model says COVID).
    Image 1: the strengths swapped (it says Normal). Channel 2 is a flat grey everywhere."""
    images = np.zeros((2, SIZE, SIZE, 3), dtype="float32")
    half = SIZE // 2
    images[0, :half, :half, 0], images[0, half:, half:, 1] = 1.0, 0.5
    images[1, :half, :half, 0], images[1, half:, half:, 1] = 0.5, 1.0
    images[..., 2] = 0.3
    return images


def upsampled_quadrant(top_left: bool) -> np.ndarray:
    """What Grad-CAM must return on the toy: one quadrant of the 8x8 map at 1, the rest 0,
    upsampled bilinearly to the image and scaled to maximum 1."""
    cells = np.zeros((SIZE // TOY_POOL,) * 2, dtype="float32")
    half = cells.shape[0] // 2
    if top_left:
        cells[:half, :half] = 1
    else:
        cells[half:, half:] = 1
    up = keras.ops.convert_to_numpy(keras.ops.image.resize(cells[None, ..., None], (SIZE, SIZE),
                                                           interpolation="bilinear"))[0, ..., 0]
    return up / up.max()


def test_toy_covid_map_is_the_covid_region():
    cams = gradcam.grad_cam(toy_model(), toy_images(), target="covid")
    assert cams.shape == (2, SIZE, SIZE) and cams.dtype == np.float32
    for cam in cams:  # both images: channel 0 (COVID evidence) sits top left
        np.testing.assert_allclose(cam, upsampled_quadrant(top_left=True), atol=1e-5)
    assert np.all(gradcam.lung_share(cams, TOP_LEFT) > 0.9)
    assert np.all(gradcam.lung_share(cams, BOTTOM_RIGHT) < 0.01)  # bilinear bleed only


def test_toy_normal_map_is_the_normal_region():
    covid = gradcam.grad_cam(toy_model(), toy_images(), target="covid")
    normal = gradcam.grad_cam(toy_model(), toy_images(), target="normal")
    for cam in normal:
        np.testing.assert_allclose(cam, upsampled_quadrant(top_left=False), atol=1e-5)
    assert np.all(gradcam.lung_share(normal, BOTTOM_RIGHT) > 0.9)
    assert not np.allclose(covid, normal)


def test_predicted_target_explains_each_image_s_own_prediction():
    model, images = toy_model(), toy_images()
    probabilities = keras.ops.convert_to_numpy(model(images, training=False))[:, 0]
    assert probabilities[0] > 0.5 > probabilities[1]  # the toy's premise
    predicted = gradcam.grad_cam(model, images)  # "predicted" is the default
    covid = gradcam.grad_cam(model, images, target="covid")
    normal = gradcam.grad_cam(model, images, target="normal")
    np.testing.assert_array_equal(predicted[0], covid[0])
    np.testing.assert_array_equal(predicted[1], normal[1])
    np.testing.assert_allclose(predicted, [upsampled_quadrant(top_left=True), upsampled_quadrant(top_left=False)],
                               atol=1e-5)  # image 0's COVID evidence, image 1's Normal evidence


def test_score_is_the_logit_so_saturated_probabilities_still_give_maps():
    # A bias of 60 makes P(COVID) exactly 1.0 in float32: the sigmoid's gradient there is 0, so a
    # map computed from the probability would be all zero. The logit's gradient ignores the bias.
    saturated = toy_model(bias=60.0)
    assert np.all(keras.ops.convert_to_numpy(saturated(toy_images(), training=False)) == 1.0)
    for target in ("covid", "normal"):
        np.testing.assert_allclose(gradcam.grad_cam(saturated, toy_images(), target=target),
                                   gradcam.grad_cam(toy_model(), toy_images(), target=target), atol=1e-6)


def test_batches_do_not_change_the_maps():
    images = np.concatenate([toy_images()] * 3)
    whole = gradcam.grad_cam(toy_model(), images, batch_size=16)
    np.testing.assert_allclose(gradcam.grad_cam(toy_model(), images, batch_size=4), whole, atol=1e-6)
    assert gradcam.grad_cam(toy_model(), images[:0]).shape == (0, SIZE, SIZE)


def test_map_with_no_positive_evidence_is_all_zero():
    images = toy_images()
    images[..., 1] = 0  # no Normal evidence anywhere: the Normal map's ReLU leaves nothing
    normal = gradcam.grad_cam(toy_model(), images, target="normal")
    assert np.all(normal == 0)
    assert np.all(np.isnan(gradcam.lung_share(normal, TOP_LEFT)))
    assert np.isnan(gradcam.share_against_area(gradcam.lung_share(normal, TOP_LEFT), 0.25)["mean_lung_share"])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="target"):
        gradcam.grad_cam(toy_model(), toy_images(), target="COVID-19")
    with pytest.raises(ValueError, match="batch_size"):
        gradcam.grad_cam(toy_model(), toy_images(), batch_size=0)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        gradcam.grad_cam(toy_model(), toy_images()[0])


def test_lstm_has_no_feature_map():
    with pytest.raises(ValueError, match="'lstm'.*convolutional feature map"):
        gradcam.grad_cam(models.build_lstm(input_shape=(16, 16, 3)), np.zeros((1, 16, 16, 3), "float32"))


def test_model_without_p_covid_head_is_refused():
    images = keras.Input((SIZE, SIZE, 3))
    backbone = keras.Model(images, layers.AveragePooling2D(TOY_POOL)(images), name="backbone")
    model = keras.Model(images, layers.Dense(1, name="score")(layers.Flatten()(backbone(images))), name="other")
    with pytest.raises(ValueError, match="'other'.*p_covid"):
        gradcam.grad_cam(model, toy_images())


def test_lung_share_inside_outside_and_mean():
    box = LungBox(top=0.25, left=0.25, height=0.5, width=0.5)
    inside, outside, half = (np.zeros((SIZE, SIZE)) for _ in range(3))
    inside[24:40, 24:40] = 1  # within rows and columns 16-47
    outside[:8, :] = 0.7
    half[24:40, 24:40], half[:8, :16] = 1, 1  # 256 pixels in, 128 out
    zero = np.zeros((SIZE, SIZE))
    shares = gradcam.lung_share(np.stack([inside, outside, half, zero]), box)
    np.testing.assert_allclose(shares[:3], [1.0, 0.0, 256 / 384])
    assert np.isnan(shares[3])
    assert gradcam.share_against_area(gradcam.lung_share(np.stack([inside, outside, zero]), box), 0.5)[
        "mean_lung_share"] == pytest.approx(0.5)  # the all-zero map left out
    uniform = np.ones((1, SIZE, SIZE))  # a uniform map's share is the box's area
    assert gradcam.lung_share(uniform, box)[0] == pytest.approx(box.area_fraction(SIZE))
    with pytest.raises(ValueError, match="square"):
        gradcam.lung_share(np.ones((1, 8, 9)), box)


@pytest.fixture(scope="module")
def real_images(real_data):
    """Two real X-rays at SIZE px, one of each class."""
    layout = data.find_dataset(real_data)
    paths = [data.layout.image_files(layout.class_dirs[name])[0] for name in ("COVID", "Normal")]
    return data.load_images(paths, image_size=SIZE, progress=False)


@pytest.mark.parametrize("builder", [models.build_resnet50, models.build_resnet50_lstm])
def test_real_builders_on_real_images(builder, real_images):
    keras.utils.set_random_seed(0)
    model = builder(weights=None, input_shape=(SIZE, SIZE, 3))
    maps = {target: gradcam.grad_cam(model, real_images, target=target)
            for target in gradcam.TARGETS}
    for cams in maps.values():
        assert cams.shape == (len(real_images), SIZE, SIZE)
        assert cams.min() >= 0 and cams.max() <= 1
        for cam in cams:  # each map peaks at 1 unless it is all zero
            assert cam.max() == pytest.approx(1.0) or not cam.any()
    assert any(cam.any() for cams in maps.values() for cam in cams)
    assert not np.allclose(maps["covid"], maps["normal"])
    covid_predicted = keras.ops.convert_to_numpy(model(real_images, training=False))[:, 0] >= 0.5
    for i, is_covid in enumerate(covid_predicted):
        np.testing.assert_allclose(maps["predicted"][i], maps["covid" if is_covid else "normal"][i], atol=1e-6)


def predictions_table(n_per_cell: int = 5) -> pd.DataFrame:
    """A model's predictions with n_per_cell images in each of the four groups."""
    rows = []
    for label, probability, group in ((1, 0.9, "COVID correct"), (1, 0.2, "COVID wrong"),
                                      (0, 0.1, "Normal correct"), (0, 0.7, "Normal wrong")):
        for i in range(n_per_cell):
            rows.append({"path": f"{group.replace(' ', '-')}-{i}.png", "label": label, "probability": probability})
    return pd.DataFrame(rows)


def test_examples_pick_from_every_group_seeded():
    table = predictions_table()
    chosen = gradcam.gradcam_examples(table, per_group=2, seed=1)
    assert list(chosen["group"]) == ["COVID, correct"] * 2 + ["COVID, wrong"] * 2 + \
        ["Normal, correct"] * 2 + ["Normal, wrong"] * 2
    for group, part in chosen.groupby("group"):
        class_name, verdict = group.split(", ")
        assert all(part["true_class"] == class_name)
        assert all(part["correct"] == (verdict == "correct"))
        assert all(part["path"].str.startswith(f"{class_name}-{verdict}"))
    assert chosen.equals(gradcam.gradcam_examples(table, per_group=2, seed=1))
    picks = {tuple(gradcam.gradcam_examples(table, per_group=2, seed=s)["path"]) for s in range(5)}
    assert len(picks) > 1  # the seed chooses


def test_examples_take_what_a_small_group_has():
    table = predictions_table()
    normal_wrong = (table["label"] == 0) & (table["probability"] > 0.5)
    covid_wrong = (table["label"] == 1) & (table["probability"] < 0.5)
    table = table[~normal_wrong & ~(covid_wrong & (table["path"] != "COVID-wrong-0.png"))]
    chosen = gradcam.gradcam_examples(table, per_group=3)
    assert chosen["group"].value_counts().to_dict() == {"COVID, correct": 3, "COVID, wrong": 1, "Normal, correct": 3}


def test_examples_from_several_models_carry_each_probability():
    first = predictions_table(3)
    second = first.assign(probability=1 - first["probability"]).iloc[::-1]  # other row order
    chosen = gradcam.gradcam_examples({"ResNet50": first, "ResNet50-LSTM": second}, per_group=1)
    assert len(chosen) == 4 and chosen.attrs["grouped_by"] == "ResNet50"
    np.testing.assert_allclose(chosen["p_ResNet50"], chosen["probability"])
    np.testing.assert_allclose(chosen["p_ResNet50-LSTM"], 1 - chosen["probability"])
    with pytest.raises(ValueError, match="lacks 1"):
        gradcam.gradcam_examples({"a": first, "b": second.iloc[1:]})
    with pytest.raises(ValueError, match="'probability'"):
        gradcam.gradcam_examples(first.drop(columns="probability"))


def test_grid_one_row_per_image_readable_and_saved(tmp_path):
    images = np.concatenate([toy_images()] * 2)
    rows = gradcam.gradcam_examples({"toy": predictions_table(1), "toy again": predictions_table(1)})
    cams = {"toy": gradcam.grad_cam(toy_model(), images, target="covid"),
            "toy again": gradcam.grad_cam(toy_model(), images, target="normal")}
    box = LungBox()
    path = tmp_path / "figures" / "gradcam.png"
    figure = gradcam.plot_gradcam_grid(images, cams, rows, box=box, path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image_axes = [ax for ax in figure.axes if ax.images]
    assert len(image_axes) == len(rows) * 3  # the image, then one map per model
    titles = [ax.get_title() for ax in image_axes]
    assert titles[0] == "true: COVID\n(toy: correct)" and titles[-3] == "true: Normal\n(toy: wrong)"
    assert "toy\nP(COVID) = 0.90" in titles[1] and "toy again\nP(COVID) = 0.90" in titles[2]
    share = gradcam.lung_share(cams["toy"][:1], box)[0]
    assert f"in box: {share:.0%}" in titles[1]
    assert all(len(ax.patches) == 1 for ax in image_axes)  # the lung box on every panel
    assert figure.get_figwidth() == pytest.approx(plots.PAGE_WIDTH_IN)
    assert plots.smallest_shown_points(figure) >= plots.MIN_POINTS


def test_grid_refuses_mismatched_input():
    images = toy_images()
    cams = {"toy": gradcam.grad_cam(toy_model(), images)}
    rows = pd.DataFrame({"label": [1, 0], "probability": [0.8, 0.3]})
    gradcam.plot_gradcam_grid(images, cams, rows)  # a single model may use "probability"
    with pytest.raises(ValueError, match="shape"):
        gradcam.plot_gradcam_grid(images, {"toy": cams["toy"][:1]}, rows)
    with pytest.raises(ValueError, match="'p_toy'"):
        gradcam.plot_gradcam_grid(images, {**cams, "other": cams["toy"]}, rows)
    with pytest.raises(ValueError, match="one row per image"):
        gradcam.plot_gradcam_grid(images, cams, rows.iloc[:1])


@pytest.mark.parametrize("centre, expected", [(0.2, "below"), (0.53, "even"), (0.85, "above")])
def test_the_share_inside_the_box_is_set_against_its_area_with_an_interval(centre, expected):
    shares = np.clip(np.random.default_rng(0).normal(centre, 0.1, 60), 0, 1)
    shares[0] = np.nan  # an all-zero map has no share and is left out
    compared = gradcam.share_against_area(shares, 0.53, seed=42)
    assert compared["relation"] == expected
    assert compared["share_low"] < compared["mean_lung_share"] < compared["share_high"]
    assert compared["mean_lung_share"] == pytest.approx(np.nanmean(shares))
    assert "59" not in compared["share_method"] and "seed 42" in compared["share_method"]
    assert gradcam.share_against_area(shares, 0.53, seed=42) == compared  # seeded
    assert gradcam.share_against_area([0.5, 0.5], 0.53)["relation"] is None  # no interval, no relation
