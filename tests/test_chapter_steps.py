"""Chapters 3-5 show the training steps one cell at a time (the model, its table, ``compile``,
``experiment.prepare_inputs``, ``training.train_model``, the test predictions and metrics,
``training.save_experiment``): those cells write what ``training.run_experiment`` writes, a
chapter's compile is what ``fit`` uses, and the exercise that unfreezes ResNet50's last stage runs
when pasted into the model cell, as the exercise says."""

import json
import re
import textwrap

import keras
import numpy as np
import pandas as pd
import pytest

from cxr_utils import data, evaluation, experiment, extended_set, models, run, runtime, training

SMALL = 32  # px
TIMINGS = {"created_utc", "wall_time_s", "training_wall_time_s", "features_wall_time_s", "command"}


def _notebook(chapter: str) -> dict:
    return json.loads((run.NOTEBOOKS_DIR / f"{chapter}.ipynb").read_text())


def _source(cell) -> str:
    return "".join(cell["source"])


def _code_cells(chapter: str) -> list[str]:
    return [_source(c) for c in _notebook(chapter)["cells"] if c["cell_type"] == "code"]


def _run_cells_in_process(chapter: str, parameters: dict) -> dict:
    """Execute a chapter's code cells here, from its imports to its ``save_experiment`` cell, with
    the parameters cell's values overridden (the Colab cell left out); returns the namespace."""
    code = _code_cells(chapter)
    last = next(i for i, source in enumerate(code) if "training.save_experiment(" in source)
    namespace = {}
    for i, source in enumerate(code[1 : last + 1], start=1):
        exec(compile(source, f"{chapter} code cell {i}", "exec"), namespace)
        if i == 2:  # the parameters cell
            namespace.update(parameters)
    return namespace


def _files(folder):
    tables = {name: pd.read_csv(folder / name) for name in ("history.csv", "predictions.csv", "fit_predictions.csv",
                                                            evaluation.EXTENDED_PREDICTIONS)}
    metrics = json.loads((folder / "metrics.json").read_text())
    record = json.loads((folder / "run.json").read_text())
    return tables, metrics, {k: v for k, v in record.items() if k not in TIMINGS}


@pytest.fixture(scope="module")
def subset_split(real_subset):
    manifest = data.add_duplicate_groups(data.build_manifest(real_subset, progress=False))
    return data.split_dataset(data.sample_balanced(manifest, n_per_class=12, seed=5), seed=5)


def test_the_chapters_cells_write_what_run_experiment_writes(real_subset, subset_split, tmp_path):
    """Chapter 4's cells, executed as they stand, against the one call (the LSTM trains to the same
    weights on a CPU): the same files, the same numbers, the same record."""
    parameters = {"data_dir": str(real_subset), "results_dir": str(tmp_path / "cells"), "cache_dir": str(tmp_path / "cache"),
                  "seed": 5, "epochs": 2, "batch_size": 8, "image_size": SMALL, "n_per_class": 12}
    cells = _run_cells_in_process("04_lstm", parameters)
    columns = ["path", "label", "split"]
    assert cells["split"][columns].reset_index(drop=True).equals(subset_split[columns].reset_index(drop=True))
    config = training.TrainingConfig(epochs=2, batch_size=8, seed=5, progress=False)
    training.run_experiment("lstm", subset_split, tmp_path / "one_call", config, model_options={},
                            cache_dir=tmp_path / "cache", image_size=SMALL,
                            extended_rows=extended_set.run_rows(cells["results"], cells["extended_test_size"], 5))

    (tables, metrics, record), (tables_1, metrics_1, record_1) = (
        _files(tmp_path / "cells" / "lstm"), _files(tmp_path / "one_call" / "lstm"))
    for name, table in tables.items():
        pd.testing.assert_frame_equal(table, tables_1[name], check_exact=True, obj=name)
    assert metrics == metrics_1
    assert record["settings"] == record_1["settings"]
    assert record["settings"]["compile"] == {"optimizer": "Adam", "loss": "binary_crossentropy"}
    assert sorted(p.name for p in (tmp_path / "cells" / "lstm").iterdir()) == sorted(
        p.name for p in (tmp_path / "one_call" / "lstm").iterdir())
    # The metrics the chapter shows are those of the saved predictions.
    shown = cells["metrics"].metrics_with_intervals(cells["y_test"], cells["predicted"], seed=5)
    assert shown.loc["accuracy", "value"] == pytest.approx(metrics["test"]["accuracy"])


def _number(variable) -> float:
    return float(keras.ops.convert_to_numpy(variable))


def _arrays(split, size=SMALL):
    return {part: (data.load_images(rows, image_size=size, progress=False), data.labels(rows))
            for part, rows in ((p, split[split["split"] == p]) for p in data.SPLITS)}


def test_a_compiled_model_trains_with_its_own_optimizer_and_the_record_says_so(subset_split, tmp_path):
    config = training.TrainingConfig(epochs=2, batch_size=8, seed=2, progress=False, inference_check_images=0)
    runtime.set_seed(2)
    model = models.build_model("lstm", input_shape=(SMALL, SMALL, 3))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.5), loss="binary_crossentropy",
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])
    inputs = experiment.prepare_inputs(model, subset_split, batch_size=config.batch_size)
    assert not inputs.features and inputs.predictor(model) is model
    result = training.train_model(model, inputs.train, inputs.val, config)
    assert result.fitted is model and isinstance(model.optimizer, keras.optimizers.SGD)
    steps = config.epochs * int(np.ceil(len(inputs.train[0]) / config.batch_size))
    assert _number(model.optimizer.iterations) == steps  # fit stepped the chapter's optimiser
    assert _number(model.optimizer.learning_rate) == pytest.approx(0.01)
    assert result.compiled == {"optimizer": "SGD", "learning_rate": 0.01, "loss": "binary_crossentropy"}

    saved = training.save_experiment(tmp_path, "lstm", result, inputs, config, save_model=False)
    settings = json.loads((saved["results_dir"] / "run.json").read_text())["settings"]
    assert settings["training"]["learning_rate"] == 0.01  # what fit used, not the config's default
    assert settings["compile"] == {"optimizer": "SGD", "loss": "binary_crossentropy"}

    # Uncompiled, the paper's optimiser at the config's learning rate.
    fallback = training.train_model(models.build_model("lstm", input_shape=(SMALL, SMALL, 3)), inputs.train,
                                    inputs.val, training.TrainingConfig(epochs=1, batch_size=8, progress=False,
                                                                        learning_rate=0.002, inference_check_images=0))
    assert fallback.compiled == {"optimizer": "Adam", "learning_rate": 0.002, "loss": "binary_crossentropy"}


def test_on_the_fast_path_the_head_trains_with_the_models_compile(subset_split):
    arrays = _arrays(subset_split)
    config = training.TrainingConfig(epochs=2, batch_size=8, seed=3, progress=False, inference_check_images=0)
    runtime.set_seed(3)
    model = models.build_model("resnet50", weights=None, trainable_backbone=False, input_shape=(SMALL, SMALL, 3))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-4), loss="binary_crossentropy",
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])
    result = training.train_model(model, arrays["train"], arrays["val"], config)
    head = model.get_layer("head")
    assert result.fast_path and result.fitted is head
    assert isinstance(head.optimizer, keras.optimizers.Adam) and head.optimizer is not model.optimizer
    assert _number(head.optimizer.learning_rate) == pytest.approx(1e-4)
    assert _number(head.optimizer.iterations) > 0 and _number(model.optimizer.iterations) == 0
    assert result.compiled["learning_rate"] == 0.0001
    assert _number(model.optimizer.learning_rate) == pytest.approx(1e-4)  # the chapter's compile is kept

    # The paper's compile written out, as the chapters do, trains as the uncompiled default does.
    runtime.set_seed(3)
    twin = models.build_model("resnet50", weights=None, trainable_backbone=False, input_shape=(SMALL, SMALL, 3))
    training.compile_for_training(twin)
    runtime.set_seed(3)
    default = models.build_model("resnet50", weights=None, trainable_backbone=False, input_shape=(SMALL, SMALL, 3))
    for built in (twin, default):
        training.train_model(built, arrays["train"], arrays["val"], config)
    for a, b in zip(twin.get_layer("head").get_weights(), default.get_layer("head").get_weights()):
        np.testing.assert_array_equal(a, b)


def _exercise_code(chapter: str) -> str:
    """The code of the chapter's unfreezing exercise, as a student copies it from the page."""
    exercises = next(_source(c) for c in _notebook(chapter)["cells"]
                     if c["cell_type"] == "markdown" and _source(c).startswith("## Exercises"))
    blocks = [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)^\s*```", exercises, re.S | re.M)]
    (code,) = [b for b in blocks if "conv5_" in b]
    return code


@pytest.mark.parametrize("chapter", ["03_resnet50", "05_resnet50_lstm"])
def test_the_unfreezing_exercise_unfreezes_the_last_stage_only(chapter, imagenet_standin):
    """In-process, on the exercise's own code: the frozen ImageNet-style backbone trains in its
    conv5 layers only, and the fast path gives way to the whole model."""
    model = models.build_model(chapter.split("_", 1)[1], input_shape=(SMALL, SMALL, 3), weights=str(imagenet_standin))
    assert models.frozen_backbone(model) is not None
    exec(_exercise_code(chapter), {"model": model})
    assert models.frozen_backbone(model) is None
    resnet = model.get_layer("backbone").get_layer("resnet50")
    trainable = {layer.name for layer in resnet.layers if layer.trainable and layer.weights}
    assert trainable and all(name.startswith("conv5_") for name in trainable)
    assert {layer.name for layer in resnet.layers if layer.name.startswith("conv5_") and layer.weights} == trainable


@pytest.mark.slow  # a kernel that imports TensorFlow and trains ResNet50's last stage: about a minute
def test_chapter_3_runs_with_the_exercise_pasted_into_its_model_cell(real_subset, imagenet_standin,
                                                                     kernel_environment, tmp_path):
    import papermill

    notebook = _notebook("03_resnet50")
    model_cell = next(c for c in notebook["cells"] if c["cell_type"] == "code"
                      and "models.build_model(" in _source(c))
    model_cell["source"] = _source(model_cell) + "\n" + _exercise_code("03_resnet50")
    edited = tmp_path / "03_resnet50_unfrozen.ipynb"
    edited.write_text(json.dumps(notebook))
    results, size = tmp_path / "results", 64
    parameters = run.profile_parameters("sample", data_dir=real_subset, results_dir=results, overrides={
        "n_per_class": 8, "epochs": 1, "batch_size": 8, "image_size": size, "weights": str(imagenet_standin),
        "cache_dir": str(tmp_path / "cache")})
    papermill.execute_notebook(str(edited), str(tmp_path / "executed.ipynb"),
                               parameters=run._notebook_parameters(edited, parameters), kernel_name="python3",
                               cwd=str(run.NOTEBOOKS_DIR), progress_bar=False)

    folder = results / "resnet50"
    assert {p.name for p in folder.iterdir()} == {"history.csv", "predictions.csv", "fit_predictions.csv",
                                                  "metrics.json", "model.keras", "run.json",
                                                  evaluation.EXTENDED_PREDICTIONS, experiment.GRADCAM_CELLS}
    settings = json.loads((folder / "run.json").read_text())["settings"]
    assert settings["fast_path"] is False and settings["image_size"] == size
    outputs = "".join("".join(o.get("text", "")) for c in json.loads((tmp_path / "executed.ipynb").read_text())["cells"]
                      for o in c.get("outputs", []))
    assert "14,978,049 of them trainable" in outputs and "(images)" in outputs

    trained = keras.saving.load_model(folder / "model.keras").get_layer("backbone").get_layer("resnet50")
    start = keras.applications.ResNet50(include_top=False, weights=str(imagenet_standin), input_shape=(size, size, 3))
    changed, kept = [], []
    for before, after in zip(start.layers[1:], trained.layers[1:]):  # past the input layers
        assert before.name == after.name
        if not before.weights:
            continue
        same = all(np.array_equal(a, b) for a, b in zip(before.get_weights(), after.get_weights()))
        (kept if same else changed).append(before.name)
    assert changed and all(name.startswith("conv5_") for name in changed), changed
    # Every conv5 layer with weights trained (convolutions and their BatchNorm); nothing else moved.
    assert changed == [layer.name for layer in start.layers if layer.name.startswith("conv5_") and layer.weights]
    assert not any(name.startswith("conv5_") for name in kept)
