"""cxr_utils.plots: each figure is drawn, saved as a real PNG, and bad input is named."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_utils import config, metrics, paper, plots

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
    for counts, name in zip(paper.confusion_counts().to_numpy(), config.paper_names().values()):
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
    assert labels == ["training (training mode)", "validation", "best epoch (4)"]
    assert loss_ax.get_lines()[1].get_ydata().tolist() == history()["val_loss"].tolist()
    assert loss_ax.get_yscale() == "log"  # one spiking epoch cannot flatten the rest


def test_training_curves_show_the_inference_mode_figures_with_legends_off_the_data():
    table = history(best=4).assign(train_inference_loss=lambda h: h["loss"] * 3,
                                   train_inference_accuracy=lambda h: h["accuracy"] / 2)
    figure = plots.plot_training_curves(table, "ResNet50")
    figure.canvas.draw()
    for ax, metric in zip(figure.axes, ("loss", "accuracy")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert lines["training images, inference mode"].get_ydata().tolist() == table[f"train_inference_{metric}"].tolist()
        legend = ax.get_legend()
        assert legend.get_window_extent().y1 <= ax.get_window_extent().y0  # below the panel
        assert min(text.get_fontsize() for text in legend.get_texts()) >= 9


def test_training_curves_without_is_best_draw_no_marker(tmp_path):
    figure = plots.plot_training_curves(history().drop(columns="is_best"), "LSTM")
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["training (training mode)", "validation"]
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
    assert [ax.get_title() for ax in figure.axes] == list(config.paper_names().values())
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
            # Weight shapes, as Keras gives them: one (params,) vector each for the sake of the count.
            self.trainable_weights = [type("Variable", (), {"shape": (params,)})()] if params else []
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
    assert table.attrs["total parameters"] == 15 and table.attrs["trainable parameters"] == 15


def scored_predictions(seed=0):
    """Three models' test predictions with probabilities, as evaluation.load_predictions returns them."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([1, 0], 50)
    predictions = {}
    for name, spread in zip(config.paper_names().values(), (0.25, 0.45, 0.35)):
        probabilities = np.clip(np.where(labels == 1, 0.7, 0.3) + rng.normal(0, spread, 100), 0, 1)
        predictions[name] = pd.DataFrame({"path": [f"x{i}.png" for i in range(100)], "label": labels,
                                          "probability": probabilities})
    return predictions


def assert_readable_and_legend_off_the_data(figure, ax):
    figure.canvas.draw()
    sizes = [text.get_fontsize() for text in figure.findobj(plt.Text) if text.get_text()]
    assert sizes and min(sizes) >= 9
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # beside the axes, covering no curve


def test_roc_one_curve_per_model_with_its_auc_and_the_chance_line(tmp_path):
    import sklearn.metrics

    predictions = scored_predictions()
    path = tmp_path / "figures" / "roc.png"
    figure = plots.plot_roc(predictions, path=path)
    assert_png(path)
    ax, = figure.axes
    lines = ax.get_lines()
    assert len(lines) == len(predictions) + 1
    for line, (name, table) in zip(lines, predictions.items()):
        auc = sklearn.metrics.roc_auc_score(table["label"], table["probability"])
        assert line.get_label() == f"{name} (AUC = {auc:.3f})"
        fpr, tpr, _ = sklearn.metrics.roc_curve(table["label"], table["probability"])
        assert line.get_xdata().tolist() == fpr.tolist() and line.get_ydata().tolist() == tpr.tolist()
    chance = lines[-1]
    assert chance.get_xdata().tolist() == [0, 1] and chance.get_ydata().tolist() == [0, 1]
    assert "chance" in chance.get_label()
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [line.get_label() for line in lines]
    assert_readable_and_legend_off_the_data(figure, ax)


def test_roc_refuses_one_class_and_bad_predictions():
    predictions = scored_predictions()
    predictions["LSTM"] = predictions["LSTM"][predictions["LSTM"]["label"] == 1]
    with pytest.raises(ValueError, match="'LSTM'.* one class only"):
        plots.plot_roc(predictions)
    with pytest.raises(ValueError, match="probability"):
        plots.plot_roc({"LSTM": scored_predictions()["LSTM"].drop(columns="probability")})
    with pytest.raises(ValueError, match="non-empty dict"):
        plots.plot_roc({})


def test_reliability_diagram_draws_the_calibration_curves_and_counts(tmp_path):
    from sklearn.calibration import calibration_curve

    predictions = scored_predictions()
    path = tmp_path / "reliability.png"
    figure = plots.plot_reliability(predictions, n_bins=5, path=path)
    assert_png(path)
    curve_ax, count_ax = figure.axes
    diagonal, *curves = curve_ax.get_lines()
    assert diagonal.get_label() == "perfect calibration" and diagonal.get_xydata().tolist() == [[0, 0], [1, 1]]
    assert [line.get_label() for line in curves] == list(predictions)
    for line, table in zip(curves, predictions.values()):
        observed, predicted = calibration_curve(table["label"], table["probability"], n_bins=5)
        assert line.get_xdata() == pytest.approx(predicted) and line.get_ydata() == pytest.approx(observed)
    # One step histogram per model below, in the model's colour, counting every image once.
    assert len(count_ax.patches) == len(predictions)
    for patch, line, table in zip(count_ax.patches, curves, predictions.values()):
        assert patch.get_edgecolor()[:3] == pytest.approx(plt.matplotlib.colors.to_rgb(line.get_color()))
        counts, _ = np.histogram(table["probability"], bins=np.linspace(0, 1, 6))
        assert counts.sum() == 100 and set(patch.get_xy()[:, 1]) - {0} == set(counts) - {0}
    assert count_ax.get_xlabel() == "predicted P(COVID)" and count_ax.get_ylabel() == "images"
    assert_readable_and_legend_off_the_data(figure, curve_ax)


def test_reliability_histogram_counts_match_the_bins():
    predictions = {"LSTM": pd.DataFrame({"label": [1, 0, 1, 0, 1], "probability": [0.05, 0.15, 0.55, 0.95, 0.97]})}
    figure = plots.plot_reliability(predictions, n_bins=2)
    step, = figure.axes[1].patches
    assert step.get_xy()[:, 1].max() == 3  # 0.55, 0.95 and 0.97 in the upper bin, 2 in the lower
    with pytest.raises(ValueError, match="n_bins must be a whole number of at least 2"):
        plots.plot_reliability(predictions, n_bins=1)


def test_every_figure_keeps_its_text_legible_at_the_books_page_width(real_manifest, tmp_path):
    from cxr_utils import data

    ours = plots.paper_long(paper.table6()).assign(value=lambda t: t["value"] - 0.1)
    path = real_manifest["path"].iloc[0]
    figures = {
        "image grid": plots.plot_image_grid(real_manifest, per_class=6),
        "preprocessing": plots.plot_preprocessing_steps(data.preprocessing_steps(path)),
        "curves": plots.plot_training_curves(history(best=2), "ResNet50"),
        "confusion": plots.plot_confusion(paper.confusion_table("LSTM"), "LSTM"),
        "paper vs ours": plots.plot_paper_vs_ours(ours, plots.paper_long(paper.table6())),
        "roc": plots.plot_roc(scored_predictions()),
        "reliability": plots.plot_reliability(scored_predictions()),
    }
    for name, figure in figures.items():
        assert plots.smallest_shown_points(figure) >= plots.MIN_POINTS - 1e-9, name
