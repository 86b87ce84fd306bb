"""One fact, one place: the protocol, the model registry and the reading of ``weights`` are read
from cxr_utils.config by everything that needs them, and a fourth model is one registry entry."""

import json

import keras
import pandas as pd
import papermill
import pytest

from cxr_utils import chapters, comparison, config, findings, data, evaluation, models, paper, paths, run, summaries, training, training_cli
from cxr_utils.config import PROTOCOL

ROOT = paths.REPO_ROOT


def test_protocol_is_the_papers():
    assert (PROTOCOL.n_per_class, PROTOCOL.epochs, PROTOCOL.batch_size, PROTOCOL.image_size) == (500, 15, 32, 224)
    assert PROTOCOL.learning_rate == 1e-3 and PROTOCOL.weights == "imagenet"
    assert PROTOCOL.split_sizes() == {"train": 800, "val": 100, "test": 100}  # the paper's 100 test images



def test_command_line_defaults_are_the_protocol():
    defaults = vars(training_cli.command_line().parse_args([]))
    for name in ("n_per_class", "epochs", "batch_size", "seed", "weights", "image_size"):
        assert defaults[name] == getattr(PROTOCOL, name), name
    assert vars(training_cli.command_line().parse_args(["--weights", "None"]))["weights"] is None
    with pytest.raises(SystemExit):  # only models of the registry
        training_cli.command_line().parse_args(["--model", "vgg16"])


@pytest.mark.parametrize("name", run.series())
def test_notebook_parameter_defaults_are_the_protocol(name):
    """Each notebook's parameters cell, opened alone (Colab), runs the paper's protocol."""
    declared = papermill.inspect_notebook(str(run.NOTEBOOKS_DIR / f"{name}.ipynb"))
    assert set(declared) <= set(config.NOTEBOOK_PARAMETERS), set(declared) - set(config.NOTEBOOK_PARAMETERS)
    for parameter, spec in declared.items():
        if hasattr(PROTOCOL, parameter):
            assert eval(spec["default"]) == getattr(PROTOCOL, parameter), (name, parameter)


@pytest.mark.parametrize("name", run.series())
def test_install_cell_is_generated_from_the_config(name):
    notebook = (run.NOTEBOOKS_DIR / f"{name}.ipynb").read_text()
    import json

    first_code = next(c for c in json.loads(notebook)["cells"] if c["cell_type"] == "code")
    assert "".join(first_code["source"]) == run.install_cell_source()


def test_registry_names_every_model_once_in_the_papers_order():
    assert list(config.REGISTRY) == ["resnet50", "lstm", "resnet50_lstm"]
    assert [spec.paper_name for spec in config.REGISTRY.values()] == list(paper.table6().index)
    assert [spec.has_backbone for spec in config.REGISTRY.values()] == [True, False, True]
    assert config.model_spec("ResNet50-LSTM") is config.REGISTRY["resnet50_lstm"]
    with pytest.raises(ValueError, match="unknown model 'vgg16'.*'resnet50'"):
        config.model_spec("vgg16")
    for spec in config.REGISTRY.values():
        assert (run.NOTEBOOKS_DIR / f"{spec.chapter}.ipynb").is_file()


def test_model_names_given_by_a_reader_become_registry_ids_in_the_papers_order():
    # predict, external and `study blanked` take --model names this way.
    assert config.model_ids(["ResNet50-LSTM", "lstm", "LSTM"]) == ["lstm", "resnet50_lstm"]
    assert config.model_ids(None) == config.model_ids(["all"]) == list(config.REGISTRY)
    with pytest.raises(ValueError, match="unknown model 'vgg16'"):
        config.model_ids(["lstm", "vgg16"])


@pytest.mark.parametrize("value, kind", [
    ("imagenet", "imagenet"), (None, "scratch"), ("None", "scratch"), ("scratch", "scratch"),
    ("weights/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "file"),
])
def test_one_reading_of_weights(value, kind):
    assert config.weights_kind(value) == kind
    assert config.is_paper_setting(value) == (kind != "scratch")
    label = config.weights_label(value)
    assert ("scratch" in label) == (kind == "scratch") and ("ImageNet" in label) == (kind != "scratch")


def test_weights_read_the_same_by_every_reader():
    local_file = "/data/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert run.profile_parameters("paper", overrides={"weights": "scratch"})["weights"] is None
    assert run.profile_parameters("paper", overrides={"weights": local_file})["weights"] == local_file
    assert "Trained from scratch" in summaries.settings_markdown({"weights": None})
    assert "Trained from scratch" not in summaries.settings_markdown({"weights": local_file})
    with pytest.raises(ValueError, match="weights must be"):
        config.parse_weights(3)


def _toy_builder(input_shape=(224, 224, 3), dropout=0.0):
    images = keras.Input(input_shape, name="images")
    x = keras.layers.GlobalAveragePooling2D(name="mean_grey")(images)
    return keras.Model(images, keras.layers.Dense(1, activation="sigmoid", name="p_covid")(x), name="toy")


@pytest.fixture
def with_toy_model(monkeypatch):
    registry = dict(config.REGISTRY)
    registry["toy"] = config.ModelSpec("toy", "Toy", _toy_builder, has_backbone=False, chapter="05b_toy")
    monkeypatch.setattr(config, "REGISTRY", registry)  # every module reads config.REGISTRY
    return registry


@pytest.mark.slow
def test_a_fourth_model_is_one_registry_entry(small_run_copy, with_toy_model):
    """Built, trained, evaluated, compared and required like the paper's three, from one entry
    (beside the paper's three of a small real run, trained once per session)."""
    assert run.series()[:6] == ("01_data_collection", "02_preprocessing", "03_resnet50", "04_lstm",
                                "05_resnet50_lstm", "05b_toy")
    assert models.build_model("toy", weights=None).name == "toy"  # backbone options dropped

    run_dir = small_run_copy
    split = data.read_manifest(run_dir / "split.csv")
    image_size = json.loads((run_dir / "run.json").read_text())["settings"]["image_size"]
    settings = training.TrainingConfig(epochs=1, batch_size=8, seed=1, progress=False)
    training.run_experiment("toy", split, run_dir, settings, image_size=image_size)
    chapters.require_trained_models(run_dir)

    predictions = evaluation.load_predictions(run_dir)
    assert list(predictions) == ["ResNet50", "LSTM", "ResNet50-LSTM", "Toy"]
    metrics_long = evaluation.metrics_table(predictions)
    mcnemar = evaluation.mcnemar_table(predictions)
    evaluation.save(run_dir, evaluation.confusion_matrices(predictions), metrics_long, mcnemar)
    assert set(metrics_long["model"]) >= {"Toy"} and len(mcnemar) == 6
    compared = comparison.compare_with_paper(run_dir)
    assert "Toy" in compared["table2"].index and compared["table2"].loc["Toy", ("paper", "val_loss")] != 0
    assert pd.isna(compared["table2"].loc["Toy", ("paper", "val_loss")])
    assert "Toy" in compared["confusion"].index
    assert "Toy" in findings.training_findings(run_dir).index

    (run_dir / "toy" / "predictions.csv").unlink()
    with pytest.raises(chapters.MissingInputs, match="Toy .*notebooks/05b_toy.ipynb"):
        chapters.require_trained_models(run_dir)
