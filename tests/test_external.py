"""``python -m cxr_utils.external``: a labelled folder in another layout and other formats, its
copies of training images excluded and counted, images outside the size rule refused and named,
evaluated with chapter 6's tables."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_utils import data, evaluation, external, image_checks, predict, report, saved_models


def _flip_bits(phash: str, bits: int) -> str:
    value = int(phash, 16) ^ ((1 << bits) - 1)
    return f"{value:0{len(phash)}x}"


def test_copies_of_training_and_validation_images_are_excluded(real_manifest):
    split = data.split_dataset(data.sample_balanced(real_manifest, n_per_class=10, seed=4), seed=4)
    seen = split[split["split"].isin(["train", "val"])]
    test_row = split[split["split"] == "test"].iloc[[0]]
    unused = real_manifest[~real_manifest["duplicate_group"].isin(set(split["duplicate_group"]))].head(6)
    exact = seen.iloc[[0]].assign(path="/elsewhere/exact-copy.png")
    near = seen.iloc[[1]].assign(path="/elsewhere/near-copy.png", sha256="0" * 64,
                                 phash=_flip_bits(seen.iloc[1]["phash"], data.DEFAULT_MAX_HAMMING))
    far = seen.iloc[[2]].assign(path="/elsewhere/far.png", sha256="1" * 64,
                                phash=_flip_bits(seen.iloc[2]["phash"], data.DEFAULT_MAX_HAMMING + 1))
    columns = list(data.MANIFEST_COLUMNS)
    folder = pd.concat([unused, exact, near, far, test_row])[columns].reset_index(drop=True)

    kept, excluded = external.exclude_seen(folder, seen)
    assert sorted(excluded["path"]) == ["/elsewhere/exact-copy.png", "/elsewhere/near-copy.png"]
    assert dict(zip(excluded["path"], excluded["kind"])) == {"/elsewhere/exact-copy.png": "exact",
                                                             "/elsewhere/near-copy.png": "near"}
    assert excluded.set_index("path").loc["/elsewhere/exact-copy.png", "matches"] == (
        f"{seen.iloc[0]['split']}:{Path(seen.iloc[0]['path']).name}")
    # Just past the threshold, and copies of the run's *test* images, are kept.
    assert {"/elsewhere/far.png", test_row.iloc[0]["path"]} <= set(kept["path"])
    assert len(kept) + len(excluded) == len(folder)
    # A stricter threshold keeps the near copy.
    kept, excluded = external.exclude_seen(folder, seen, max_hamming=data.DEFAULT_MAX_HAMMING - 1)
    assert list(excluded["path"]) == ["/elsewhere/exact-copy.png"]


@pytest.mark.parametrize("name", ["../up", "", "a/b", ".hidden"])
def test_names_that_cannot_be_a_folder_are_refused(name):
    with pytest.raises(predict.UsageError, match="cannot name a folder"):
        external.check_name(name)


def test_a_folder_that_is_not_a_labelled_dataset_is_a_usage_error(real_manifest, tmp_path, capsys):
    run = tmp_path / "run"
    for model_id in ("resnet50", "lstm", "resnet50_lstm"):
        (run / model_id).mkdir(parents=True)
        (run / model_id / "model.keras").write_bytes(b"")
    split = data.split_dataset(data.sample_balanced(real_manifest, n_per_class=5, seed=1), seed=1)
    data.save_manifest(split, run / "split.csv")
    (tmp_path / "scans" / "COVID").mkdir(parents=True)  # no Normal/ folder
    assert external.main([str(tmp_path / "scans"), "--run", str(run)]) == 2
    error = capsys.readouterr().err
    assert "no folder holding both COVID/ and Normal/" in error and "Traceback" not in error

    (run / "split.csv").unlink()
    assert external.main([str(tmp_path / "scans"), "--run", str(run)]) == 2
    assert "split.csv is missing" in capsys.readouterr().err


@pytest.mark.slow
def test_external_folder_is_evaluated_with_copies_excluded_and_counted(small_run_copy, external_folder, capsys):
    run, folder = small_run_copy, external_folder["folder"]
    # DIR above the class folders, which use another layout (covid/, NORMAL/, no images/).
    code = external.main([str(folder.parent), "--run", str(run), "--name", "hospital-x", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 1  # the unreadable file is listed; the rest are evaluated
    assert "n-broken.png" in printed and report.DISCLAIMER in printed

    results = run / "external" / "hospital-x"
    record = json.loads((results / "external.json").read_text())
    assert record["counts"] == {"files": 11, "unreadable": 1, "refused_size": 0, "excluded": 2, "excluded_exact": 1, "excluded_near": 1,
                                "evaluated": 8, "evaluated_COVID": 4, "evaluated_Normal": 4}
    assert record["image_size"] == saved_models.run_image_size(run) and record["layout"] == "flat"

    excluded = pd.read_csv(results / "excluded.csv")
    assert dict(zip(excluded["path"], excluded["kind"])) == {"covid/dup-exact.png": "exact",
                                                             "NORMAL/dup-near.jpg": "near"}
    assert excluded["matches"].str.startswith("train:").all()
    problems = pd.read_csv(results / "problems.csv")
    assert list(problems["path"]) == ["NORMAL/n-broken.png"]

    predictions = pd.read_csv(results / "predictions.csv")
    assert len(predictions) == 8 and not set(predictions["path"]) & set(excluded["path"])
    assert set(predictions["path"]) == {p.relative_to(folder).as_posix() for p in external_folder["readable"]} - set(
        excluded["path"])

    # Chapter 6's tables, recomputed from the saved predictions, are what was written.
    by_model = {name: pd.DataFrame({"path": predictions["path"], "label": predictions["label"],
                                    "probability": predictions[f"{model_id}_probability"],
                                    "predicted": predictions[f"{model_id}_predicted"]})
                for model_id, name in (("resnet50", "ResNet50"), ("lstm", "LSTM"), ("resnet50_lstm", "ResNet50-LSTM"))}
    seed = record["settings"]["seed"]
    written = pd.read_csv(results / "evaluation" / "metrics.csv")
    expected = evaluation.metrics_table(by_model, seed=seed)
    np.testing.assert_allclose(written[["value", "low", "high"]], expected[["value", "low", "high"]], atol=1e-6)
    probability = pd.read_csv(results / "evaluation" / "probability_metrics.csv")
    assert set(probability["metric"]) == {"auc", "brier"} and len(probability) == 6
    assert len(pd.read_csv(results / "evaluation" / "mcnemar.csv")) == 3
    confusion = pd.read_csv(results / "evaluation" / "confusion_LSTM.csv", index_col=0)
    assert confusion.to_numpy().sum() == 8
    assert (results / "figures" / "roc.png").is_file() and (results / "figures" / "confusion_LSTM.png").is_file()
    text = (results / "report.md").read_text()
    assert report.DISCLAIMER in text and "dup-near.jpg" in text

    # Default name: DIR's folder name; one model; the earlier results of that name replaced whole.
    assert external.main([str(folder), "--run", str(run), "--model", "lstm", "--no-progress"]) == 1
    results = run / "external" / folder.name
    assert list(pd.read_csv(results / "predictions.csv").columns) == [
        "path", "class", "label", "lstm_probability", "lstm_predicted"]
    assert pd.read_csv(results / "evaluation" / "mcnemar.csv").empty
    assert external.evaluated_names(run) == sorted({"hospital-x", folder.name})


def test_images_outside_the_size_rule_are_left_out_of_the_metrics_and_named(real_data, tmp_path, monkeypatch,
                                                                             capsys):
    # Real X-rays with a 1 x 1 px PNG, a 20 x 300 sliver and a 3:1 strip of a real X-ray among
    # them, scored by a stand-in model (no run trained): the three are refused, named with their
    # size and the rule, counted, and no metric includes them.
    from PIL import Image

    covid = sorted((real_data / "COVID" / "images").iterdir())
    normal = sorted((real_data / "Normal" / "images").iterdir())
    run = tmp_path / "run"
    (run / "lstm").mkdir(parents=True)
    (run / "lstm" / "model.keras").write_bytes(b"")
    train = tmp_path / "train"
    for name, images in (("COVID", covid[:2]), ("Normal", normal[:2])):
        (train / name).mkdir(parents=True)
        for image in images:
            (train / name / image.name).symlink_to(image.resolve())
    data.save_manifest(data.build_manifest(train, progress=False).assign(split="train"), run / "split.csv")

    folder = tmp_path / "hospital-y"
    for name, images in (("COVID", covid[10:13]), ("Normal", normal[10:13])):
        (folder / name).mkdir(parents=True)
        for image in images:
            (folder / name / image.name).symlink_to(image.resolve())
    Image.new("L", (1, 1), 200).save(folder / "COVID" / "dot.png")
    Image.new("L", (20, 300), 90).save(folder / "Normal" / "sliver.png")
    Image.fromarray(data.decode_grayscale(normal[20])[:70]).save(folder / "Normal" / "strip.png")  # 224 x 70

    class Probe:
        input_shape = (None, 32, 32, 3)
        seen = 0

        def predict_on_batch(self, batch):
            Probe.seen += len(batch)
            return np.asarray(batch).mean(axis=(1, 2, 3)).reshape(-1, 1)

    monkeypatch.setattr(saved_models, "load_models", lambda results_dir, ids: {
        "lstm": saved_models.LoadedModel(id="lstm", name="LSTM", model=Probe())})
    assert external.main([str(folder), "--run", str(run), "--model", "lstm", "--no-progress"]) == 1
    printed = capsys.readouterr().out

    results = run / "external" / "hospital-y"
    counts = json.loads((results / "external.json").read_text())["counts"]
    assert counts == {"files": 9, "unreadable": 0, "refused_size": 3, "excluded": 0, "excluded_exact": 0,
                      "excluded_near": 0, "evaluated": 6, "evaluated_COVID": 3, "evaluated_Normal": 3}
    assert Probe.seen == 6
    refused = pd.read_csv(results / "refused.csv")
    reasons = dict(zip(refused["path"], refused["reason"]))
    assert reasons == {"COVID/dot.png": image_checks.size_problem(1, 1),
                       "Normal/sliver.png": image_checks.size_problem(20, 300),
                       "Normal/strip.png": image_checks.size_problem(224, 70)}
    assert "1 x 1 px, too small" in reasons["COVID/dot.png"] and "3.20:1 is too elongated" in reasons["Normal/strip.png"]
    predictions = pd.read_csv(results / "predictions.csv")
    assert len(predictions) == 6 and not set(predictions["path"]) & set(reasons)
    metrics = pd.read_csv(results / "evaluation" / "metrics.csv")
    assert (metrics["n"] == 6).all()
    assert pd.read_csv(results / "evaluation" / "confusion_LSTM.csv", index_col=0).to_numpy().sum() == 6
    for path, reason in reasons.items():
        assert f"refused: {path}: {reason}" in printed
        assert f"- `{path}`: {reason}" in (results / "report.md").read_text()
    assert "3 refused by size" in printed
