"""The seed study (cxr_utils.study): one folder per seed, resuming without retraining, refusing
another study's folder, and the summary over the seeds.

The fast tests build per-seed files by hand; the slow ones run a tiny study on the real images
(2 seeds, 8 images per class, 32 px, 1 epoch, a stand-in for the ImageNet weights file so the
backbone is frozen: about 2 minutes on a 2-core CPU, against about 7 with weights=None)."""

import contextlib
import io
import json
import re
import shutil
import time

import numpy as np
import pandas as pd
import pytest

from cxr_utils import claims, config, report, study
from training_runs import write_run

MODELS = list(config.paper_names().values())
CLAIMS = ["1", "2a", "2b", "3"]


# -- hand-made per-seed files (fast) --------------------------------------------------------------


def _write_seed(root, seed, values, verdicts):
    """A seed folder's evaluation files: ``values`` (model, metric) -> value; ``verdicts`` claim ->
    (verdict, reason)."""
    folder = root / f"seed-{seed}" / "evaluation"
    folder.mkdir(parents=True)
    rows = [{"model": m, "metric": k, "value": v, "low": v - 0.1, "high": v + 0.1, "n": 100}
            for (m, k), v in values.items()]
    table = pd.DataFrame(rows)
    table[table["metric"].isin(config.METRICS)].to_csv(folder / "metrics.csv", index=False)
    table[table["metric"].isin(["auc", "brier"])].to_csv(folder / "probability_metrics.csv", index=False)
    pd.DataFrame([{"claim": c, "text": f"claim {c}", "paper": "", "ours": "", "verdict": v, "reason": r}
                  for c, (v, r) in verdicts.items()]).to_csv(folder / "verdicts.csv", index=False)


@pytest.fixture
def hand_made(tmp_path):
    """Three seed folders: 7 and 8 evaluated (random metrics), 9 without evaluation; study.json
    lists them as 8, 7, 9."""
    rng = np.random.default_rng(0)
    metrics = [*config.METRICS, "auc", "brier"]
    values = {seed: {(m, k): float(rng.uniform(0.3, 0.99)) for m in MODELS for k in metrics} for seed in (7, 8)}
    outside = f"{claims.SETTING_NOTE} Taken alone, its numbers would indicate *supported*: because."
    _write_seed(tmp_path, 7, values[7], {"1": (claims.SUPPORTED, "x"), "2a": (claims.CONTRADICTED, "x"),
                                         "2b": (claims.INCONCLUSIVE, "x"), "3": (claims.NOT_PAPER_SETTING, outside)})
    _write_seed(tmp_path, 8, values[8], {"1": (claims.SUPPORTED, "x"), "2a": (claims.INCONCLUSIVE, "x"),
                                         "2b": (claims.INCONCLUSIVE, "x"), "3": (claims.SUPPORTED, "x")})
    (tmp_path / "seed-9").mkdir()
    settings = {"profile": "paper", "weights": "imagenet", "n_per_class": 500, "epochs": 15, "batch_size": 32,
                "image_size": 224, "dtype_policy": "float32", "seeds": [8, 7, 9]}
    (tmp_path / study.STUDY_RECORD).write_text(json.dumps({"settings": settings}))
    return tmp_path, values


def test_summary_of_hand_made_seeds_is_their_mean_std_min_max(hand_made):
    root, values = hand_made
    summary = study.summarise(root)
    assert summary["seeds"] == [8, 7] and summary["left_out"] == [9]
    long = pd.DataFrame([{"seed": s, "model": m, "metric": k, "value": v}
                         for s, table in values.items() for (m, k), v in table.items()])
    expected = long.groupby(["model", "metric"])["value"].agg(["mean", "std", "min", "max", "count"])
    written = pd.read_csv(root / "summary_metrics.csv").set_index(["model", "metric"])
    assert len(written) == len(expected) == len(MODELS) * 6
    for column in ("mean", "std", "min", "max"):
        assert np.allclose(written[column], expected.loc[written.index, column]), column
    assert (written["n_seeds"] == 2).all()
    # Models in the paper's order, metrics in SUMMARY_METRICS' order.
    assert list(dict.fromkeys(written.index.get_level_values("model"))) == MODELS
    assert list(written.loc[MODELS[0]].index) == list(study.SUMMARY_METRICS)


def test_summary_counts_each_outcome_per_claim(hand_made):
    root, _ = hand_made
    study.summarise(root)
    verdicts = pd.read_csv(root / "summary_verdicts.csv", dtype={"claim": str}).set_index("claim")
    assert list(verdicts.index) == CLAIMS
    assert set(claims.OUTCOMES) <= set(verdicts.columns)
    assert verdicts.loc["1", claims.SUPPORTED] == 2
    assert verdicts.loc["2a", [claims.CONTRADICTED, claims.INCONCLUSIVE]].tolist() == [1, 1]
    assert verdicts.loc["2b", claims.INCONCLUSIVE] == 2
    assert verdicts.loc["3", [claims.SUPPORTED, claims.NOT_PAPER_SETTING]].tolist() == [1, 1]
    assert (verdicts[list(claims.OUTCOMES)].sum(axis=1) == verdicts["n_seeds"]).all()
    # The seed outside the paper's setting counts, among the indicated outcomes, as what it indicates.
    assert verdicts.loc["3", "indicated_supported"] == 2


def test_summary_markdown_states_the_seeds_and_settings_with_2_decimals(hand_made):
    root, values = hand_made
    study.summarise(root)
    text = (root / "summary.md").read_text()
    assert "2 seeds (8, 7)" in text and "profile paper" in text and "ImageNet weights" in text
    assert "seed 9" in text  # left out, and said so
    accuracy = np.mean([values[s][(MODELS[0], "accuracy")] for s in (7, 8)])
    brier = np.mean([values[s][(MODELS[0], "brier")] for s in (7, 8)])
    assert f" {accuracy:.2f} |" in text and f" {brier:.3f} |" in text
    assert "What the numbers alone would indicate" in text  # one seed outside the paper's setting
    assert report.DISCLAIMER in text


def test_summary_says_how_steady_each_seed_trained(hand_made):
    root, _ = hand_made
    # Seed 8: ResNet50 near chance in 2 of 4 epochs (0.550000012 is float32's 0.55), its training
    # images at chance in inference mode, the last epoch kept; seed 7: steady, epoch 2 kept, the
    # last epoch worse on the test images. The LSTM only in seed 7.
    write_run(root / "seed-8", "resnet50", [0.5, 0.7, 0.550000012, 0.8], [0.5, 0.7, 0.6, 0.8], 4, (40, 10, 10, 40),
              seed=8, last_counts=(40, 10, 10, 40))
    write_run(root / "seed-7", "resnet50", [0.8, 0.9, 0.85, 0.6], [0.8, 0.9, 0.85, 0.7], 2, (45, 5, 5, 45),
              seed=7, last_counts=(30, 20, 10, 40))
    write_run(root / "seed-7", "lstm", [0.6] * 4, [0.6] * 4, 1, (30, 20, 20, 30), seed=7)
    result = study.summarise(root)
    table = result["stability"]
    assert table[["seed", "model_id"]].values.tolist() == [[8, "resnet50"], [7, "resnet50"], [7, "lstm"]]
    rows = table.set_index(["seed", "model_id"])
    assert rows.loc[(8, "resnet50"), "epochs_near_chance"] == 2 and rows.loc[(7, "resnet50"), "epochs_near_chance"] == 0
    assert rows.loc[(7, "resnet50"), ["test_accuracy", "test_last_epoch_accuracy"]].tolist() == pytest.approx([0.9, 0.7])
    assert np.isnan(rows.loc[(7, "lstm"), "test_last_epoch_accuracy"])  # a run without the last epoch's test

    text = (root / "summary.md").read_text()
    assert "## Training over the seeds" in text
    assert (f"- **ResNet50**: validation near chance (at or below {report.NEAR_CHANCE}) in some epoch in 1 of 2 "
            "seeds, 2 of 8 epochs in all; its training images near chance in inference mode in some epoch in 1 of "
            "2 seeds; the kept epoch the last one in 1 of 2 seeds; test accuracy 0.80-0.90 at the kept epoch, "
            "0.70-0.80 at the last.") in text
    assert "- **LSTM**: validation near chance" in text and "test accuracy 0.60 at the kept epoch." in text
    assert "| ResNet50 | 8 | 2 | 0.50-0.80 | 0.50 | 4 | 0.80 [0.71, 0.87] | 0.80 |" in re.sub(" +", " ", text)


def test_seed_curves_draw_each_seed_in_every_panel_of_its_models(hand_made, tmp_path):
    import matplotlib.pyplot as plt

    from cxr_utils.plots import MIN_POINTS, smallest_shown_points

    root, _ = hand_made
    with pytest.raises(ValueError, match="nothing to plot"):
        study.plot_seed_curves([(8, root / "seed-8")])
    write_run(root / "seed-8", "resnet50", [0.5, 0.7, 0.6], [0.45, 0.7, 0.6], 2, (40, 10, 10, 40), seed=8)
    write_run(root / "seed-7", "resnet50", [0.8, 0.9, 0.85], [0.8, 0.9, 0.85], 2, (45, 5, 5, 45), seed=7)
    write_run(root / "seed-7", "lstm", [0.6] * 3, [0.65] * 3, 1, (30, 20, 20, 30), seed=7)
    figure = study.plot_seed_curves([(8, root / "seed-8"), (7, root / "seed-7")], path=tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0
    axes = np.array(figure.axes[:4]).reshape(2, 2)  # ResNet50 and the LSTM; the hybrid trained in no seed
    assert [ax.get_title() for ax in axes[0]] == ["ResNet50", "LSTM"]
    seed_lines = [[line for line in ax.get_lines() if line.get_label().startswith("seed")] for ax in axes.flat]
    assert [[line.get_label() for line in lines] for lines in seed_lines] == [
        ["seed 8", "seed 7"], ["seed 7"], ["seed 8", "seed 7"], ["seed 7"]]
    assert list(seed_lines[2][0].get_ydata()) == [0.45, 0.7, 0.6]  # bottom row: inference mode
    assert seed_lines[0][1].get_color() == seed_lines[1][0].get_color()  # a seed keeps its colour
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend[:2] == ["seed 8", "seed 7"] and len(legend) == 4
    assert smallest_shown_points(figure) >= MIN_POINTS
    plt.close(figure)


def test_a_summary_of_evaluation_files_alone_has_no_training_section(hand_made):
    root, _ = hand_made
    result = study.summarise(root)
    assert result["stability"].empty and "Training over the seeds" not in (root / "summary.md").read_text()


def test_summarise_command_and_its_errors(hand_made, tmp_path_factory, capsys):
    root, _ = hand_made
    assert study.main(["summarise", str(root)]) == 0
    assert "2 seeds" in capsys.readouterr().out
    empty = tmp_path_factory.mktemp("empty")
    assert study.main(["summarise", str(empty)]) == 2
    assert study.main(["summarise", str(empty / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err and "is evaluated yet" in err


def test_seed_list_and_time_left():
    assert study.seed_list(3) == [config.PROTOCOL.seed, config.PROTOCOL.seed + 1, config.PROTOCOL.seed + 2]
    assert study.seed_list(None) == study.seed_list(5)
    assert study.seed_list(listed="42, 7,1000") == [42, 7, 1000]
    for bad in ("", "1,1", "a,b", "-3"):
        with pytest.raises(ValueError):
            study.seed_list(listed=bad)
    with pytest.raises(ValueError):
        study.seed_list(0)
    assert study.time_left({"resnet50": [10, 30], "lstm": [5]}, ["resnet50", "lstm", "lstm"]) == "about 30 s left"
    assert "lstm not timed yet" in study.time_left({"resnet50": [60]}, ["resnet50", "lstm"])
    assert report.duration_text(3725) == "1 h 02 min"


@pytest.mark.parametrize("argv, message", [
    (["seeds", "--seeds", "x"], "invalid int value"),
    (["seeds", "--seeds", "2", "--seed-list", "1,2"], "not allowed with"),
    (["seeds", "--mixed-precision", "half"], "invalid choice"),
    (["seeds", "--seeds", "0"], "positive integer"),
    (["seeds", "-p", "seed=3"], "--seeds N or --seed-list"),
    (["seeds", "-p", "epochs"], "NAME=VALUE"),
    (["seeds", "-p", "epochs=0"], "epochs must be a positive integer"),
    (["seeds", "-p", "colour=red"], "unknown parameter"),
    (["seeds", "--profile", "sample", "-p", "weights=/no/such/file.h5"], "does not exist"),
    ([], "required"),
])
def test_bad_arguments_give_one_line_and_exit_code_2(argv, message, capsys):
    try:
        code = study.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_the_recorded_command_names_the_module_to_run_again():
    import cxr_utils.run
    import cxr_utils.study.__main__ as study_main
    from cxr_utils import runtime

    # What sys.argv holds under `python -m cxr_utils.study seeds ...` and `python -m cxr_utils.run ...`.
    assert runtime.invoked_command([study_main.__file__, "seeds", "--seeds", "5"]) == \
        "python -m cxr_utils.study seeds --seeds 5"
    assert runtime.invoked_command([cxr_utils.run.__file__, "--profile", "sample"]) == \
        "python -m cxr_utils.run --profile sample"
    # Programs outside the package keep their file name only (no folder of this machine).
    assert runtime.invoked_command(["/opt/conda/bin/ipykernel_launcher.py", "-f", "k.json"]) == \
        "ipykernel_launcher.py -f k.json"


def test_bfloat16_policy_is_set_and_recorded_by_name():
    import keras

    from cxr_utils import runtime, training

    try:
        assert runtime.use_mixed_precision("bfloat16") is True
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert runtime.use_mixed_precision(False) is False
        assert keras.mixed_precision.global_policy().name == "float32"
        with pytest.raises(ValueError, match="bfloat16"):
            runtime.use_mixed_precision("half")
        assert training.TrainingConfig(mixed_precision="bfloat16").mixed_precision == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


# -- a tiny study on the real images (slow) -------------------------------------------------------


def _arguments(out, real_data, weights, cache, **overrides):
    parameters = {"n_per_class": 8, "epochs": 1, "batch_size": 8, "image_size": 32, "weights": weights,
                  "cache_dir": cache, **overrides}
    argv = ["seeds", "--seeds", "2", "--data-dir", str(real_data), "--out", str(out)]
    for name, value in parameters.items():
        argv += ["-p", f"{name}={value}"]
    return argv


@pytest.fixture(scope="module")
def tiny_study(real_data, imagenet_standin, tmp_path_factory):
    """Two seeds of the tiny study, run once for this module's tests: (folder, argv, stdout)."""
    root = tmp_path_factory.mktemp("study")
    out = root / "seeds"
    argv = _arguments(out, real_data, imagenet_standin, root / "cache")
    stdout = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(stdout):
        code = study.main(argv)
    print(f"tiny study (2 seeds x 3 models): {time.perf_counter() - start:.0f} s")
    assert code == 0, stdout.getvalue()
    return out, argv, stdout.getvalue()


def _per_seed(out, seed, name):
    return pd.read_csv(out / f"seed-{seed}" / "evaluation" / name, dtype={"claim": str})


@pytest.mark.slow
def test_tiny_study_writes_each_seed_the_verdicts_and_the_summary(tiny_study):
    out, _, stdout = tiny_study
    for seed in (42, 43):
        folder = out / f"seed-{seed}"
        for name in ("manifest.csv", "sample.csv", "split.csv", "report.md"):
            assert (folder / name).is_file(), name
        for model_id in config.REGISTRY:
            assert (folder / model_id / "metrics.json").is_file()
            assert not (folder / model_id / "model.keras").exists()  # no weights kept
        assert _per_seed(out, seed, "verdicts.csv")["claim"].tolist() == CLAIMS
        assert set(_per_seed(out, seed, "verdicts.csv")["verdict"]) <= set(claims.OUTCOMES)
    assert (out / "manifest.csv").read_bytes() == (out / "seed-43" / "manifest.csv").read_bytes()
    for name in study.SUMMARY_FILES:
        assert (out / name).is_file(), name

    record = json.loads((out / study.STUDY_RECORD).read_text())
    settings = record["settings"]
    assert (settings["n_per_class"], settings["epochs"], settings["image_size"]) == (8, 1, 32)
    assert settings["seeds"] == [42, 43] and settings["dtype_policy"] == "float32"
    assert set(record["runs"]) == {"42", "43"}
    for runs in record["runs"].values():
        assert set(runs) == set(config.REGISTRY)
        assert all(entry["wall_time_s"] > 0 and entry["dtype_policy"] == "float32" for entry in runs.values())
    assert record["wall_time_s"] > 0 and record["versions"]["keras"] and record["hardware"]["keras_backend"]
    assert set(record["evaluated"]) == {"42", "43"}

    progress = [line for line in stdout.splitlines() if " to go: " in line]
    assert len(progress) == 6
    assert progress[-1].endswith("0 models to go: nothing left.")
    assert "about" in progress[3]  # by seed 43, every model has been timed once


@pytest.mark.slow
def test_summary_equals_a_pandas_aggregation_of_the_seed_files(tiny_study):
    out, _, _ = tiny_study
    long = pd.concat([_per_seed(out, seed, name) for seed in (42, 43)
                      for name in ("metrics.csv", "probability_metrics.csv")])
    expected = long.groupby(["model", "metric"])["value"].agg(["mean", "std", "min", "max", "count"])
    written = pd.read_csv(out / "summary_metrics.csv").set_index(["model", "metric"])
    assert len(written) == len(MODELS) * len(study.SUMMARY_METRICS)
    for column in ("mean", "std", "min", "max"):
        assert np.allclose(written[column], expected.loc[written.index, column]), column
    assert (written["n_seeds"] == 2).all()

    verdicts = pd.concat([_per_seed(out, seed, "verdicts.csv") for seed in (42, 43)])
    counts = pd.read_csv(out / "summary_verdicts.csv", dtype={"claim": str}).set_index("claim")
    for claim, rows in verdicts.groupby("claim"):
        for outcome in claims.OUTCOMES:
            assert counts.loc[claim, outcome] == (rows["verdict"] == outcome).sum()
    assert "2 seeds (42, 43)" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_the_two_seeds_draw_different_samples(tiny_study):
    out, _, _ = tiny_study
    samples = [pd.read_csv(out / f"seed-{seed}" / "sample.csv") for seed in (42, 43)]
    assert set(samples[0]["sha256"]) != set(samples[1]["sha256"])
    assert [json.loads((out / f"seed-{s}" / "split.settings.json").read_text())["seed"] for s in (42, 43)] == [42, 43]


@pytest.mark.slow
def test_running_again_trains_nothing(tiny_study, monkeypatch, capsys):
    from cxr_utils import training

    out, argv, _ = tiny_study

    def must_not_train(*args, **kwargs):
        raise AssertionError("run_experiment called on a complete study")

    monkeypatch.setattr(training, "run_experiment", must_not_train)
    assert study.main(argv) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("complete, skipped") == 2 and "0 models to train" in stdout


@pytest.mark.slow
def test_resuming_with_other_parameters_is_refused(tiny_study, real_data, imagenet_standin, monkeypatch, capsys):
    from cxr_utils import training

    out, _, _ = tiny_study
    before = (out / study.STUDY_RECORD).read_bytes()
    monkeypatch.setattr(training, "run_experiment", lambda *a, **k: pytest.fail("trained in a refused study"))
    argv = _arguments(out, real_data, imagenet_standin, out.parent / "cache", epochs=2)
    assert study.main(argv) == 2
    err = capsys.readouterr().err
    assert "epochs=1" in err and "epochs=2" in err and err.count("\n") == 1
    assert (out / study.STUDY_RECORD).read_bytes() == before


@pytest.mark.slow
def test_a_deleted_model_is_retrained_alone_and_an_interrupted_run_resumes(tiny_study, tmp_path, monkeypatch,
                                                                           capsys):
    from cxr_utils import training

    source, argv, _ = tiny_study
    out = tmp_path / "copy"
    shutil.copytree(source, out)  # copy2: modification times kept, so seed 42 stays complete
    argv = [str(out) if a == str(source) else a for a in argv]
    shutil.rmtree(out / "seed-43" / "lstm")
    kept = (out / "seed-42" / "evaluation" / "verdicts.csv").stat().st_mtime_ns
    real = training.run_experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "run_experiment", interrupted)
    assert study.main(argv) == 130
    assert "resume" in capsys.readouterr().err

    calls = []

    def recorded(model_name, split, results_dir, config, **kwargs):
        calls.append((model_name, results_dir.name, config.seed))
        return real(model_name, split, results_dir, config, **kwargs)

    monkeypatch.setattr(training, "run_experiment", recorded)
    assert study.main(argv) == 0
    assert calls == [("lstm", "seed-43", 43)]
    assert (out / "seed-43" / "lstm" / "metrics.json").is_file()
    assert (out / "seed-42" / "evaluation" / "verdicts.csv").stat().st_mtime_ns == kept
    assert study.seed_complete(out / "seed-43")  # judged again after the retrained model
    assert "1 model to train" in capsys.readouterr().out
