"""Verdicts on the paper's claims follow from the numbers, in every direction."""

import re

import numpy as np
import pandas as pd
import pytest

from cxr_utils import claims, config, findings, metrics, paper, report, run_pages, summaries


def _ours(hybrid_accuracy, n=100, width=0.05, others=(0.90, 0.80)):
    rows = []
    for model, accuracy in zip(("ResNet50-LSTM", "ResNet50", "LSTM"), (hybrid_accuracy, *others)):
        for metric in config.METRICS:
            rows.append({"model": model, "metric": metric, "value": accuracy, "method": "Wilson score",
                         "low": accuracy - width, "high": min(1.0, accuracy + width), "n": n})
    return pd.DataFrame(rows)


def _mcnemar(hybrid_only, other_only, p, lstm=None, n=100):
    """McNemar rows as evaluation.mcnemar_table writes them; ``lstm`` = (hybrid_only, other_only, p)
    for the LSTM pair (default: the same as for ResNet50)."""
    lstm = lstm or (hybrid_only, other_only, p)
    return pd.DataFrame([
        {"model_a": "ResNet50", "model_b": "LSTM", "a_only_correct": 10, "b_only_correct": 3, "p_value": 0.09, "n": n},
        {"model_a": "ResNet50", "model_b": "ResNet50-LSTM", "a_only_correct": other_only, "b_only_correct": hybrid_only,
         "p_value": p, "n": n},
        {"model_a": "ResNet50-LSTM", "model_b": "LSTM", "a_only_correct": lstm[0], "b_only_correct": lstm[1],
         "p_value": lstm[2], "n": n},
    ])


def _best(train_loss, val_loss):
    return pd.DataFrame({"train_loss": [train_loss], "train_accuracy": [0.9], "val_loss": [val_loss], "val_accuracy": [0.9]},
                        index=["ResNet50-LSTM"])


def _gap(low, high, gap=None):
    gap = (low + high) / 2 if gap is None else gap
    return {"train_loss": 0.3, "val_loss": 0.3 + gap, "gap": gap, "low": low, "high": high, "confidence": 0.95,
            "n_train": 800, "n_val": 100, "method": "percentile bootstrap (2000 resamples, seed 0)"}


def _verdicts(ours=None, mcnemar=None, loss_gap=None, weights="imagenet", best=None):
    verdicts = claims.claim_verdicts(
        _ours(0.95) if ours is None else ours, _mcnemar(12, 1, 0.003) if mcnemar is None else mcnemar,
        _best(0.29, 0.31) if best is None else best, weights=weights, loss_gap=loss_gap)
    return verdicts.set_index("claim")


def test_one_row_per_claim_and_pair_with_the_papers_texts():
    verdicts = claims.claim_verdicts(_ours(0.95), _mcnemar(12, 1, 0.003), _best(0.29, 0.31), weights="imagenet",
                                     loss_gap=_gap(0.01, 0.05))
    assert list(verdicts.columns) == ["claim", "text", "paper", "ours", "verdict", "reason"]
    assert verdicts["claim"].tolist() == ["1", "2a", "2b", "3"]
    assert verdicts["verdict"].tolist() == ["supported"] * 4
    assert set(verdicts["verdict"]) <= set(claims.OUTCOMES)
    texts = paper.claims().set_index("id")["claim"]
    assert verdicts["text"].iloc[0] == texts[1] and verdicts["text"].iloc[3] == texts[3]
    assert verdicts["text"].iloc[1].startswith(texts[2]) and verdicts["text"].iloc[1].endswith("vs ResNet50)")
    assert verdicts["text"].iloc[2].endswith("vs LSTM)")
    assert "Setting differs" not in " ".join(verdicts["reason"])


# Claim 1: each of the paper's 0.95 / 0.96 / 0.94 / 0.95 against this run's 95% intervals.

def test_claim1_supported_when_every_paper_value_lies_inside():
    claim = _verdicts(ours=_ours(0.95)).loc["1"]
    assert claim["verdict"] == "supported" and "inside" in claim["reason"]
    assert claim["ours"].startswith("0.95 [0.90, 1.00]")


@pytest.mark.parametrize("accuracy, side", [(0.70, "above"), (0.995, "below")])
def test_claim1_contradicted_when_a_paper_value_lies_outside(accuracy, side):
    # The interval [0.65, 0.75] lies below all four; [0.99, 1.00] lies above all four.
    claim = _verdicts(ours=_ours(accuracy, width=0.005 if side == "below" else 0.05)).loc["1"]
    assert claim["verdict"] == "contradicted"
    assert f"the paper's accuracy, precision, recall, f1 lie {side} this run's 95% intervals" in claim["reason"]


def test_claim1_contradicted_names_only_the_metrics_outside():
    ours = _ours(0.95, width=0.01)  # [0.94, 0.96]: 0.95, 0.96 and 0.94 inside, up to the edges
    ours.loc[(ours["model"] == "ResNet50-LSTM") & (ours["metric"] == "precision"), "high"] = 0.955
    claim = _verdicts(ours=ours).loc["1"]
    assert claim["verdict"] == "contradicted"
    assert claim["reason"] == "the paper's precision lies above this run's 95% interval."


def test_claim1_bounds_compare_with_a_tolerance_for_float32_noise():
    ours = _ours(0.95, width=0.01)
    hybrid = ours["model"] == "ResNet50-LSTM"
    # 0.96 and 0.94 stored as float32 sit on the bounds but a hair inside or outside them.
    ours.loc[hybrid & (ours["metric"] == "precision"), "high"] = float(np.float32(0.96))  # 0.95999998
    ours.loc[hybrid & (ours["metric"] == "recall"), "low"] = float(np.float32(0.94)) + 1e-8
    assert float(np.float32(0.96)) < 0.96
    assert _verdicts(ours=ours).loc["1", "verdict"] == "supported"
    ours.loc[hybrid & (ours["metric"] == "precision"), "high"] = 0.9599  # a real miss, not noise
    assert _verdicts(ours=ours).loc["1", "verdict"] == "contradicted"


def test_claim1_inconclusive_without_an_interval():
    ours = _ours(0.95)
    f1 = (ours["model"] == "ResNet50-LSTM") & (ours["metric"] == "f1")
    ours.loc[f1, ["low", "high"]] = np.nan
    ours.loc[f1, "method"] = "no interval: all 2000 bootstrap resamples gave F1 = 1"
    claim = _verdicts(ours=ours).loc["1"]
    assert claim["verdict"] == "inconclusive"
    assert "no interval for f1" in claim["reason"] and "gave F1 = 1" in claim["reason"]


def test_claim1_far_from_the_paper_is_contradicted_on_a_small_test_set_too():
    small = _verdicts(ours=_ours(0.70, n=24)).loc["1"]  # [0.65, 0.75]: excludes 0.95 whatever n is
    assert small["verdict"] == "contradicted" and "lie above this run's 95% intervals" in small["reason"]


def test_claim1_an_interval_too_wide_to_exclude_a_weaker_model_is_inconclusive():
    wide = _verdicts(ours=_ours(0.95, width=0.2)).loc["1"]  # [0.75, 1.00] holds 0.95 and 0.78 alike
    assert wide["verdict"] == "inconclusive"
    assert f"more than {claims.CLAIM1_MARGIN:.2f} below them" in wide["reason"]
    assert "accuracy down to 0.75" in wide["reason"]


def _claim1_on_predictions(n, wrong_covid, wrong_normal):
    """Claim 1 judged on ``n`` balanced test images with the given errors, through the run's own
    interval code (Wilson for the threshold metrics, the bootstrap for F1)."""
    labels = np.repeat([1, 0], n // 2)
    predicted = labels.copy()
    predicted[:wrong_covid] = 0
    predicted[n // 2 : n // 2 + wrong_normal] = 1
    ours = metrics.metrics_with_intervals(labels, predicted, seed=42).reset_index()
    hybrid = ours.set_index("metric")
    return claims.claim_1(hybrid, paper.table6().loc["ResNet50-LSTM"])[0]


@pytest.mark.parametrize("n, errors, expected", [
    (12, (0, 0), "inconclusive"),  # perfect on 12 images: the Wilson interval reaches 0.76
    (12, (3, 3), "contradicted"),  # at chance-like 0.50 on 12 images: 0.95 lies outside
    (100, (3, 2), "supported"),  # the paper's own counts (Table 5): 0.95 on 100 images
    (100, (10, 9), "contradicted"),
    (100, (6, 0), "inconclusive"),  # recall 0.88 [0.76, 0.94]: holds 0.94, and 0.76 too
    (1000, (25, 25), "supported"),
    (1000, (60, 60), "contradicted"),
])
def test_claim1_rule_at_small_and_large_n(n, errors, expected):
    assert _claim1_on_predictions(n, *errors) == expected


def test_claim1_outcomes_the_number_of_images_allows():
    def outcomes(n, errors):
        return {_claim1_on_predictions(n, a, b) for a in errors for b in errors}

    # 12 images: even a perfect model cannot support the claim, its intervals are too wide.
    assert outcomes(12, range(0, 6)) == {"inconclusive", "contradicted"}
    assert outcomes(100, (0, 2, 4, 6, 8)) == {"supported", "inconclusive", "contradicted"}
    # 1,000 images: the intervals are narrow, so they either hold the paper's values closely or exclude them.
    assert outcomes(1000, (0, 20, 40, 60)) == {"supported", "contradicted"}


# Claim 2, per pair: McNemar's exact test on the images only one model got right.

@pytest.mark.parametrize("resnet, lstm, expected", [
    ((12, 1, 0.003), (12, 1, 0.003), ("supported", "supported")),
    ((1, 12, 0.003), (20, 4, 0.0015), ("contradicted", "supported")),
    ((5, 3, 0.73), (1, 12, 0.003), ("inconclusive", "contradicted")),
    ((6, 6, 1.0), (9, 2, 0.065), ("inconclusive", "inconclusive")),
])
def test_claim2_is_judged_per_pair(resnet, lstm, expected):
    verdicts = _verdicts(mcnemar=_mcnemar(*resnet, lstm=lstm))
    assert (verdicts.loc["2a", "verdict"], verdicts.loc["2b", "verdict"]) == expected
    for claim, (hybrid_only, other_only, p), other in (("2a", resnet, "ResNet50"), ("2b", lstm, "LSTM")):
        reason = verdicts.loc[claim, "reason"]
        assert f"the hybrid alone is right on {hybrid_only} images, {other} alone on {other_only}" in reason
        assert f"p = {report.p_value(p)}" in reason


def test_claim2_on_the_papers_test_size_says_what_its_gap_could_show():
    verdicts = _verdicts(mcnemar=_mcnemar(5, 3, 0.73))
    # The paper's 95 vs 93: at best 2 images right only by the hybrid, none by ResNet50.
    best_case = metrics.mcnemar_test(np.ones(100), np.ones(100), np.r_[np.zeros(2), np.ones(98)])["p_value"]
    assert best_case == pytest.approx(0.5)
    assert "the paper's 2-point gap could not reach significance: even 2 vs 0 discordant images gives p = 0.5" in (
        verdicts.loc["2a", "reason"])
    assert "the paper's 11-point gap can reach significance" in verdicts.loc["2b", "reason"]
    larger = _verdicts(ours=_ours(0.95, n=983), mcnemar=_mcnemar(5, 3, 0.73, n=983))
    assert "2-point gap" not in larger.loc["2a", "reason"]


# Claim 3: the loss gap's interval, from per-image losses in inference mode.

@pytest.mark.parametrize("low, high, expected, words", [
    (0.004, 0.04, "supported", "lies above 0"),
    (-0.05, -0.01, "contradicted", "lies below 0"),
    (-0.03, 0.07, "inconclusive", "includes 0"),
    (1e-9, 0.05, "inconclusive", "includes 0"),  # a bound at 0 up to float noise is not above it
    (-0.05, -1e-9, "inconclusive", "includes 0"),
    (0.12, 0.30, "contradicted", "overfits more than slightly"),  # above the bound for "slightly"
    (0.05, 0.14, "inconclusive", "reaches past 0.10"),
])
def test_claim3_follows_the_interval_of_the_loss_gap(low, high, expected, words):
    claim = _verdicts(loss_gap=_gap(low, high)).loc["3"]
    assert claim["verdict"] == expected and words in claim["reason"]
    assert f"[{low:+.3f}, {high:+.3f}]" in claim["ours"] and "800 training, 100 validation" in claim["ours"]
    assert "context only" in claim["reason"]  # Keras' epoch averages, not evidence


def test_claim3_with_moving_batchnorm_statistics_is_inconclusive():
    claim = _verdicts(loss_gap={**_gap(0.004, 0.04), "batchnorm": claims.MOVING}).loc["3"]
    assert claim["verdict"] == "inconclusive" and "moving statistics" in claim["reason"]
    recomputed = _verdicts(loss_gap={**_gap(0.004, 0.04), "batchnorm": claims.RECOMPUTED}).loc["3"]
    assert recomputed["verdict"] == "supported" and "recomputed from training images" in recomputed["ours"]


def _gap_on_images(n, val_extra_loss):
    """Claim 3 judged on ``n`` training and ``n`` validation images whose per-image losses differ by
    ``val_extra_loss`` (negative: the training images' losses are the higher): the same
    probabilities of the right class (0.7-0.9) on both sides, one side's multiplied by
    exp(-|difference|), which adds exactly that much to -log(p)."""
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 0], n // 2)
    right = rng.uniform(0.7, 0.9, n)
    train_right, val_right = right * np.exp(-max(-val_extra_loss, 0)), right * np.exp(-max(val_extra_loss, 0))
    train, val = (np.where(labels == 1, r, 1 - r) for r in (train_right, val_right))
    gap = metrics.loss_gap_interval(labels, train, labels, val, seed=42)
    assert gap["gap"] == pytest.approx(val_extra_loss, abs=1e-5)
    return claims.claim_3({**gap, "batchnorm": claims.RECOMPUTED}, 0.0)[0]


@pytest.mark.parametrize("n, extra, expected", [
    (12, -0.3, "contradicted"), (12, 0.0, "inconclusive"), (12, 0.05, "inconclusive"), (12, 0.3, "contradicted"),
    (100, -0.3, "contradicted"), (100, 0.0, "inconclusive"), (100, 0.05, "supported"), (100, 0.1, "inconclusive"),
    (100, 0.3, "contradicted"),
    (1000, -0.3, "contradicted"), (1000, 0.0, "inconclusive"), (1000, 0.05, "supported"),
    (1000, 0.1, "inconclusive"), (1000, 0.3, "contradicted"),
])
def test_claim3_rule_at_small_and_large_n(n, extra, expected):
    assert _gap_on_images(n, extra) == expected


def test_claim3_cannot_be_supported_on_12_images():
    # The interval of a mean over 12 images is wider than the band (0, 0.10] that "slightly" allows.
    assert "supported" not in {_gap_on_images(12, extra) for extra in np.arange(0, 0.11, 0.01)}


def test_claim3_without_per_image_losses_is_inconclusive_with_keras_as_context():
    claim = _verdicts(loss_gap=None, best=_best(0.29, 0.40)).loc["3"]
    assert claim["verdict"] == "inconclusive"
    assert "per-image losses are missing" in claim["reason"] and "fit_predictions.csv" in claim["reason"]
    assert "+0.110" in claim["reason"] and "dropout on" in claim["reason"] and "not evidence" in claim["reason"]
    assert claim["ours"] == "val - train loss = +0.110 (Keras epoch averages, context only)"
    nan = _verdicts(loss_gap=_gap(np.nan, np.nan, gap=0.02)).loc["3"]
    assert nan["verdict"] == "inconclusive" and "no interval" in nan["reason"]


# A run from scratch does not test the paper's claims; its numbers are still shown.

@pytest.mark.parametrize("ours, mcnemar, loss_gap, indicated", [
    (_ours(0.95), _mcnemar(12, 1, 0.003), _gap(0.01, 0.05), ["supported"] * 4),
    (_ours(0.70), _mcnemar(1, 12, 0.003), _gap(-0.05, -0.01), ["contradicted"] * 4),
    (_ours(0.95, n=24, width=0.2), _mcnemar(5, 3, 0.73), None, ["inconclusive"] * 4),
])
def test_from_scratch_is_not_tested_in_the_papers_setting(ours, mcnemar, loss_gap, indicated):
    verdicts = _verdicts(ours=ours, mcnemar=mcnemar, loss_gap=loss_gap, weights=None)
    in_setting = _verdicts(ours=ours, mcnemar=mcnemar, loss_gap=loss_gap, weights="imagenet")
    assert (verdicts["verdict"] == "not tested in the paper's setting").all()
    assert (verdicts["ours"] == in_setting["ours"]).all()  # the run's own numbers still appear
    for claim, outcome in zip(verdicts.index, indicated):
        reason = verdicts.loc[claim, "reason"]
        assert reason.startswith("Setting differs from the paper: backbone trained from scratch")
        assert f"would indicate *{outcome}*: {in_setting.loc[claim, 'reason']}" in reason
        assert claims.indicated_verdict(verdicts.loc[claim, "verdict"], reason) == outcome
    assert claims.indicated_verdict("supported", "anything") == "supported"


def test_a_local_imagenet_weights_file_is_the_papers_setting():
    verdicts = _verdicts(weights="/w/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert "not tested in the paper's setting" not in set(verdicts["verdict"])


def test_thresholds_compare_with_a_tolerance():
    stored = float(np.float32(0.55))  # 0.550000011920929, as history.csv holds it
    assert claims.at_most(stored, 0.55) and claims.at_least(0.55, stored)
    assert not claims.at_most(0.5501, 0.55) and claims.at_least(0.5501, 0.55)
    assert claims.at_most(np.array([0.5, stored, 0.6]), report.NEAR_CHANCE).tolist() == [True, True, False]


def test_the_settings_line_stops_a_chapter_on_a_wrong_parameter():
    with pytest.raises(config.ParameterError, match="epochs must be a positive integer, not '15'"):
        summaries.settings_markdown({"profile": "paper", "epochs": "15"})
    with pytest.raises(config.ParameterError, match="lung_box must be four fractions"):
        summaries.settings_markdown({"lung_box": (0.1, 0.2, 0.7)})


def test_settings_line_names_every_setting_and_flags_from_scratch():
    line = summaries.settings_markdown({"profile": "sample", "epochs": 2, "weights": None, "cache_dir": "/x"})
    assert "`epochs=2`" in line and "`weights=None`" in line and "cache_dir" not in line
    assert "Trained from scratch" in line
    assert "Trained from scratch" not in summaries.settings_markdown({"weights": "imagenet"})


def test_run_record_markdown():
    text = run_pages.run_record_markdown({
        "settings": {"epochs": 15},
        "notebooks": {"03_resnet50": {"wall_time_s": 12.5, "status": "ok", "code_sha256": "ab" * 32},
                      "04_lstm": {"wall_time_s": 3.0, "peak_memory_mb": 2345, "status": "ok", "code_sha256": "cd" * 32}},
        "hardware": {"accelerator": "CPU only", "tensorflow_threads": {"TF_NUM_INTRAOP_THREADS": "1"}},
        "versions": {"keras": "3.15.1"}, "git_commit": "abc", "wall_time_s": 20,
    })
    # A record made before memory was sampled leaves the cell blank.
    text = re.sub(" +", " ", text)
    assert "| 03_resnet50 | 12.5 | | ok | `abababababab` |" in text and "| keras | 3.15.1 |" in text
    assert "| 04_lstm | 3.0 | 2,345 | ok | `cdcdcdcdcdcd` |" in text
    assert "| tensorflow threads | TF_NUM_INTRAOP_THREADS=1 |" in text


def _results_with_histories(tmp_path, val_accuracies, train_accuracy, test_accuracy):
    """A results folder as notebooks 03-06 write it, with chosen validation curves."""
    from cxr_utils import config

    best = max(range(len(val_accuracies)), key=val_accuracies.__getitem__)
    for model_id in config.REGISTRY:
        folder = tmp_path / model_id
        folder.mkdir()
        epochs = range(1, len(val_accuracies) + 1)
        pd.DataFrame({"epoch": epochs, "loss": 0.5, "accuracy": train_accuracy, "val_loss": 0.5,
                      "val_accuracy": val_accuracies,
                      "is_best": [i == best for i in range(len(val_accuracies))]}
                     ).to_csv(folder / "history.csv", index=False)
    (tmp_path / "evaluation").mkdir()
    _ours(test_accuracy).to_csv(tmp_path / "evaluation" / "metrics.csv", index=False)
    return tmp_path


def test_findings_follow_the_histories(tmp_path):
    results = _results_with_histories(tmp_path, [0.5, 0.52, 0.9, 0.6], train_accuracy=0.7, test_accuracy=0.8)
    table = findings.training_findings(results)
    hybrid = table.loc["ResNet50-LSTM"]
    assert hybrid["best_epoch"] == 3 and hybrid["epochs_near_chance"] == 2
    assert abs(hybrid["selection_optimism"] - 0.1) < 1e-9
    assert "extended_accuracy" not in table  # no extended test set evaluated
    text = findings.findings_markdown(table)
    assert "ranged from 0.50 to 0.90" in text and "near chance in 2 of 4 epochs" in text
    assert "underfits" in text and "Ranking** on the test set (n=100)" in text


def test_findings_stay_quiet_about_steady_well_fitted_runs(tmp_path):
    results = _results_with_histories(tmp_path, [0.85, 0.9, 0.88], train_accuracy=0.95, test_accuracy=0.88)
    text = findings.findings_markdown(findings.training_findings(results))
    assert "unsteady" not in text and "underfits" not in text


def test_findings_name_the_better_model_of_each_pair_and_ties_as_ties(tmp_path):
    table = findings.training_findings(
        _results_with_histories(tmp_path, [0.8, 0.9], train_accuracy=0.95, test_accuracy=0.88))
    mcnemar = pd.DataFrame([
        {"model_a": "ResNet50", "model_b": "LSTM", "a_only_correct": 30, "b_only_correct": 5, "p_value": 1e-5},
        {"model_a": "LSTM", "model_b": "ResNet50-LSTM", "a_only_correct": 7, "b_only_correct": 7, "p_value": 1.0},
    ])
    text = findings.findings_markdown(table, mcnemar_extended=mcnemar)
    assert "ResNet50 vs LSTM: ResNet50 right more often (30 vs 5 discordant images, McNemar p = 1.0e-05, significant)" in text
    assert "LSTM vs ResNet50-LSTM: each right alone equally often (7 vs 7" in text


def test_near_chance_counts_a_float32_stored_055(tmp_path):
    stored = float(np.float32(0.55))
    table = findings.training_findings(
        _results_with_histories(tmp_path, [0.5, stored, 0.56, 0.9], train_accuracy=0.95, test_accuracy=0.88))
    assert table.loc["ResNet50-LSTM", "epochs_near_chance"] == 2  # 0.5 and the stored 0.55


def _scratch_verdicts(ours, mcnemar):
    return claims.claim_verdicts(ours, mcnemar, _best(0.29, 0.31), weights=None)


def test_findings_name_each_claim_whose_verdict_changes_with_more_images(tmp_path):
    table = findings.training_findings(
        _results_with_histories(tmp_path, [0.8, 0.9], train_accuracy=0.95, test_accuracy=0.88))
    small = claims.claim_verdicts(_ours(0.95), _mcnemar(5, 3, 0.73), _best(0.29, 0.31), weights="imagenet")
    large = claims.claim_verdicts(_ours(0.95, n=983), _mcnemar(5, 3, 0.73, lstm=(40, 10, 1e-5), n=983),
                                  _best(0.29, 0.31), weights="imagenet")
    text = findings.findings_markdown(table, verdicts=small, verdicts_extended=large)
    assert "**Claim 2b** changes from *inconclusive* on the split's test set to *supported* on the extended one." in text
    assert "Claim 2a" not in text and "Claim 1 " not in text
    # As saved and read back (run.py reads verdicts.csv): the ids are text either way.
    small.to_csv(tmp_path / "small.csv", index=False)
    large.to_csv(tmp_path / "large.csv", index=False)
    assert text == findings.findings_markdown(table, verdicts=pd.read_csv(tmp_path / "small.csv"),
                                            verdicts_extended=pd.read_csv(tmp_path / "large.csv"))
    # From scratch every verdict reads "not tested", yet what the numbers indicate still changes.
    scratch = findings.findings_markdown(
        table, verdicts=_scratch_verdicts(_ours(0.85, n=24, width=0.15), _mcnemar(5, 3, 0.73)),
        verdicts_extended=_scratch_verdicts(_ours(0.70, n=983), _mcnemar(5, 3, 0.73, n=983)))
    assert ("**Claim 1** changes from *inconclusive* on the split's test set to *contradicted* on the extended one "
            "(what this run's numbers indicate; not tested in the paper's setting).") in scratch
    same = findings.findings_markdown(table, verdicts=small, verdicts_extended=small)
    assert "**No verdict changes**" in same


def test_a_run_made_in_passes_names_each_pass_and_reproduces_from_the_last():
    record = {"settings": {"epochs": 15, "profile": "paper", "weights": None, "seed": 42},
              "notebooks": {name: {"wall_time_s": 1.0, "status": "ok", "code_sha256": "ab" * 32}
                            for name in ("01_data_collection", "03_resnet50", "04_lstm", "08_shortcuts")},
              "git_commit": "first", "created_utc": "2026-12-04T13:45:20+00:00", "wall_time_s": 4.0,
              "continued": [{"git_commit": "second", "created_utc": "2026-12-04T17:03:35+00:00",
                             "notebooks": ["03_resnet50", "04_lstm"]},
                            {"git_commit": "third", "created_utc": "2026-12-05T09:00:00+00:00",
                             "notebooks": ["04_lstm", "08_shortcuts"]}]}
    text = run_pages.run_record_markdown(record)
    assert "Made in 3 passes" in text
    assert "- pass 1: git commit `first`, started 2026-12-04T13:45:20+00:00: 01_data_collection\n" in text
    assert "- pass 2: git commit `second`, started 2026-12-04T17:03:35+00:00: 03_resnet50\n" in text
    assert "- pass 3: git commit `third`, started 2026-12-05T09:00:00+00:00: 04_lstm, 08_shortcuts" in text
    reproduce = run_pages.reproduce_markdown(record)
    assert "git checkout third\n" in reproduce and "the last of the 3 passes" in reproduce
    del record["continued"]  # one pass: its own commit, no list of passes
    assert "Git commit `first`" in run_pages.run_record_markdown(record)
    assert "git checkout first\n" in run_pages.reproduce_markdown(record)
    assert "passes" not in run_pages.reproduce_markdown(record)
