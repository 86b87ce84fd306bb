"""The training protocol on real chest X-rays: fast path, determinism, saved results, learning."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from cxr_utils import callbacks, data, inference, metrics, models, runtime, training

SMALL = 64  # test-sized images: ResNet50 runs ~12x faster than at 224 and still learns


@pytest.fixture(scope="module")
def small_split(real_manifest):
    sample = data.sample_balanced(real_manifest, n_per_class=40, seed=7)
    return data.split_dataset(sample, seed=7)


@pytest.fixture(scope="module")
def small_arrays(small_split, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    arrays = {}
    for part in data.SPLITS:
        rows = small_split[small_split["split"] == part]
        arrays[part] = (data.load_images(rows, image_size=SMALL, cache_dir=cache, progress=False), data.labels(rows))
    return arrays


def test_fast_path_is_the_same_model_as_end_to_end_training(small_arrays):
    """Features once + head fit == frozen backbone run on every image in every epoch."""
    config = training.TrainingConfig(epochs=2, batch_size=16, seed=3, progress=False)
    train, val = small_arrays["train"], small_arrays["val"]
    runtime.set_seed(11)
    fast = models.build_resnet50_lstm(weights=None, trainable_backbone=False, input_shape=(SMALL, SMALL, 3))
    runtime.set_seed(11)
    slow = models.build_resnet50_lstm(weights=None, trainable_backbone=False, input_shape=(SMALL, SMALL, 3))

    result = training.train_model(fast, train, val, config)
    assert result.fast_path and 0 < result.features_s < result.wall_time_s

    # The paper's way: the whole model in fit, backbone frozen, same seed, same batches.
    paper_way = training.train_model(slow, train, val, config, fast_path=False)
    assert not paper_way.fast_path and paper_way.features_s == 0

    assert paper_way.best_epoch == result.best_epoch
    for a, b in zip(fast.get_layer("head").get_weights(), slow.get_layer("head").get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    test_x = small_arrays["test"][0]
    np.testing.assert_allclose(
        training.predict_probabilities(fast, test_x), training.predict_probabilities(slow, test_x), atol=1e-5
    )


def test_same_seed_same_predictions_on_cpu(small_arrays):
    config = training.TrainingConfig(epochs=2, batch_size=16, seed=5, progress=False)
    outputs = []
    for _ in range(2):
        runtime.set_seed(5)
        model = models.build_lstm(input_shape=(SMALL, SMALL, 3))
        training.train_model(model, small_arrays["train"], small_arrays["val"], config)
        outputs.append(training.predict_probabilities(model, small_arrays["test"][0]))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_predictions_do_not_depend_on_padding_the_last_batch(small_arrays):
    """A short last batch is padded to one batch shape (one traced graph); its images get
    exactly what they get unpadded, and the padding's outputs are dropped."""
    images = small_arrays["train"][0][:21]  # two batches of 8, then 5
    runtime.set_seed(5)
    model = models.build_resnet50(weights=None, input_shape=(SMALL, SMALL, 3))
    padded = inference.predict_in_batches(model, images, batch_size=8)
    unpadded = np.concatenate([np.asarray(model.predict_on_batch(images[i : i + 8])) for i in (0, 8, 16)])
    assert padded.shape == (21, 1)
    np.testing.assert_allclose(padded, unpadded, rtol=0, atol=1e-6)
    assert inference.predict_in_batches(model, images[:5], batch_size=8).shape == (5, 1)


def test_keep_best_epoch_prefers_accuracy_then_lower_loss():
    keep = callbacks.KeepBestEpoch()

    class Stub:
        def get_weights(self):
            return []

    keep.set_model(Stub()) if hasattr(keep, "set_model") else setattr(keep, "model", Stub())
    for epoch, logs in enumerate([
        {"val_accuracy": 0.70, "val_loss": 0.60},
        {"val_accuracy": 0.80, "val_loss": 0.55},
        {"val_accuracy": 0.80, "val_loss": 0.50},  # tie on accuracy, lower loss: best
        {"val_accuracy": 0.80, "val_loss": 0.52},
        {"val_accuracy": 0.75, "val_loss": 0.20},
    ]):
        keep.on_epoch_end(epoch, logs)
    assert keep.best_epoch == 3


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="epochs"):
        training.TrainingConfig(epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        training.TrainingConfig(learning_rate=-1)


def test_run_experiment_writes_complete_results(small_split, tmp_path):
    config = training.TrainingConfig(epochs=2, batch_size=16, progress=False)
    outcome = training.run_experiment("lstm", small_split, tmp_path, config, image_size=SMALL, cache_dir=tmp_path / "cache")
    folder = tmp_path / "lstm"
    assert {p.name for p in folder.iterdir()} == {"history.csv", "predictions.csv", "fit_predictions.csv",
                                                  "metrics.json", "model.keras", "run.json"}
    history = pd.read_csv(folder / "history.csv")
    assert list(history.columns) == [*training.HISTORY_COLUMNS, *training.INFERENCE_COLUMNS] and len(history) == 2
    assert history["is_best"].sum() == 1
    assert history["train_inference_accuracy"].between(0, 1).all() and (history["train_inference_loss"] > 0).all()
    fit = pd.read_csv(folder / "fit_predictions.csv")
    train_val = small_split[small_split["split"].isin(["train", "val"])]
    assert sorted(fit["path"]) == sorted(train_val["path"]) and set(fit["split"]) == {"train", "val"}
    assert fit["probability"].between(0, 1).all()
    predictions = pd.read_csv(folder / "predictions.csv")
    test_rows = small_split[small_split["split"] == "test"]
    assert list(predictions["path"]) == list(test_rows["path"])
    assert predictions["probability"].between(0, 1).all()
    saved = json.loads((folder / "metrics.json").read_text())
    recomputed = metrics.classification_metrics(predictions["label"], predictions["predicted"])
    assert saved["test"]["accuracy"] == pytest.approx(recomputed["accuracy"])
    last = metrics.classification_metrics(predictions["label"], predictions["predicted_last_epoch"])
    assert saved["test_last_epoch"]["accuracy"] == pytest.approx(last["accuracy"])
    auc = saved["test_probability"]["auc"]
    assert auc["low"] <= auc["value"] <= auc["high"] and 0 <= saved["test_probability"]["brier"]["value"] <= 1
    record = json.loads((folder / "run.json").read_text())
    assert record["settings"]["training"]["epochs"] == 2
    assert record["settings"]["image_size"] == SMALL
    assert record["hardware"]["keras_backend"] == runtime.backend()
    assert "keras" in record["versions"] and record["wall_time_s"] > 0
    assert outcome["metrics"]["n"] == len(test_rows)


def test_failed_run_leaves_earlier_results_and_no_partial_folder(small_split, tmp_path, monkeypatch):
    config = training.TrainingConfig(epochs=1, batch_size=16, progress=False)
    training.run_experiment("lstm", small_split, tmp_path, config, image_size=SMALL, save_model=False)
    before = (tmp_path / "lstm" / "history.csv").read_text()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken_save)
    with pytest.raises(OSError, match="disk full"):
        training.run_experiment("lstm", small_split, tmp_path, config, image_size=SMALL, save_model=False)
    monkeypatch.undo()
    assert (tmp_path / "lstm" / "history.csv").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["lstm"]


def test_inference_mode_check_scores_the_model_the_test_sees(small_arrays):
    """The logged inference-mode figures are the model's own predictions on those images."""
    train = small_arrays["train"]
    config = training.TrainingConfig(epochs=2, batch_size=16, seed=3, progress=False,
                                     inference_check_images=len(train[0]), restore_best=False)
    runtime.set_seed(3)
    result = training.train_model(models.build_lstm(input_shape=(SMALL, SMALL, 3)), train, small_arrays["val"], config)
    probabilities = training.predict_probabilities(result.model, train[0])  # the last epoch's weights
    last = result.history.iloc[-1]
    assert last["train_inference_loss"] == pytest.approx(metrics.binary_cross_entropy(train[1], probabilities).mean(), rel=1e-5)
    assert last["train_inference_accuracy"] == pytest.approx(np.mean((probabilities >= 0.5) == (train[1] == 1)))
    off = training.TrainingConfig(epochs=1, batch_size=16, seed=3, progress=False, inference_check_images=0)
    history = training.train_model(models.build_lstm(input_shape=(SMALL, SMALL, 3)), train, small_arrays["val"], off).history
    assert list(history.columns) == training.HISTORY_COLUMNS
    with pytest.raises(ValueError, match="inference_check_images"):
        training.TrainingConfig(inference_check_images=-1)


def test_the_last_epochs_weights_are_kept_beside_the_restored_ones(small_arrays):
    train, val, test_x = small_arrays["train"], small_arrays["val"], small_arrays["test"][0]
    config = training.TrainingConfig(epochs=3, batch_size=16, seed=4, progress=False, inference_check_images=0)
    runtime.set_seed(4)
    restored = training.train_model(models.build_lstm(input_shape=(SMALL, SMALL, 3)), train, val, config)
    runtime.set_seed(4)
    kept_last = training.train_model(models.build_lstm(input_shape=(SMALL, SMALL, 3)), train, val,
                                     dataclasses.replace(config, restore_best=False))
    with restored.last_epoch() as model:
        from_restored_run = training.predict_probabilities(model, test_x)
    np.testing.assert_allclose(from_restored_run, training.predict_probabilities(kept_last.model, test_x), atol=1e-6)
    best = training.predict_probabilities(restored.model, test_x)  # back to the best epoch after the block
    if restored.best_epoch != config.epochs:
        assert not np.allclose(best, from_restored_run)
    runtime.set_seed(4)
    best_again = training.train_model(models.build_lstm(input_shape=(SMALL, SMALL, 3)), train, val, config)
    np.testing.assert_allclose(best, training.predict_probabilities(best_again.model, test_x), atol=1e-6)


def test_run_experiment_explains_a_bad_split(small_split, tmp_path):
    with pytest.raises(ValueError, match="no 'split' column"):
        training.run_experiment("lstm", small_split.drop(columns="split"), tmp_path)


# --- Learning signal: each model, trained briefly on real images, must beat chance clearly. ---
# Held-out accuracy counts as a learning signal when the lower end of its 95% Wilson interval
# is above 0.5 (chance for a balanced test set) by a margin, on 210 held-out images. The ResNet50
# models train from scratch with the BatchNorm remedy (statistics recomputed from 320 training
# images before every validation, as the remedy study does): with the moving statistics their
# validation stays near chance for the first epochs (the book's BatchNorm finding), so showing the
# signal took 8 epochs; with the remedy 4 do (measured here: test accuracy 0.81 and 0.77, Wilson
# lower bounds 0.76 and 0.71), in about half the time.


@pytest.fixture(scope="module")
def learning_split(real_manifest):
    sample = data.sample_balanced(real_manifest, n_per_class=300, seed=42)
    return data.split_dataset(sample, fractions=(0.5, 0.15, 0.35), seed=42)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model_name, image_size, epochs, recompute_batchnorm_images",
    [
        ("lstm", 224, 15, 0),
        ("resnet50", SMALL, 4, 320),
        ("resnet50_lstm", SMALL, 4, 320),
    ],
)
def test_short_training_run_learns(learning_split, tmp_path, model_name, image_size, epochs, recompute_batchnorm_images):
    # Learning is what is tested: no paired BatchNorm check and no inference-mode check of the
    # training images (they change no weight, only add passes).
    config = training.TrainingConfig(epochs=epochs, batch_size=32, seed=42, progress=False, batchnorm_check=False,
                                     inference_check_images=0, recompute_batchnorm_images=recompute_batchnorm_images)
    outcome = training.run_experiment(
        model_name, learning_split, tmp_path, config, model_options={"weights": None},
        image_size=image_size, save_model=False,
    )
    test = outcome["metrics"]
    low, _ = proportion_confint(test["tp"] + test["tn"], test["n"], alpha=0.05, method="wilson")
    print(f"{model_name}: held-out accuracy {test['accuracy']:.3f} on {test['n']} images, Wilson low {low:.3f}")
    assert test["n"] >= 200
    assert low > 0.55, f"{model_name} held-out accuracy {test['accuracy']:.3f} is not clearly above chance"


# One ResNet50 from scratch at the paper's 224 px, one epoch on real images, in a fresh process
# (TensorFlow reads its thread settings once, at start); prints a digest of the trained weights.
_TRAIN_ONCE = """
import hashlib, sys
import numpy as np
import pandas as pd
from cxr_utils import data, models, runtime, training
rows = pd.read_csv(sys.argv[1])
images = data.load_images(rows, image_size=224, cache_dir=sys.argv[2], progress=False)
labels = data.labels(rows)
runtime.set_seed(42)
model = models.build_resnet50(weights=None)
config = training.TrainingConfig(epochs=1, batch_size=16, progress=False)
training.train_model(model, (images, labels), (images[:16], labels[:16]), config)
digest = hashlib.sha256()
for weights in model.get_weights():
    digest.update(np.ascontiguousarray(weights).tobytes())
print(digest.hexdigest())
"""


@pytest.mark.slow  # two ResNet50 trainings on one thread, about a minute each
def test_resnet50_from_scratch_trains_to_the_same_weights_on_one_thread(real_manifest, tmp_path):
    """The remedy for book/reproducibility's finding: with TensorFlow's default threads two such
    trainings ended with weights differing from the sixth significant digit; with
    ``runtime.ONE_THREAD_ENVIRONMENT`` they are bit-identical."""
    import os
    import subprocess
    import sys

    rows = data.sample_balanced(real_manifest, n_per_class=16, seed=42)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    environment = {**os.environ, **runtime.ONE_THREAD_ENVIRONMENT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    digests = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", _TRAIN_ONCE, str(tmp_path / "rows.csv"), str(tmp_path / "cache")],
                              env=environment, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        digests.append(done.stdout.split()[-1])
    assert digests[0] == digests[1]
