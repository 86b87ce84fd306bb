"""Verdicts on the paper's claims follow from the numbers, in every direction."""

import pandas as pd

from cxr_utils import report


def _ours(hybrid_accuracy, n=100, width=0.05):
    rows = []
    for model, accuracy in (("ResNet50-LSTM", hybrid_accuracy), ("ResNet50", 0.90), ("LSTM", 0.80)):
        for metric in report.METRICS:
            rows.append({"model": model, "metric": metric, "value": accuracy,
                         "low": accuracy - width, "high": min(1.0, accuracy + width), "n": n})
    return pd.DataFrame(rows)


def _mcnemar(hybrid_only, other_only, p):
    return pd.DataFrame([
        {"model_a": "ResNet50", "model_b": "ResNet50-LSTM", "a_only_correct": other_only, "b_only_correct": hybrid_only, "p_value": p},
        {"model_a": "LSTM", "model_b": "ResNet50-LSTM", "a_only_correct": other_only, "b_only_correct": hybrid_only, "p_value": p},
    ])


def _best(train_loss, val_loss):
    return pd.DataFrame({"train_loss": [train_loss], "train_accuracy": [0.9], "val_loss": [val_loss], "val_accuracy": [0.9]},
                        index=["ResNet50-LSTM"])


def test_consistent_supported_reproduced():
    verdicts = report.claim_verdicts(_ours(0.95), _mcnemar(12, 1, 0.003), _best(0.29, 0.31), weights="imagenet")
    assert verdicts["verdict"].tolist() == ["consistent", "supported", "reproduced"]
    assert "Setting differs" not in " ".join(verdicts["reason"])


def test_not_supported_when_paper_lies_above_the_interval_and_difference_is_noise():
    verdicts = report.claim_verdicts(_ours(0.70), _mcnemar(5, 3, 0.73), _best(0.40, 0.35), weights=None)
    assert verdicts["verdict"].tolist() == ["not supported", "not supported", "not reproduced"]
    assert "p = 0.73" in verdicts.loc[1, "reason"]
    assert "from scratch" in verdicts.loc[0, "reason"]


def test_small_test_set_is_not_testable():
    verdicts = report.claim_verdicts(_ours(0.95, n=24), _mcnemar(12, 1, 0.003), _best(0.29, 0.31))
    assert verdicts.loc[0, "verdict"] == "not testable here"


def test_settings_line_names_every_setting_and_flags_from_scratch():
    line = report.settings_markdown({"profile": "sample", "epochs": 2, "weights": None, "cache_dir": "/x"})
    assert "`epochs=2`" in line and "`weights=None`" in line and "cache_dir" not in line
    assert "Trained from scratch" in line
    assert "Trained from scratch" not in report.settings_markdown({"weights": "imagenet"})


def test_run_record_markdown():
    text = report.run_record_markdown({
        "settings": {"epochs": 15}, "notebooks": {"03_resnet50": {"wall_time_s": 12.5, "status": "ok", "code_sha256": "ab" * 32}},
        "hardware": {"accelerator": "CPU only"}, "versions": {"keras": "3.15.1"}, "git_commit": "abc", "wall_time_s": 20,
    })
    assert "| 03_resnet50 | 12.5 | ok | `abababababab` |" in text and "| keras | 3.15.1 |" in text


def _results_with_histories(tmp_path, val_accuracies, train_accuracy, test_accuracy):
    """A results folder as notebooks 03-06 write it, with chosen validation curves."""
    from cxr_utils import paper

    best = max(range(len(val_accuracies)), key=val_accuracies.__getitem__)
    for model_id in paper.MODELS:
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
    from cxr_utils import evaluation

    results = _results_with_histories(tmp_path, [0.5, 0.52, 0.9, 0.6], train_accuracy=0.7, test_accuracy=0.8)
    findings = evaluation.training_findings(results)
    hybrid = findings.loc["ResNet50-LSTM"]
    assert hybrid["best_epoch"] == 3 and hybrid["epochs_near_chance"] == 2
    assert abs(hybrid["selection_optimism"] - 0.1) < 1e-9
    assert "extended_accuracy" not in findings  # no extended test set evaluated
    text = report.findings_markdown(findings)
    assert "ranged from 0.50 to 0.90" in text and "near chance in 2 of 4 epochs" in text
    assert "underfits" in text and "Ranking** on the test set (n=100)" in text


def test_findings_stay_quiet_about_steady_well_fitted_runs(tmp_path):
    from cxr_utils import evaluation

    results = _results_with_histories(tmp_path, [0.85, 0.9, 0.88], train_accuracy=0.95, test_accuracy=0.88)
    text = report.findings_markdown(evaluation.training_findings(results))
    assert "unsteady" not in text and "underfits" not in text


def test_findings_name_the_better_model_of_each_pair_and_ties_as_ties(tmp_path):
    from cxr_utils import evaluation

    findings = evaluation.training_findings(
        _results_with_histories(tmp_path, [0.8, 0.9], train_accuracy=0.95, test_accuracy=0.88))
    mcnemar = pd.DataFrame([
        {"model_a": "ResNet50", "model_b": "LSTM", "a_only_correct": 30, "b_only_correct": 5, "p_value": 1e-5},
        {"model_a": "LSTM", "model_b": "ResNet50-LSTM", "a_only_correct": 7, "b_only_correct": 7, "p_value": 1.0},
    ])
    text = report.findings_markdown(findings, mcnemar_extended=mcnemar)
    assert "ResNet50 vs LSTM: ResNet50 right more often (30 vs 5 discordant images, McNemar p = 1e-05, significant)" in text
    assert "LSTM vs ResNet50-LSTM: each right alone equally often (7 vs 7" in text
