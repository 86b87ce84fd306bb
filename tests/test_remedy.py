"""This project's remedy for unsteady validation (BatchNorm statistics recomputed before every evaluation) and
its side-by-side comparison with the paper's protocol: the statistics are the batches' average,
nothing else changes, the callback acts before validation, 0 is the paper's protocol unchanged,
and the comparison table counts what the files hold. Tiny models on a few real X-rays at 32 px."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
from keras import layers
from statsmodels.stats.proportion import proportion_confint

from cxr_utils import callbacks, data, models, plots, remedy, report, runtime, training
from training_runs import write_run

SIZE = 32


@pytest.fixture(scope="module")
def real_images(real_subset):
    """The first 16 real images of each class at 32 px: 24 for training, 8 for validation,
    classes interleaved; labels 1 = COVID."""
    layout = data.find_dataset(real_subset)
    paths, labels = [], []
    for name, folder in layout.class_dirs.items():
        files = data.layout.image_files(folder)[:16]
        paths += files
        labels += [int(name == "COVID")] * len(files)
    order = np.argsort(np.arange(len(paths)) % 16, kind="stable")  # COVID, Normal, COVID, ...
    images = data.load_images([str(paths[i]) for i in order], image_size=SIZE, progress=False)
    labels = np.asarray(labels, dtype=np.float32)[order]
    return (images[:24], labels[:24]), (images[24:], labels[24:])


def tiny_model(seed: int = 0) -> keras.Model:
    """conv -> Dropout -> BatchNorm -> ReLU -> conv -> BatchNorm -> pool -> Dropout -> sigmoid:
    one BatchNorm after a Dropout, one fed by another BatchNorm, a Dropout after both."""
    runtime.set_seed(seed)
    images = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(4, 3, strides=2, name="conv1")(images)
    x = layers.Dropout(0.5, name="drop1")(x)
    x = layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(4, 3, strides=2, name="conv2")(x)
    x = layers.BatchNormalization(momentum=0.9, name="bn2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3, name="drop2")(x)
    return keras.Model(images, layers.Dense(1, activation="sigmoid", name="out")(x))


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable.value).copy()


def _expected_statistics(model, images, batch_size):
    """Each BatchNorm's batch means and biased variances, computed here from its inputs (bn1's:
    conv1's output, Dropout off as in inference; bn2's: conv2 on bn1's training-mode output),
    averaged over the batches weighted by their sizes."""
    conv1 = keras.Model(model.input, model.get_layer("conv1").output)
    bn1 = model.get_layer("bn1")
    gamma, beta = _numpy(bn1.gamma), _numpy(bn1.beta)
    sums = {"bn1": [0, 0], "bn2": [0, 0]}
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        a1 = np.asarray(conv1.predict_on_batch(batch), dtype=np.float64)
        m1, v1 = a1.mean(axis=(0, 1, 2)), a1.var(axis=(0, 1, 2))
        h = np.maximum(gamma * (a1 - m1) / np.sqrt(v1 + bn1.epsilon) + beta, 0).astype(np.float32)
        a2 = np.asarray(keras.ops.convert_to_numpy(model.get_layer("conv2")(h)), dtype=np.float64)
        for name, a in (("bn1", a1), ("bn2", a2)):
            sums[name][0] = sums[name][0] + len(batch) * a.mean(axis=(0, 1, 2))
            sums[name][1] = sums[name][1] + len(batch) * a.var(axis=(0, 1, 2))
    return {name: (mean / len(images), var / len(images)) for name, (mean, var) in sums.items()}


@pytest.mark.parametrize("n_images", [24, 20])  # three equal batches of 8; then 8, 8 and 4
def test_recomputed_statistics_are_the_batches_average_and_nothing_else_changes(real_images, n_images):
    (train_x, _), _ = real_images
    images = train_x[:n_images]
    model = tiny_model()
    bn1, bn2 = model.get_layer("bn1"), model.get_layer("bn2")
    bn2.gamma.assign(np.array([0.5, 2.0, 1.0, -1.0], np.float32))  # bn2's input depends on bn1's output
    bn1.gamma.assign(np.array([1.5, 0.7, 1.0, 2.0], np.float32))
    bn1.beta.assign(np.array([0.1, -0.2, 0.3, 0.0], np.float32))
    trainable = [_numpy(v) for v in model.trainable_variables]
    statistics = {id(v) for layer in (bn1, bn2) for v in (layer.moving_mean, layer.moving_variance)}
    others = [(v, _numpy(v)) for v in model.non_trainable_variables if id(v) not in statistics]
    assert any("seed_generator" in v.path for v, _ in others)  # the Dropouts' random state

    assert callbacks.recompute_batchnorm_statistics(model, images, batch_size=8) == 2

    expected = _expected_statistics(model, images, 8)
    for layer in (bn1, bn2):
        mean, variance = expected[layer.name]
        np.testing.assert_allclose(_numpy(layer.moving_mean), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(_numpy(layer.moving_variance), variance, rtol=1e-4, atol=1e-6)
        assert layer.momentum == 0.9
    assert [model.get_layer(n).rate for n in ("drop1", "drop2")] == [0.5, 0.3]
    for before, variable in zip(trainable, model.trainable_variables):
        np.testing.assert_array_equal(_numpy(variable), before)
    for variable, before in others:
        np.testing.assert_array_equal(_numpy(variable), before)
    # The old statistics do not leak in: a second pass gives the same numbers.
    kept = _numpy(bn2.moving_variance)
    callbacks.recompute_batchnorm_statistics(model, images, batch_size=8)
    np.testing.assert_allclose(_numpy(bn2.moving_variance), kept, rtol=1e-6)


def test_trainable_batchnorm_layers_are_recomputed_frozen_ones_are_not(real_images):
    (train_x, _), _ = real_images
    model = tiny_model()
    for name in ("bn1", "bn2"):
        model.get_layer(name).trainable = False  # a frozen layer keeps its statistics in training too
    before = [_numpy(v) for v in model.variables]
    assert callbacks.recompute_batchnorm_statistics(model, train_x, 8) == 0
    for variable, value in zip(model.variables, before):
        np.testing.assert_array_equal(_numpy(variable), value)
    assert callbacks.batchnorm_layers(models.build_lstm(input_shape=(SIZE, SIZE, 3))) == []
    scratch = models.build_resnet50(weights=None, input_shape=(SIZE, SIZE, 3))
    assert len(callbacks.batchnorm_layers(scratch)) == 53  # ResNet50's, inside the nested backbone
    before = [_numpy(v) for v in scratch.weights]
    assert callbacks.recompute_batchnorm_statistics(scratch, train_x[:16], 8) == 53
    statistics = {v.path for layer in callbacks.batchnorm_layers(scratch)
                  for v in (layer.moving_mean, layer.moving_variance)}
    changed = {v.path for v, value in zip(scratch.weights, before) if not np.array_equal(_numpy(v), value)}
    assert changed == statistics  # every moving statistic of the 53 layers, nothing else
    frozen = models.build_resnet50(weights=None, trainable_backbone=False, input_shape=(SIZE, SIZE, 3))
    assert callbacks.batchnorm_layers(frozen) == []  # the fast path's model: the option is a no-op
    with pytest.raises(ValueError, match="batch_size"):
        callbacks.recompute_batchnorm_statistics(model, train_x, 0)


class _Probe(keras.callbacks.Callback):
    """At validation's start, bn1's moving mean and the mean of its inputs under the current weights."""

    def __init__(self, images):
        super().__init__()
        self.images, self.seen = images, []

    def on_test_begin(self, logs=None):
        conv1 = keras.Model(self.model.input, self.model.get_layer("conv1").output)
        inputs = np.mean([np.asarray(conv1.predict_on_batch(self.images[i : i + 8])).mean(axis=(0, 1, 2))
                          for i in range(0, len(self.images), 8)], axis=0)
        self.seen.append((_numpy(self.model.get_layer("bn1").moving_mean), inputs))


@pytest.mark.parametrize("recompute", [False, True])
def test_the_callback_recomputes_before_each_validation_and_the_kept_weights_hold_it(real_images, recompute):
    (train_x, train_y), (val_x, val_y) = real_images
    model = training.compile_for_training(tiny_model())
    probe, keep_best = _Probe(train_x), callbacks.KeepBestEpoch()
    chain = ([callbacks.RecomputeBatchNorm(train_x, 8)] if recompute else []) + [probe, keep_best]
    model.fit(train_x, train_y, validation_data=(val_x, val_y), epochs=2, batch_size=8, verbose=0, callbacks=chain)
    assert len(probe.seen) == 2
    for moving, inputs in probe.seen:
        close = np.allclose(moving, inputs, rtol=1e-4, atol=1e-5)
        assert close == recompute  # without it, the moving average lags behind the weights
    kept = keep_best.best_weights[[w.path for w in model.weights].index(model.get_layer("bn1").moving_mean.path)]
    np.testing.assert_array_equal(kept, probe.seen[keep_best.best_epoch - 1][0])


def _history(real_images, **options):
    (train_x, train_y), val = real_images
    config = training.TrainingConfig(epochs=2, batch_size=8, seed=1, progress=False, inference_check_images=8,
                                     **options)
    result = training.train_model(tiny_model(), (train_x, train_y), val, config)
    return result, config


def test_zero_is_the_papers_protocol_and_the_remedy_changes_evaluation_only(real_images):
    assert training.TrainingConfig().recompute_batchnorm_images == 0
    absent, _ = _history(real_images)
    zero, _ = _history(real_images, recompute_batchnorm_images=0)
    pd.testing.assert_frame_equal(absent.history, zero.history, check_exact=True)

    remedied, config = _history(real_images, recompute_batchnorm_images=16)
    # Training mode never reads the moving statistics, and the weights are untouched: the same
    # training, bit for bit; what validation and the inference-mode check see differs.
    for column in ("loss", "accuracy"):
        np.testing.assert_array_equal(remedied.history[column], zero.history[column])
    assert not np.array_equal(remedied.history["val_loss"], zero.history["val_loss"])
    assert not np.array_equal(remedied.history["train_inference_loss"], zero.history["train_inference_loss"])
    # The kept weights hold the statistics recomputed for them: recomputing again changes nothing.
    train_x = real_images[0][0]
    chosen = training.seeded_subset(len(train_x), 16, config.seed, training.BATCHNORM_STREAM)
    bn2 = remedied.model.get_layer("bn2")
    kept = _numpy(bn2.moving_mean), _numpy(bn2.moving_variance)
    callbacks.recompute_batchnorm_statistics(remedied.model, train_x[chosen], config.batch_size)
    np.testing.assert_allclose(_numpy(bn2.moving_mean), kept[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_numpy(bn2.moving_variance), kept[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", [-1, 1.5, True, "320"])
def test_bad_values_are_refused(value):
    with pytest.raises(ValueError, match="recompute_batchnorm_images"):
        training.TrainingConfig(recompute_batchnorm_images=value)


def test_command_lines_take_the_option_and_refuse_a_negative_one(capsys):
    from cxr_utils import study, training_cli

    parser = training_cli.command_line()
    assert parser.parse_args([]).recompute_batchnorm_images == 0
    assert parser.parse_args(["--recompute-batchnorm", "320"]).recompute_batchnorm_images == 320
    assert training_cli.main(["--recompute-batchnorm-images", "-3", "--data-dir", "/no/such/folder"]) == 2
    assert "recompute_batchnorm_images must be an integer of 0 or more" in capsys.readouterr().err

    assert study.study_parameters("paper")["recompute_batchnorm_images"] == 0
    assert study.study_parameters("paper", {"recompute_batchnorm_images": 320})["recompute_batchnorm_images"] == 320
    assert study.main(["seeds", "-p", "recompute_batchnorm_images=-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "recompute_batchnorm_images must be an integer of 0 or more" in err


def test_a_study_refuses_to_mix_the_protocols(tmp_path):
    from cxr_utils.study import seeds

    old = {"settings": {"profile": "paper", "n_per_class": 500, "epochs": 15, "batch_size": 32,
                        "weights": "imagenet", "image_size": 224, "dtype_policy": "float32",
                        "models": list(seeds.REGISTRY)}}  # recorded before the option existed
    wanted = {**old["settings"], "recompute_batchnorm_images": 0}
    seeds._check_same_study(old, wanted, tmp_path)  # an old study ran the paper's protocol: resumable
    with pytest.raises(seeds.StudyError, match="recompute_batchnorm_images=0.*recompute_batchnorm_images=320"):
        seeds._check_same_study(old, {**wanted, "recompute_batchnorm_images": 320}, tmp_path)
    # A model folder trained before the option existed ran the paper's protocol too.
    folder = tmp_path / "seed-42" / "lstm"
    folder.mkdir(parents=True)
    training_record = {"epochs": 15, "batch_size": 32, "seed": 42}
    (folder / "run.json").write_text(json.dumps({"settings": {"training": training_record, "image_size": 224}}))
    parameters = {"epochs": 15, "batch_size": 32, "image_size": 224, "recompute_batchnorm_images": 0}
    seeds.check_model_folder(folder, seeds.REGISTRY["lstm"], parameters, 42)
    with pytest.raises(seeds.StudyError, match="recompute_batchnorm_images=320"):
        seeds.check_model_folder(folder, seeds.REGISTRY["lstm"], {**parameters, "recompute_batchnorm_images": 320}, 42)


def test_an_lstm_run_records_the_option_and_is_unchanged_by_it(real_subset, tmp_path):
    manifest = data.add_duplicate_groups(data.build_manifest(real_subset, progress=False))
    split = data.split_dataset(data.sample_balanced(manifest, n_per_class=8, seed=3), seed=3)
    histories = {}
    for n in (0, 8):
        config = training.TrainingConfig(epochs=1, batch_size=8, seed=3, progress=False,
                                         recompute_batchnorm_images=n)
        training.run_experiment("lstm", split, tmp_path / str(n), config, save_model=False, image_size=SIZE)
        settings = json.loads((tmp_path / str(n) / "lstm" / "run.json").read_text())["settings"]
        assert settings["training"]["recompute_batchnorm_images"] == n
        assert settings["batchnorm_layers_recomputed"] == 0  # no BatchNorm: a no-op, and recorded so
        histories[n] = pd.read_csv(tmp_path / str(n) / "lstm" / "history.csv")
    pd.testing.assert_frame_equal(histories[0], histories[8], check_exact=True)


# -- the side-by-side comparison -------------------------------------------------------------------


@pytest.fixture
def two_runs(tmp_path):
    paper, remedied = tmp_path / "paper", tmp_path / "remedy"
    # 0.550000012: float32's 0.55, near chance like 0.55 itself (claims.at_most's tolerance); 0.56 is not.
    write_run(paper, "resnet50", [0.5, 0.88, 0.550000012, 0.56, 0.55], [0.5, 0.9, 0.52, 0.6, 0.5], 2,
              (35, 15, 17, 33))
    write_run(remedied, "resnet50", [0.83, 0.9, 0.86, 0.84, 0.87], [0.85, 0.9, 0.88, 0.86, 0.9], 2,
              (45, 5, 8, 42), n_images=320)
    write_run(paper, "lstm", [0.6] * 5, [0.6] * 5, 1, (30, 20, 20, 30))  # only in one folder
    return paper, remedied


def test_remedy_table_counts_what_the_files_hold(two_runs):
    paper, remedied = two_runs
    table = remedy.remedy_table(paper, remedied)
    assert table["model_id"].tolist() == ["resnet50", "resnet50"]  # the LSTM is in one folder only
    rows = table.set_index("protocol")
    assert rows.loc["paper", "epochs_near_chance"] == 3 and rows.loc["remedy", "epochs_near_chance"] == 0
    assert rows.loc["paper", "val_accuracy_min"] == 0.5 and rows.loc["paper", "val_accuracy_max"] == 0.88
    assert rows.loc["remedy", "val_accuracy_min"] == 0.83
    assert rows.loc["paper", "train_inference_accuracy_min"] == 0.5
    assert rows.loc["remedy", "train_inference_accuracy_min"] == 0.85
    assert rows.loc["paper", "best_epoch"] == 2
    assert rows["recompute_batchnorm_images"].to_dict() == {"paper": 0, "remedy": 320}
    low, high = proportion_confint(87, 100, alpha=0.05, method="wilson")
    assert rows.loc["remedy", "test_accuracy"] == pytest.approx(0.87)
    assert (rows.loc["remedy", "test_low"], rows.loc["remedy", "test_high"]) == pytest.approx((low, high))
    assert rows.loc["paper", "test_accuracy"] == pytest.approx(0.68) and rows.loc["paper", "test_n"] == 100

    text = remedy.remedy_markdown(table)
    assert f"at or below {report.NEAR_CHANCE}" in text and "in 3 of 5 epochs" in text and "in 0 of 5" in text
    assert "from 320 training images" in text and "0.50 to 0.85" in text
    # Paired on the same 100 images: 35 + 33 right under the paper's protocol, 45 + 42 with the remedy,
    # the first ones of each class in both, so only the remedy is right on 10 + 9 and the paper's on none.
    assert rows["paired_remedy_only"].tolist() == [19, 19] and rows["paired_paper_only"].tolist() == [0, 0]
    assert "only the paper's protocol is right on 0 and only the remedy on 19" in text
    assert "the two runs differ (BatchNorm statistics recomputed right more often)" in text
    assert "overlap" not in text  # unpaired intervals are never the comparison
    assert "paper's protocol is the default" in text and "this project's option" in text
    close = table.assign(paired_paper_only=8, paired_remedy_only=11, paired_p_value=0.65)
    assert "a difference chance alone could give" in remedy.remedy_markdown(close)
    no_op = table.assign(batchnorm_layers_recomputed=0)
    assert "changes nothing" in remedy.remedy_markdown(no_op)

    with pytest.raises(ValueError, match="no model has results in both"):
        remedy.remedy_table(paper, paper.parent / "elsewhere")


def test_remedy_table_refuses_runs_that_differ_otherwise(two_runs, tmp_path):
    paper, remedied = two_runs
    with pytest.raises(ValueError, match="must be positive"):
        remedy.remedy_table(paper, paper, ["resnet50"])
    other = tmp_path / "other-seed"
    write_run(other, "resnet50", [0.8] * 5, [0.8] * 5, 1, (40, 10, 10, 40), n_images=320, seed=7)
    with pytest.raises(ValueError, match="training.seed"):
        remedy.remedy_table(paper, other, ["resnet50"])


def test_remedy_curves_show_both_protocols(two_runs, tmp_path):
    import matplotlib.pyplot as plt

    paper, remedied = two_runs
    path = tmp_path / "figures" / "remedy.png"
    figure = remedy.plot_remedy_curves(paper, remedied, "ResNet50", path=path)
    try:
        assert path.is_file() and len(figure.axes) == 2
        for ax in figure.axes:
            labels = [line.get_label() for line in ax.get_lines()]
            assert [remedy.PROTOCOLS["paper"], remedy.PROTOCOLS["remedy"]] == labels[:2]
        np.testing.assert_array_equal(figure.axes[0].get_lines()[1].get_ydata(), [0.83, 0.9, 0.86, 0.84, 0.87])
        assert plots.smallest_shown_points(figure) >= plots.MIN_POINTS
    finally:
        plt.close(figure)


# -- the paired check: the same weights, moving or recomputed statistics ---------------------------


def test_the_paired_check_changes_no_training_and_logs_the_recomputed_scores(real_images):
    (train_x, train_y), (val_x, val_y) = real_images
    checked, config = _history(real_images, restore_best=False)
    plain, _ = _history(real_images, restore_best=False, batchnorm_check=False)
    # The check puts every weight and statistic back: training and the paper's figures are the same, bit for bit.
    pd.testing.assert_frame_equal(checked.history[plain.history.columns], plain.history, check_exact=True)
    for a, b in zip(checked.model.get_weights(), plain.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert set(training.BATCHNORM_CHECK_COLUMNS) <= set(checked.history) and \
        not set(training.BATCHNORM_CHECK_COLUMNS) & set(plain.history)
    # The last epoch's logged figures are these weights' scores with the statistics recomputed from the
    # seeded images claim 3 uses, on the validation images and on the inference check's training images.
    statistics = training.seeded_subset(len(train_x), training.facts.CHOICES.fit_batchnorm_images, config.seed,
                                        training.BATCHNORM_STREAM)
    scored = training.seeded_subset(len(train_x), config.inference_check_images, config.seed)
    callbacks.recompute_batchnorm_statistics(checked.model, train_x[statistics], config.batch_size)
    last = checked.history.iloc[-1]
    for column, (images, labels) in (("val_accuracy_recomputed", (val_x, val_y)),
                                     ("train_inference_accuracy_recomputed", (train_x[scored], train_y[scored]))):
        right = (training.predict_probabilities(checked.model, images, config.batch_size) >= 0.5) == (labels == 1)
        assert last[column] == pytest.approx(right.mean())
    # With the remedy on, validation already uses recomputed statistics: no second way to score.
    remedied, _ = _history(real_images, recompute_batchnorm_images=16)
    assert not set(training.BATCHNORM_CHECK_COLUMNS) & set(remedied.history)


def test_a_resnet50_run_saves_the_pair_and_the_chapter_reads_it(real_subset, tmp_path):
    from cxr_utils import batchnorm_check, experiment

    manifest = data.add_duplicate_groups(data.build_manifest(real_subset, progress=False))
    split = data.split_dataset(data.sample_balanced(manifest, n_per_class=20, seed=3), seed=3)
    config = training.TrainingConfig(epochs=2, batch_size=8, seed=3, progress=False)
    training.run_experiment("resnet50", split, tmp_path, config, {"weights": None}, save_model=False, image_size=SIZE)
    predictions = pd.read_csv(tmp_path / "resnet50" / "predictions.csv")
    assert set(experiment.RECOMPUTED_COLUMNS) <= set(predictions)
    assert batchnorm_check.has_check(tmp_path, "resnet50")

    table = batchnorm_check.epoch_table(tmp_path, "resnet50")
    history = pd.read_csv(tmp_path / "resnet50" / "history.csv")
    assert table.index.tolist() == [1, 2] and (table["kept"] == "kept").sum() == 1
    assert table["validation: recomputed"].tolist() == history["val_accuracy_recomputed"].round(2).tolist()

    pair = batchnorm_check.test_pair(tmp_path, "resnet50")
    labels = predictions["label"]
    for way, column in (("moving", "predicted"), ("recomputed", experiment.RECOMPUTED_COLUMNS[1])):
        assert pair[way]["value"] == pytest.approx((predictions[column] == labels).mean())
    right_moving = predictions["predicted"] == labels
    right_recomputed = predictions[experiment.RECOMPUTED_COLUMNS[1]] == labels
    assert pair["moving_only"] == int((right_moving & ~right_recomputed).sum())
    assert pair["recomputed_only"] == int((~right_moving & right_recomputed).sum())
    text = batchnorm_check.check_markdown(tmp_path, "resnet50")
    assert f"The test images at the kept epoch** ({len(predictions)})" in text and "McNemar exact p" in text
    figure = batchnorm_check.plot_batchnorm_check(tmp_path, "resnet50", path=tmp_path / "check.png")
    assert (tmp_path / "check.png").stat().st_size > 0 and plots.smallest_shown_points(figure) >= plots.MIN_POINTS
    import matplotlib.pyplot as plt

    plt.close(figure)

    # The LSTM has no BatchNorm: no pair is saved, and the chapter's functions say why.
    training.run_experiment("lstm", split, tmp_path, config, save_model=False, image_size=SIZE)
    assert not batchnorm_check.has_check(tmp_path, "lstm")
    with pytest.raises(ValueError, match="no paired BatchNorm check"):
        batchnorm_check.epoch_table(tmp_path, "lstm")
    with pytest.raises(ValueError, match="predicted_recomputed_batchnorm"):
        batchnorm_check.test_pair(tmp_path, "lstm")
