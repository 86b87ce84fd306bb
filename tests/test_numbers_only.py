"""A run continues without its model files: what chapters 6 and 8 need from a model's weights (its
predictions on the extended test set, its Grad-CAM maps of the test images) is written as numbers by
the model's own chapter while the weights are in memory, and is what the later chapters use.
Real X-rays at 32 px, every registry model from scratch for one epoch: the numbers mean nothing."""

import keras
import numpy as np
import pandas as pd
import pytest

from cxr_utils import config, data, experiment, extended_set, gradcam, models, shortcut_run, training
from cxr_utils.shortcuts import LungBox

SIZE = 32


def test_chapters_6_and_8_read_the_numbers_the_model_chapters_wrote(real_manifest, tmp_path):
    folder, cache = tmp_path / "results", tmp_path / "cache"
    folder.mkdir()
    split = data.split_dataset(data.sample_balanced(real_manifest, n_per_class=8, seed=3), seed=3)
    for name, table in (("manifest", real_manifest), ("split", split)):
        data.save_manifest(table, folder / f"{name}.csv")
    rows = extended_set.run_rows(folder, max_images=12, seed=3)
    settings = training.TrainingConfig(epochs=1, batch_size=8, seed=3, progress=False, inference_check_images=0)
    for model_id in config.REGISTRY:
        training.run_experiment(model_id, split, folder, settings, {"weights": None}, cache_dir=cache,
                                image_size=SIZE, extended_rows=rows)

    test = split[split["split"] == "test"].reset_index(drop=True)
    images = data.load_images(test, image_size=SIZE, cache_dir=cache, progress=False)
    expected_predictions, expected_maps = {}, {}
    for model_id, spec in config.REGISTRY.items():
        model = keras.saving.load_model(folder / model_id / "model.keras", safe_mode=True)
        saved = pd.read_csv(folder / model_id / experiment.EXTENDED_PREDICTIONS)
        expected = extended_set.predict_rows(model, rows, {"weights": None}, SIZE, cache)
        np.testing.assert_allclose(saved["probability"], expected["probability"], atol=1e-6)
        assert saved["path"].tolist() == rows["path"].tolist()
        expected_predictions[spec.paper_name] = expected
        cells = folder / model_id / experiment.GRADCAM_CELLS
        assert cells.is_file() == spec.has_backbone  # the LSTM has no feature map
        if spec.has_backbone:  # images by file name: no folder of this machine in a file that is published
            with np.load(cells) as saved:
                assert saved["names"].tolist() == [p.split("/")[-1] for p in split.loc[split["split"] == "test", "path"]]
        if spec.has_backbone:
            expected_maps[spec.paper_name] = gradcam.grad_cam(model, images)
        (folder / model_id / "model.keras").unlink()  # what a later session may not have

    predicted = extended_set.predict_saved_models(folder, rows, image_size=SIZE, cache_dir=cache)
    for name, expected in expected_predictions.items():
        np.testing.assert_allclose(predicted[name]["probability"], expected["probability"], atol=1e-6)
    maps = shortcut_run._gradcam_maps(folder, test, images)
    assert set(maps) == {spec.id for spec in config.REGISTRY.values() if spec.has_backbone}
    for model_id, found in maps.items():
        np.testing.assert_allclose(found, expected_maps[config.model_spec(model_id).paper_name], atol=1e-5)
    shares = shortcut_run.gradcam_for_run(folder, split, LungBox(), image_size=SIZE, cache_dir=cache, seed=3)["shares"]
    assert len(shares) == len(maps)

    # Other images than the saved ones: the saved numbers are not used, and without a model file that is said.
    with pytest.raises(FileNotFoundError, match="model.keras is missing"):
        extended_set.predict_saved_models(folder, rows.iloc[::-1].reset_index(drop=True), image_size=SIZE)


def test_grad_cam_is_its_cells_upsampled_and_the_cells_come_from_features_too(real_manifest):
    rows = data.sample_balanced(real_manifest, n_per_class=3, seed=1)
    images = data.load_images(rows, image_size=SIZE, progress=False)
    model = models.build_model("resnet50", input_shape=(SIZE, SIZE, 3), weights=None)
    cells = gradcam.grad_cam_cells(model, images=images)
    assert cells.shape == (len(images), 1, 1) or cells.shape[1:] == tuple(model.get_layer("backbone").output_shape[1:3])
    np.testing.assert_array_equal(gradcam.upsample(cells, SIZE, SIZE), gradcam.grad_cam(model, images))
    features = model.get_layer("backbone").predict_on_batch(images)
    np.testing.assert_allclose(gradcam.grad_cam_cells(model, features=features), cells, atol=1e-6)
    with pytest.raises(ValueError, match="either images or features"):
        gradcam.grad_cam_cells(model)
