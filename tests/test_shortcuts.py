"""What the models look at (cxr_utils.shortcuts): the lung box blanks exactly its rectangle of
real images, bad boxes are refused, and chapter 8's summary says what its numbers show and no
more."""

import numpy as np
import pandas as pd
import pytest

from cxr_utils import baselines, data
from cxr_utils.shortcuts import ABOVE, BELOW, NO_INTERVAL, UNCLEAR, LungBox, chance_verdict, shortcut_summary


@pytest.fixture(scope="module")
def images(real_manifest):
    rows = data.sample_balanced(real_manifest, n_per_class=3, seed=2)
    return data.load_images(rows, image_size=64, progress=False)


# -- the lung box ------------------------------------------------------------------------------------


@pytest.mark.parametrize("box", [LungBox(), LungBox(top=0.3, left=0.05, height=0.5, width=0.2, fill=0.7)])
def test_blank_sets_exactly_the_rectangle_and_leaves_the_input_alone(images, box):
    before = images.copy()
    blanked = box.blank(images)
    np.testing.assert_array_equal(images, before)  # the input is never modified
    row0, row1, col0, col1 = box.pixels(images.shape[1])
    inside = np.zeros(images.shape[:3], dtype=bool)
    inside[:, row0:row1, col0:col1] = True
    assert (blanked[inside] == np.float32(box.fill)).all()
    np.testing.assert_array_equal(blanked[~inside], images[~inside])
    # Real X-rays are not constant there: blanking changed something.
    assert not np.array_equal(blanked[inside], images[inside])
    grey = box.blank(images[..., 0])  # (N, H, W) works too
    np.testing.assert_array_equal(grey, blanked[..., 0])


@pytest.mark.parametrize("size", [32, 64, 224])
def test_pixels_mask_and_area_agree(size):
    box = LungBox()
    row0, row1, col0, col1 = box.pixels(size)
    mask = box.mask(size)
    assert mask.shape == (size, size) and mask.sum() == (row1 - row0) * (col1 - col0)
    assert mask[row0:row1, col0:col1].all()
    assert box.area_fraction(size) == pytest.approx(mask.mean())
    assert box.area_fraction(size) == pytest.approx(box.height * box.width, abs=2 / size)
    assert LungBox(top=0, left=0, height=1, width=1).pixels(size) == (0, size, 0, size)


@pytest.mark.parametrize("fields", [
    {"top": -0.1}, {"fill": 2}, {"height": 0}, {"width": 0.0}, {"top": 0.5, "height": 0.6},
    {"left": 0.3, "width": 0.8}, {"top": "0.1"},
])
def test_bad_boxes_are_refused(fields):
    with pytest.raises(ValueError, match="LungBox"):
        LungBox(**fields)


def test_blank_refuses_images_that_are_not_square(images):
    with pytest.raises(ValueError, match="square"):
        LungBox().blank(images[:, :, :40])
    with pytest.raises(ValueError, match="square"):
        LungBox().blank(images[0, ..., 0])


def test_the_key_names_the_box():
    assert LungBox().key != LungBox(fill=0.5).key
    assert LungBox().key == LungBox().key


# -- the summary ---------------------------------------------------------------------------------------


def _interval_text(value, low, high):
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def _baselines(border=(0.80, 0.76, 0.84), others=(0.55, 0.45, 0.65), n=300):
    """A baselines table shaped like fit_baselines': ``border`` and the other two baselines'
    (accuracy, low, high) on the extended set; the test set one step lower."""
    rows = []
    for name in baselines.FEATURE_SETS:
        value, low, high = border if name == "border" else others
        for test_set, shift, size in (("test", -0.02, 100), ("extended", 0.0, n)):
            rows.append({"baseline": name, "description": baselines.describe(name), "features": 1,
                         "test_set": test_set, "n": size, "accuracy": value + shift, "accuracy_low": low + shift,
                         "accuracy_high": high + shift, "auc": value, "auc_low": low, "auc_high": high})
    return pd.DataFrame(rows)


def _blanked(blanked_lstm=(0.82, 0.73, 0.88)):
    """blanked_results' shape: LSTM complete, ResNet50 without its blanked run."""
    value, low, high = blanked_lstm
    return pd.DataFrame([
        {"model": "ResNet50", "model_id": "resnet50", "status": "blanked missing", "n": 100,
         "intact_accuracy": 0.95, "intact_accuracy_low": 0.89, "intact_accuracy_high": 0.98},
        {"model": "LSTM", "model_id": "lstm", "status": "complete", "n": 100, "intact_accuracy": 0.70,
         "intact_accuracy_low": 0.60, "intact_accuracy_high": 0.78, "blanked_accuracy": value,
         "blanked_accuracy_low": low, "blanked_accuracy_high": high, "accuracy_difference": value - 0.70,
         "mcnemar_p": 0.04},
    ])


def test_chance_verdicts():
    assert chance_verdict(0.51, 0.7) == ABOVE
    assert chance_verdict(0.2, 0.49) == BELOW
    assert chance_verdict(0.45, 0.55) == chance_verdict(0.5, 0.6) == UNCLEAR
    assert chance_verdict(np.nan, np.nan) == NO_INTERVAL


def test_a_border_baseline_above_chance_is_said_to_score_without_the_lungs():
    table = _baselines()
    text = shortcut_summary(table, _blanked())
    border = table[(table["baseline"] == "border") & (table["test_set"] == "extended")].iloc[0]
    assert _interval_text(border["accuracy"], border["accuracy_low"], border["accuracy_high"]) in text
    assert "scores above chance without seeing the lungs" in text
    assert "the images carry class information outside the lungs" in text
    assert "is a hypothesis" in text  # using that information is not shown by the baseline
    # The other baselines' intervals include 0.5.
    assert text.count("not distinguishable from chance (its interval includes 0.5)") == 2
    # Both references, with their DOIs.
    assert "https://doi.org/10.1038/s42256-021-00338-7" in text
    assert "https://doi.org/10.1016/j.inffus.2021.04.008" in text


def _pairs():
    """shortcut_run.baseline_pairs' shape: ResNet50 right alone on many more images than the border
    baseline, the LSTM on about as many."""
    return pd.DataFrame([
        {"model": "ResNet50", "model_only": 20, "baseline_only": 3, "p_value": 0.0003, "accuracy": 0.95,
         "accuracy_low": 0.89, "accuracy_high": 0.98},
        {"model": "LSTM", "model_only": 9, "baseline_only": 7, "p_value": 0.8, "accuracy": 0.70,
         "accuracy_low": 0.60, "accuracy_high": 0.78},
    ])


def test_the_models_are_compared_with_the_border_baseline_paired_on_the_same_test_images():
    table = _baselines()
    text = shortcut_summary(table, _blanked(), baseline_pairs=_pairs())
    border_test = table[(table["baseline"] == "border") & (table["test_set"] == "test")].iloc[0]
    assert _interval_text(border_test["accuracy"], border_test["accuracy_low"], border_test["accuracy_high"]) in text
    assert (f"ResNet50 {_interval_text(0.95, 0.89, 0.98)} (only the model right on 20 images, only the baseline on 3, "
            "McNemar p = 3.0e-04: the model is right significantly more often)") in text
    assert "only the baseline on 7, McNemar p = 0.8: not told apart" in text
    assert "overlap" not in text  # unpaired intervals are never the comparison
    assert "paired image by image" not in shortcut_summary(table, _blanked())  # no pairs: no comparison


def test_the_baselines_that_see_the_lungs_are_named():
    text = shortcut_summary(_baselines(), None)
    assert "The border baseline never sees the lungs; the histogram and thumbnail baselines see them" in text
    assert "crude" not in text and "cannot read a lung pattern" not in text


def test_the_summary_says_how_many_training_images_the_baselines_were_fitted_on():
    assert "fitted on the run's training images" in shortcut_summary(_baselines(), None)  # a table without n_train
    assert "fitted on the run's 1,600 training images" in shortcut_summary(_baselines().assign(n_train=1600), None)


def test_a_border_baseline_at_chance_claims_nothing_about_the_border():
    text = shortcut_summary(_baselines(border=(0.52, 0.46, 0.58)), None)
    assert "without seeing the lungs" not in text
    assert "carry class information outside the lungs" not in text
    assert "does not rule out other shortcuts" in text
    assert "No lungs-blanked runs yet" in text
    assert "remains a hypothesis: no Grad-CAM shares were given" in text


def test_missing_tables_are_named_not_guessed():
    text = shortcut_summary(None, None)
    assert "No baselines yet" in text and "No lungs-blanked runs yet" in text
    assert "above chance" not in text and "outside the lungs: the two classes" not in text


def test_tables_read_back_from_csv_give_the_same_summary(tmp_path):
    baselines_path, blanked_path = tmp_path / "baselines.csv", tmp_path / "blanked.csv"
    _baselines().to_csv(baselines_path, index=False)
    _blanked().to_csv(blanked_path, index=False)
    assert shortcut_summary(pd.read_csv(baselines_path), pd.read_csv(blanked_path)) == \
        shortcut_summary(_baselines(), _blanked())


def test_blanked_accuracy_is_reported_with_what_survives_and_the_missing_models():
    blanked = _blanked()
    text = shortcut_summary(_baselines(), blanked)
    lstm = blanked.iloc[1]
    assert _interval_text(lstm["blanked_accuracy"], lstm["blanked_accuracy_low"], lstm["blanked_accuracy_high"]) in text
    assert f"difference {lstm['accuracy_difference']:+.2f}" in text
    kept = (lstm["blanked_accuracy"] - 0.5) / (lstm["intact_accuracy"] - 0.5)
    assert f"keeps {kept:.0%} of its intact margin above chance" in text
    assert "it still scores above chance" in text
    assert "not what the intact models rely on" in text
    assert "Not yet trained with the lungs blanked: ResNet50" in text
    at_chance = shortcut_summary(_baselines(), _blanked(blanked_lstm=(0.55, 0.45, 0.64)))
    assert "Without the lungs it is not distinguishable from chance" in at_chance
    assert "still scores above chance" not in at_chance


def test_an_intact_model_at_chance_gets_no_reading_of_its_blanked_run():
    blanked = _blanked()
    blanked.loc[1, ["intact_accuracy", "intact_accuracy_low", "intact_accuracy_high"]] = [0.55, 0.45, 0.65]
    text = shortcut_summary(_baselines(), blanked)
    assert "Intact it is at chance: nothing to read" in text
    assert "intact margin" not in text and "still scores above chance. " not in text.split("LSTM**")[1].split("\n")[0]


def _gradcam(share=(0.30, 0.25, 0.35), accuracy=(0.85, 0.77, 0.91), relation="below", area=0.53):
    value, low, high = share
    acc, acc_low, acc_high = accuracy
    return pd.DataFrame([{"model": "ResNet50", "n": 100, "mean_lung_share": value, "share_low": low,
                          "share_high": high, "box_area_share": area, "relation": relation, "accuracy": acc,
                          "accuracy_low": acc_low, "accuracy_high": acc_high}])


def test_grad_cam_shares_come_with_an_interval_against_the_area_of_the_box():
    text = shortcut_summary(_baselines(), _blanked(), _gradcam())
    assert "on average 0.30 [0.25, 0.35] of its Grad-CAM mass lies inside the lung box" in text
    assert "below the 53% of the image the box covers" in text
    assert "consistent with the hypothesis" in text and "does not show it" in text
    assert "supports" not in text
    even = shortcut_summary(_baselines(), _blanked(), _gradcam(share=(0.5, 0.4, 0.6), relation="even"))
    assert "not told apart from the 53% of the image" in even and "remains a hypothesis" in even
    above = shortcut_summary(_baselines(), _blanked(), _gradcam(share=(0.8, 0.7, 0.9), relation="above"))
    assert "above the 53% of the image" in above and "consistent with the hypothesis" not in above


def test_grad_cam_of_a_model_at_chance_is_not_read():
    text = shortcut_summary(_baselines(), None, _gradcam(share=(0.03, 0.01, 0.05), accuracy=(0.5, 0.25, 0.75)))
    assert "is at chance: nothing to read" in text
    assert "consistent with the hypothesis" not in text and "below the 53%" not in text


def test_the_limits_of_a_fixed_box_are_stated_from_its_numbers():
    text = shortcut_summary(_baselines(), None, box=LungBox(), image_size=224)
    limits = text.split("### What a fixed box cannot tell")[1]
    assert "12% from the top, 12% from the left, 70% high and 76% wide: 53% of the image" in limits
    assert "heart, the mediastinum and the diaphragm" in limits
    assert "7 x 7 cells of 32 px each for 224 px images" in limits


def test_grad_cam_shares_outside_0_to_1_are_refused():
    for share in (1.5, -0.1):
        with pytest.raises(ValueError, match="must be a share in"):
            shortcut_summary(_baselines(), None, _gradcam(share=(share, share, share)))


def test_all_zero_grad_cam_maps_give_no_share_and_say_so():
    # grad_cam's maps are all zero where nothing raises the score (the mean share is then NaN).
    text = shortcut_summary(_baselines(), None, _gradcam(share=(np.nan, np.nan, np.nan), relation=None))
    assert "ResNet50**: every Grad-CAM map is zero" in text and "of its Grad-CAM mass lies" not in text
