"""cxr_utils.plots: each figure is drawn, saved as a real PNG, and bad input is named."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_utils import metrics, paper, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def assert_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


def history(epochs=5, best=4):
    return pd.DataFrame({
        "epoch": np.arange(1, epochs + 1),
        "loss": np.linspace(0.9, 0.3, epochs),
        "accuracy": np.linspace(0.5, 0.9, epochs),
        "val_loss": np.linspace(0.95, 0.4, epochs),
        "val_accuracy": np.linspace(0.5, 0.85, epochs),
        "is_best": np.arange(1, epochs + 1) == best,
    })


def ours_long():
    """This run's metrics in long form, with intervals, as notebooks/06_evaluation builds them."""
    parts = []
    for counts, name in zip(paper.confusion_counts().to_numpy(), paper.MODELS.values()):
        y_true = np.repeat([1, 1, 0, 0], counts)
        y_pred = np.repeat([1, 0, 1, 0], counts)
        part = metrics.metrics_with_intervals(y_true, y_pred, n_bootstrap=200).reset_index()
        parts.append(part.assign(model=name))
    return pd.concat(parts, ignore_index=True)


def test_training_curves_two_panels_best_epoch_marked(tmp_path):
    path = tmp_path / "figures" / "curves.png"  # parent folder created on demand
    figure = plots.plot_training_curves(history(best=4), "ResNet50", path=path)
    assert_png(path)
    loss_ax, accuracy_ax = figure.axes
    assert "loss" in loss_ax.get_title() and "accuracy" in accuracy_ax.get_title()
    labels = [line.get_label() for line in loss_ax.get_lines()]
    assert labels == ["training", "validation", "best epoch (4)"]
    assert loss_ax.get_lines()[1].get_ydata().tolist() == history()["val_loss"].tolist()


def test_training_curves_without_is_best_draw_no_marker(tmp_path):
    figure = plots.plot_training_curves(history().drop(columns="is_best"), "LSTM")
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["training", "validation"]
    assert not list(tmp_path.iterdir())  # no path, nothing written


def test_training_curves_name_the_missing_column():
    with pytest.raises(ValueError, match="history has no column 'val_loss'"):
        plots.plot_training_curves(history().drop(columns="val_loss"), "LSTM")


def test_confusion_heatmap_shows_the_counts_in_paper_orientation(tmp_path):
    path = tmp_path / "confusion.png"
    figure = plots.plot_confusion(paper.confusion_table("ResNet50"), "ResNet50", path=path)
    assert_png(path)
    assert len(figure.axes) == 1
    ax = figure.axes[0]
    assert [text.get_text() for text in ax.texts] == ["47", "3", "4", "46"]
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("Actual", "Predicted")
    assert [label.get_text() for label in ax.get_yticklabels()] == ["COVID", "Normal"]


def test_confusion_heatmap_names_the_missing_column():
    table = paper.confusion_table("LSTM").rename(columns={"Normal": "normal"})
    with pytest.raises(ValueError, match="confusion has no column 'Normal'"):
        plots.plot_confusion(table, "LSTM")


def test_paper_long_form():
    long = plots.paper_long(paper.table6())
    assert list(long.columns) == ["model", "metric", "value"] and len(long) == 12
    row = long[(long["model"] == "ResNet50-LSTM") & (long["metric"] == "precision")]
    assert row["value"].tolist() == [0.96]


def test_paper_vs_ours_one_panel_per_model_with_error_bars(tmp_path):
    path = tmp_path / "paper_vs_ours.png"
    ours = ours_long()
    figure = plots.plot_paper_vs_ours(ours, plots.paper_long(paper.table6()), path=path)
    assert_png(path)
    assert [ax.get_title() for ax in figure.axes] == list(paper.MODELS.values())
    ax = figure.axes[2]  # ResNet50-LSTM
    paper_bars, our_bars = ax.containers[0], ax.containers[1]
    assert [bar.get_height() for bar in paper_bars] == [0.95, 0.96, 0.94, 0.95]
    hybrid = ours[ours["model"] == "ResNet50-LSTM"].set_index("metric")
    assert [bar.get_height() for bar in our_bars] == pytest.approx(hybrid["value"].tolist())
    # Error bars span each interval and sit on this run's bars.
    error_lines = ax.containers[2].lines[2][0].get_segments()
    assert [segment[0][1] for segment in error_lines] == pytest.approx(hybrid["low"].tolist())
    assert [segment[1][1] for segment in error_lines] == pytest.approx(hybrid["high"].tolist())
    assert [segment[0][0] for segment in error_lines] == pytest.approx(
        [bar.get_x() + bar.get_width() / 2 for bar in our_bars])


def test_paper_vs_ours_without_intervals_draws_no_error_bars():
    ours = ours_long()[["model", "metric", "value"]]
    figure = plots.plot_paper_vs_ours(ours, plots.paper_long(paper.table6()))
    assert all(len(ax.containers) == 2 for ax in figure.axes)


@pytest.mark.parametrize("drop, message", [
    ("metric", "ours has no column 'metric'"), ("high", "ours has no column 'high'"),
])
def test_paper_vs_ours_names_the_missing_column(drop, message):
    with pytest.raises(ValueError, match=message):
        plots.plot_paper_vs_ours(ours_long().drop(columns=drop), plots.paper_long(paper.table6()))


def test_paper_vs_ours_rejects_unknown_metrics_and_duplicates():
    paper_long = plots.paper_long(paper.table6())
    with pytest.raises(ValueError, match=r"unknown metrics \['auc'\]"):
        plots.plot_paper_vs_ours(ours_long().replace({"metric": {"f1": "auc"}}), paper_long)
    with pytest.raises(ValueError, match="more than one row"):
        plots.plot_paper_vs_ours(pd.concat([ours_long(), ours_long()]), paper_long)


def test_image_grid_draws_real_files(tmp_path):
    rows = []
    for name, shade in (("COVID", 60), ("Normal", 200)):
        for i in range(3):
            image_path = tmp_path / f"{name}-{i}.png"
            Image.fromarray(np.full((32, 32), shade, dtype=np.uint8)).save(image_path)
            rows.append({"path": str(image_path), "class": name})
    path = tmp_path / "grid.png"
    figure = plots.plot_image_grid(pd.DataFrame(rows), per_class=2, path=path)
    assert_png(path)
    assert len(figure.axes) == 4
    assert figure.axes[0].get_title().startswith("COVID") and figure.axes[2].get_title().startswith("Normal")


def test_preprocessing_steps_one_panel_per_step(tmp_path):
    steps = {"grayscale": np.zeros((40, 30), np.uint8), "three_channel": np.ones((8, 8, 3), np.float32)}
    path = tmp_path / "steps.png"
    figure = plots.plot_preprocessing_steps(steps, path=path)
    assert_png(path)
    assert [ax.get_title().splitlines()[0] for ax in figure.axes] == ["grayscale", "three_channel"]
    assert "(40, 30) uint8" in figure.axes[0].get_title()
    with pytest.raises(ValueError, match="steps is empty"):
        plots.plot_preprocessing_steps({})


def test_model_table_expands_backbone_and_skips_inputs():
    class Layer:  # the few attributes of a Keras layer that model_table reads
        def __init__(self, name, params=0, layers=None, shape=(None, 8)):
            self.name, self.params, self.trainable = name, params, True
            self.output = type("Tensor", (), {"shape": shape})()
            if layers is not None:
                self.layers = layers

        def count_params(self):
            return self.params

    class InputLayer(Layer):
        pass

    backbone = Layer("backbone", 10, layers=[InputLayer("image"), Layer("conv", 10)])
    model = Layer("model", 15, layers=[InputLayer("input"), backbone, Layer("dense", 5)])
    table = plots.model_table(model)
    assert table["layer"].tolist() == ["backbone/conv", "dense"]
    assert table["parameters"].tolist() == [10, 5]
    assert table.attrs["total parameters"] == 15
