"""cxr_utils.evaluation: from saved results folders to the paper's tables and the verdicts."""

import json

import numpy as np
import pandas as pd
import pytest

from cxr_utils import claims, comparison, config, evaluation, extended_set, metrics, paper, paths

N_TEST = 100


def _write_run(folder, correct, weights=None, paths=None):
    """A results folder as chapters 03-05 write it: per model, ``correct[model_id]`` of the 100
    test images (50 COVID, 50 Normal) predicted right, the first ones of each class."""
    labels = np.repeat([1, 0], N_TEST // 2)
    paths = paths or [f"COVID/images/COVID-{i}.png" for i in range(50)] + [
        f"Normal/images/Normal-{i}.png" for i in range(50)]
    for spec in config.REGISTRY.values():
        model_dir = folder / spec.id
        model_dir.mkdir(parents=True)
        right = np.zeros(N_TEST, bool)
        per_class = correct[spec.id] // 2
        right[:per_class] = right[50 : 50 + correct[spec.id] - per_class] = True
        predicted = np.where(right, labels, 1 - labels)
        pd.DataFrame({"path": paths, "label": labels, "probability": predicted * 0.8 + 0.1,
                      "predicted": predicted}).to_csv(model_dir / "predictions.csv", index=False)
        history = pd.DataFrame({"epoch": [1, 2], "loss": [0.7, 0.4], "accuracy": [0.6, 0.8],
                                "val_loss": [0.6, 0.5], "val_accuracy": [0.7, 0.75], "is_best": [False, True]})
        history.to_csv(model_dir / "history.csv", index=False)
        best = history.iloc[1]
        (model_dir / "metrics.json").write_text(json.dumps(
            {"best_epoch": 2, "best_epoch_row": {k: float(best[k]) for k in config.HISTORY_COLUMNS[1:]}}))
        options = {"weights": weights} if spec.has_backbone else {}
        (model_dir / "run.json").write_text(json.dumps({"settings": {"model_options": options}}))
    return folder


def _evaluate(folder):
    predictions = evaluation.load_predictions(folder)
    evaluation.save(folder, evaluation.confusion_matrices(predictions), evaluation.metrics_table(predictions),
                    evaluation.mcnemar_table(predictions))
    return predictions


CORRECT = {"resnet50": 90, "lstm": 70, "resnet50_lstm": 80}


def test_metrics_and_mcnemar_from_saved_predictions(tmp_path):
    predictions = _evaluate(_write_run(tmp_path, CORRECT))
    assert list(predictions) == list(config.paper_names().values())
    table = pd.read_csv(tmp_path / "evaluation" / "metrics.csv")
    accuracy = table[table["metric"] == "accuracy"].set_index("model")["value"]
    assert accuracy.to_dict() == {"ResNet50": 0.9, "LSTM": 0.7, "ResNet50-LSTM": 0.8}
    assert (table["low"] <= table["value"]).all() and (table["value"] <= table["high"]).all()
    mcnemar = pd.read_csv(tmp_path / "evaluation" / "mcnemar.csv")
    assert len(mcnemar) == 3
    pair = mcnemar[(mcnemar["model_a"] == "ResNet50") & (mcnemar["model_b"] == "LSTM")].iloc[0]
    # Right on the first 45 + 45 vs the first 35 + 35 of each class: 20 images only ResNet50 gets.
    assert (pair["a_only_correct"], pair["b_only_correct"]) == (20, 0)
    confusion = pd.read_csv(tmp_path / "evaluation" / "confusion_LSTM.csv", index_col=0)
    assert confusion.to_numpy().tolist() == [[35, 15], [15, 35]]


def test_models_tested_on_different_images_are_refused(tmp_path):
    _write_run(tmp_path, CORRECT)
    table = pd.read_csv(tmp_path / "lstm" / "predictions.csv")
    table.loc[0, "path"] = "COVID/images/COVID-999.png"
    table.to_csv(tmp_path / "lstm" / "predictions.csv", index=False)
    with pytest.raises(ValueError, match="LSTM and ResNet50 were tested on different images"):
        evaluation.load_predictions(tmp_path)


def test_missing_model_names_its_chapter(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebooks/03_resnet50.ipynb"):
        evaluation.load_predictions(tmp_path)


def test_a_models_history_is_read_or_its_absence_names_the_chapter(tmp_path):
    published = paths.REPO_ROOT / "book" / "executed" / "results" / "resnet50"
    history = evaluation.read_history(published, config.HISTORY_COLUMNS)
    assert history.equals(pd.read_csv(published / "history.csv")) and history["is_best"].sum() == 1
    with pytest.raises(FileNotFoundError, match=r"resnet50.history\.csv not found: run notebooks/03_resnet50\.ipynb"):
        evaluation.read_history(tmp_path / "resnet50")
    (tmp_path / "lstm").mkdir()
    history.drop(columns="val_accuracy").to_csv(tmp_path / "lstm" / "history.csv", index=False)
    with pytest.raises(ValueError, match="has no 'val_accuracy' column"):
        evaluation.read_history(tmp_path / "lstm", ("epoch", "val_accuracy"))


@pytest.mark.parametrize("weights, method, note", [
    (None, "ResNet50 + LSTM (from scratch)", True),
    ("imagenet", "ResNet50 + LSTM (ImageNet weights)", False),
    ("/w/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
     "ResNet50 + LSTM (ImageNet weights from file resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)", False),
])
def test_the_runs_weights_come_from_its_record(tmp_path, weights, method, note):
    _evaluate(_write_run(tmp_path, CORRECT, weights=weights))
    assert evaluation.run_settings(tmp_path) == {"weights": weights}
    compared = comparison.compare_with_paper(tmp_path)
    assert compared["table7"].iloc[-1]["method"] == method
    assert compared["table7"].iloc[-1]["accuracy"] == 0.8  # the hybrid's
    verdicts = comparison.judge_claims(tmp_path)
    assert verdicts["reason"].str.contains("Setting differs from the paper").all() == note
    saved = json.loads((tmp_path / "evaluation" / "verdicts.json").read_text())["verdicts"]
    assert [row["claim"] for row in saved] == ["1", "2a", "2b", "3"]
    assert (verdicts["verdict"] == "not tested in the paper's setting").all() == note
    assert (verdicts["verdict"] == "not tested in the paper's setting").any() == note
    assert "not a medical device" in (tmp_path / "report.md").read_text()


def test_models_trained_with_different_weights_are_refused(tmp_path):
    _write_run(tmp_path, CORRECT, weights="imagenet")
    (tmp_path / "resnet50" / "run.json").write_text(json.dumps({"settings": {"model_options": {"weights": None}}}))
    with pytest.raises(ValueError, match="different weights"):
        evaluation.run_settings(tmp_path)


def test_tables_put_the_paper_beside_this_run(tmp_path):
    _evaluate(_write_run(tmp_path, CORRECT))
    compared = comparison.compare_with_paper(tmp_path)
    assert compared["table2"].loc["LSTM", ("paper", "val_accuracy")] == paper.table2().loc["LSTM", "val_accuracy"]
    assert compared["table2"].loc["LSTM", ("this run", "val_accuracy")] == 0.75
    assert compared["confusion"].loc["ResNet50", ("this run", "tp")] == 45
    assert compared["table6"].loc["ResNet50-LSTM", ("this run", "accuracy")].startswith("0.80 [")
    one = comparison.table2_for_model(tmp_path, "resnet50_lstm")
    assert list(one.index) == list(paper.table2().columns) and list(one.columns) == ["paper", "this run"]
    assert one.loc["train_loss", "paper"] == paper.table2().loc["ResNet50-LSTM", "train_loss"]
    assert one.loc["train_loss", "this run"] == 0.4


def test_extended_test_set_leaves_out_the_run_and_its_duplicates(real_manifest):
    from cxr_utils import data

    split = data.split_dataset(data.sample_balanced(real_manifest, n_per_class=50, seed=3), seed=3)
    extended = extended_set.extended_test_set(real_manifest, split)
    assert not set(extended["path"]) & set(split["path"])
    seen = split[split["split"].isin(["train", "val"])]
    assert not set(extended["duplicate_group"]) & set(seen["duplicate_group"])
    assert not set(extended["sha256"]) & set(split["sha256"])
    assert len(extended) + extended.attrs["excluded_as_duplicates"] == len(real_manifest) - len(split)
    subset = extended_set.extended_test_set(real_manifest, split, max_images=40, seed=0)
    assert subset["label"].value_counts().to_dict() == {0: 20, 1: 20}
    assert set(subset["path"]) <= set(extended["path"])


def test_intervals_side_by_side_reports_widths(tmp_path):
    _evaluate(_write_run(tmp_path, CORRECT))
    small = pd.read_csv(tmp_path / "evaluation" / "metrics.csv")
    table = extended_set.intervals_side_by_side(small, small)
    assert len(table) == len(small)
    assert (table["width (test)"] == table["width (extended)"]).all()
    assert np.allclose(table["width (test)"], (small["high"] - small["low"]).round(3), equal_nan=True)


def test_metrics_table_agrees_with_metrics_module(tmp_path):
    predictions = evaluation.load_predictions(_write_run(tmp_path, CORRECT))
    table = evaluation.metrics_table(predictions)
    for name, frame in predictions.items():
        expected = metrics.classification_metrics(frame["label"], frame["predicted"])
        mine = table[table["model"] == name].set_index("metric")["value"]
        for metric in config.METRICS:
            assert mine[metric] == pytest.approx(expected[metric])



def _write_fit_predictions(folder, val_right, model_id="resnet50_lstm", seed=0):
    """fit_predictions.csv as training writes it: the restored model on its 800 training images
    (90% on the right side of 0.5) and 100 validation images (``val_right`` of them right)."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n, right in (("train", 800, 0.9), ("val", 100, val_right)):
        labels = np.repeat([1, 0], n // 2)
        confident = rng.uniform(0.6, 0.95, n)
        correct = rng.random(n) < right
        probability = np.where(correct == (labels == 1), confident, 1 - confident)
        rows.append(pd.DataFrame({"path": [f"{split}/{i}.png" for i in range(n)], "split": split,
                                  "label": labels, "probability": probability}))
    table = pd.concat(rows, ignore_index=True)
    table.to_csv(folder / model_id / evaluation.FIT_PREDICTIONS, index=False)
    return table


def test_loss_gap_reads_fit_predictions_and_is_none_without_them(tmp_path):
    _write_run(tmp_path, CORRECT)
    assert comparison.loss_gap(tmp_path) is None
    table = _write_fit_predictions(tmp_path, val_right=0.6)
    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    expected = metrics.loss_gap_interval(train["label"], train["probability"], val["label"], val["probability"], seed=3)
    assert comparison.loss_gap(tmp_path, seed=3) == {**expected, "batchnorm": claims.NO_BATCHNORM}
    # By default the run's own seed, as every interval of the run.
    assert comparison.loss_gap(tmp_path)["low"] == metrics.loss_gap_interval(
        train["label"], train["probability"], val["label"], val["probability"],
        seed=evaluation.run_seed(tmp_path))["low"]
    assert expected["low"] > 0 and (expected["n_train"], expected["n_val"]) == (800, 100)
    assert comparison.loss_gap(tmp_path, model_id="lstm") is None


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop(columns="split"), "no column split"),
    (lambda t: t[t["split"] == "train"], "no val rows"),
])
def test_loss_gap_names_a_malformed_file(tmp_path, change, message):
    _write_run(tmp_path, CORRECT)
    table = _write_fit_predictions(tmp_path, val_right=0.6)
    change(table).to_csv(tmp_path / "resnet50_lstm" / evaluation.FIT_PREDICTIONS, index=False)
    with pytest.raises(ValueError, match=message):
        comparison.loss_gap(tmp_path)


@pytest.mark.parametrize("val_right, expected", [(0.6, "contradicted"), (0.9, "inconclusive"), (0.995, "contradicted")])
def test_judge_claims_judges_claim3_on_the_per_image_loss_gap(tmp_path, val_right, expected):
    _evaluate(_write_run(tmp_path, CORRECT, weights="imagenet"))
    _write_fit_predictions(tmp_path, val_right=val_right)
    verdicts = comparison.judge_claims(tmp_path).set_index("claim")
    assert verdicts.loc["3", "verdict"] == expected
    assert "per image, inference mode; 800 training, 100 validation images" in verdicts.loc["3", "ours"]
    saved = pd.read_csv(tmp_path / "evaluation" / "verdicts.csv", dtype={"claim": str}).set_index("claim")
    assert saved.loc["3", "verdict"] == expected


def test_judge_claims_on_the_written_run(tmp_path):
    # 80 vs 90 and 70 right of 100: the hybrid alone right on 0 vs ResNet50 on 10 (p = 0.002),
    # on 10 vs the LSTM's 0; its 0.80 lies far below the paper's 0.95.
    _evaluate(_write_run(tmp_path, CORRECT, weights="imagenet"))
    verdicts = comparison.judge_claims(tmp_path).set_index("claim")["verdict"]
    assert verdicts.to_dict() == {"1": "contradicted", "2a": "contradicted", "2b": "supported", "3": "inconclusive"}


def test_probability_table_has_auc_and_brier_and_metrics_table_keeps_table6(tmp_path):
    import sklearn.metrics

    predictions = evaluation.load_predictions(_write_run(tmp_path, CORRECT))
    table = evaluation.probability_table(predictions)
    assert list(table.columns) == ["model", "metric", "value", "low", "high", "method", "n"]
    assert table["model"].tolist() == [name for name in predictions for _ in range(2)]
    assert set(table["metric"]) == {"auc", "brier"} and (table["n"] == N_TEST).all()
    for name, frame in predictions.items():
        mine = table[table["model"] == name].set_index("metric")["value"]
        assert mine["auc"] == pytest.approx(sklearn.metrics.roc_auc_score(frame["label"], frame["probability"]))
        assert mine["brier"] == pytest.approx(sklearn.metrics.brier_score_loss(frame["label"], frame["probability"]))
    assert (table["low"] <= table["value"]).all() and (table["value"] <= table["high"]).all()
    pd.testing.assert_frame_equal(table, evaluation.probability_table(predictions))
    assert set(evaluation.metrics_table(predictions)["metric"]) == set(config.METRICS)
