"""The trivial baselines of chapter 8 (cxr_utils.baselines) on real chest X-rays: features that
hold what they say (the border, never the lungs; histograms that sum to 1), a scored table with
the project's intervals, and clear errors for impossible parameters."""

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from cxr_utils import baselines, data, extended_set
from cxr_utils.shortcuts import LungBox

SMALL = 64  # px: decoding and shrinking stay fast; the thumbnail is still 32 px


@pytest.fixture(scope="module")
def small_split(real_manifest):
    return data.split_dataset(data.sample_balanced(real_manifest, n_per_class=20, seed=5), seed=5)


@pytest.fixture(scope="module")
def extended_rows(real_manifest, small_split):
    return extended_set.extended_test_set(real_manifest, small_split, max_images=40, seed=5)


@pytest.fixture(scope="module")
def table(small_split, extended_rows, tmp_path_factory):
    return baselines.fit_baselines(small_split, extended_rows, image_size=SMALL,
                                   cache_dir=tmp_path_factory.mktemp("cache"), seed=0)[0]


@pytest.fixture(scope="module")
def images(small_split):
    """Ten real test images as the models get them, at the protocol's size."""
    return data.load_images(small_split[small_split["split"] == "test"].head(10), progress=False)


def test_each_baseline_is_scored_on_both_test_sets_with_the_projects_intervals(table, small_split, extended_rows):
    assert list(table["baseline"].unique()) == list(baselines.FEATURE_SETS)
    sizes = {"test": int((small_split["split"] == "test").sum()), "extended": len(extended_rows)}
    for row in table.itertuples():
        assert row.n == sizes[row.test_set] and row.n_train == (small_split["split"] == "train").sum()
        assert np.isfinite(row.accuracy) and 0 <= row.accuracy <= 1
        # A proportion of the test images, with metrics' Wilson interval around it.
        correct = round(row.accuracy * row.n)
        assert row.accuracy == pytest.approx(correct / row.n)
        low, high = proportion_confint(correct, row.n, alpha=0.05, method="wilson")
        assert (row.accuracy_low, row.accuracy_high) == pytest.approx((low, high))
        assert np.isfinite(row.auc) and 0 <= row.auc <= 1
        assert row.converged
    border = table[table["baseline"] == "border"]
    assert set(border["test_set"]) == {"test", "extended"}
    assert (border["features"] == baselines.border_mask().sum()).all()


def test_without_an_extended_set_only_the_test_set_is_scored(small_split):
    small, _ = baselines.fit_baselines(small_split, None, image_size=SMALL, thumbnail_size=16, border_width=1,
                                       histogram_bins=8)
    assert set(small["test_set"]) == {"test"} and len(small) == len(baselines.FEATURE_SETS)


def test_border_features_hold_only_border_pixels(images):
    size, width = 32, 2
    mask = baselines.border_mask(size, width)
    assert mask.sum() == size * size - (size - 2 * width) ** 2
    assert not mask[width:-width, width:-width].any() and mask[:width].all() and mask[:, -width:].all()
    features = baselines.image_features(images, thumbnail_size=size, border_width=width)
    thumbnails = features["thumbnail"].reshape(len(images), size, size)
    np.testing.assert_array_equal(features["border"], thumbnails[:, mask])
    # Spoil every interior pixel of the thumbnails: what the mask picks is untouched.
    spoiled = thumbnails.copy()
    spoiled[:, width:-width, width:-width] = np.nan
    assert np.isfinite(spoiled[:, mask]).all()


def test_border_features_never_see_the_lung_box(images):
    """Blanking the default lung box leaves every border feature as it was (the bilinear filter
    reaches the outer 8% of the image only); the whole thumbnail does change."""
    intact = baselines.image_features(images)
    blanked = baselines.image_features(LungBox().blank(images))
    np.testing.assert_array_equal(intact["border"], blanked["border"])
    assert not np.array_equal(intact["thumbnail"], blanked["thumbnail"])


def test_histograms_sum_to_one_and_count_the_grey_levels(images):
    histogram = baselines.image_features(images, histogram_bins=32)["histogram"]
    assert histogram.shape == (len(images), 32) and (histogram >= 0).all()
    np.testing.assert_allclose(histogram.sum(axis=1), 1.0)
    levels = np.rint(images[..., 0] * 255)
    for row, grey in zip(histogram, levels):
        counts, _ = np.histogram(grey, bins=32, range=(0, 256))
        np.testing.assert_allclose(row, counts / grey.size)


def test_streaming_in_chunks_gives_the_same_features(small_split):
    rows = small_split[small_split["split"] == "val"]
    whole = baselines.baseline_features(rows, image_size=SMALL)
    chunked = baselines.baseline_features(rows, image_size=SMALL, chunk_size=3)
    for name in baselines.FEATURE_SETS:
        np.testing.assert_array_equal(whole[name], chunked[name])


@pytest.mark.parametrize("options, message", [
    ({"thumbnail_size": 8, "border_width": 4}, "leaves no interior"),
    ({"thumbnail_size": 32, "border_width": 16}, "leaves no interior"),
    ({"border_width": 0}, "border_width must be at least 1"),
    ({"histogram_bins": 1}, "histogram_bins must be from 2 to 256"),
    ({"histogram_bins": 300}, "histogram_bins must be from 2 to 256"),
    ({"thumbnail_size": 32.0}, "thumbnail_size must be a whole number"),
    ({"thumbnail_size": True}, "thumbnail_size must be a whole number"),
    ({"thumbnail_size": 128}, "larger than image_size"),
])
def test_bad_parameters_are_refused_before_any_image_is_read(options, message, small_split):
    with pytest.raises(ValueError, match=message):
        baselines.fit_baselines(small_split, None, image_size=SMALL, **options)
    with pytest.raises(ValueError, match=message):
        baselines.baseline_features(small_split.head(2), image_size=SMALL, **options)


def test_a_split_without_both_classes_in_training_is_refused(small_split):
    one_class = small_split[(small_split["split"] != "train") | (small_split["label"] == 1)]
    with pytest.raises(ValueError, match="one class only"):
        baselines.fit_baselines(one_class, None, image_size=SMALL)
    with pytest.raises(ValueError, match="no 'split' column"):
        baselines.fit_baselines(small_split.drop(columns="split"), None, image_size=SMALL)


def test_save_baselines_writes_the_table_under_shortcuts(table, tmp_path):
    path = baselines.save_baselines(tmp_path, table)
    assert path == tmp_path / "shortcuts" / "baselines.csv"
    assert not list(path.parent.glob(".*tmp"))  # no temporary file left behind
    pd.testing.assert_frame_equal(pd.read_csv(path), table, check_dtype=False)


def test_each_images_prediction_is_kept_and_agrees_with_the_table(small_split, extended_rows, tmp_path):
    table, predictions = baselines.fit_baselines(small_split, extended_rows, image_size=SMALL, seed=0)
    refitted, _ = baselines.fit_baselines(small_split, extended_rows, image_size=SMALL, seed=0)
    pd.testing.assert_frame_equal(table, refitted)  # same seed, same numbers
    for row in table.itertuples():
        mine = predictions[(predictions["baseline"] == row.baseline) & (predictions["test_set"] == row.test_set)]
        assert len(mine) == row.n
        assert (mine["predicted"] == mine["label"]).mean() == pytest.approx(row.accuracy)
        assert (mine["predicted"] == (mine["probability"] >= 0.5)).all()
    test_paths = small_split.loc[small_split["split"] == "test", "path"].tolist()
    border_test = predictions[(predictions["baseline"] == "border") & (predictions["test_set"] == "test")]
    assert border_test["path"].tolist() == test_paths
    baselines.save_baselines(tmp_path, table, predictions)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / baselines.PREDICTIONS_CSV), predictions, check_dtype=False)
