"""The texts the book shows about a run say what its files say, and name no machine's folders."""

import json
import re

import numpy as np
import pandas as pd

from cxr_utils import run_pages, summaries


def test_settings_line_shows_folders_by_their_last_part_only():
    line = summaries.settings_markdown({
        "data_dir": "/home/someone/data/covid19-radiography-224", "results_dir": "/srv/x/results/paper",
        "cache_dir": "/tmp/cache", "seed": 42, "weights": "imagenet", "unrelated": 1,
    })
    assert "/home/someone" not in line and "/srv/x" not in line and "cache" not in line
    assert "`data_dir='…/covid19-radiography-224'`" in line and "`results_dir='…/paper'`" in line
    assert "`seed=42`" in line and "unrelated" not in line
    assert summaries.shown_value("results_dir", "../results/paper") == "../results/paper"  # relative: as it is
    assert summaries.shown_value("weights", "/w/notop.h5") == "/w/notop.h5"  # only folders are shortened


def test_run_record_names_no_absolute_folder():
    text = run_pages.run_record_markdown({"settings": {"data_dir": "/home/someone/data/db", "epochs": 15}})
    assert "/home/someone" not in text and "'…/db'" in text and "| epochs | `15` |" in re.sub(" +", " ", text)


def test_dataset_statement_says_what_the_files_are(real_manifest):
    text = summaries.dataset_statement(real_manifest)
    counts = real_manifest["class"].value_counts()
    assert f"{counts['COVID']:,} COVID and {counts['Normal']:,} Normal" in text
    assert "224x224" in text and "re-encoded copies" in text  # the shared folder holds 224 px copies
    originals = real_manifest.assign(width=299, height=299, mode="L")
    assert "database's own 299x299 grayscale files" in summaries.dataset_statement(originals)


def _model_folder(tmp_path, val_accuracy, train_accuracy, inference_accuracy, last_right):
    folder = tmp_path / "resnet50"
    folder.mkdir()
    epochs = np.arange(1, len(val_accuracy) + 1)
    best = int(np.argmax(val_accuracy))
    pd.DataFrame({"epoch": epochs, "loss": 0.3, "accuracy": train_accuracy, "val_loss": 0.5,
                  "val_accuracy": val_accuracy, "is_best": epochs == best + 1,
                  "train_inference_loss": 0.9, "train_inference_accuracy": inference_accuracy}
                 ).to_csv(folder / "history.csv", index=False)
    labels = np.repeat([1, 0], 50)
    predicted = labels.copy()
    predicted[:10] = 0  # 90 of 100 right with the kept weights
    last = labels.copy()
    last[: 100 - last_right] = 1 - last[: 100 - last_right]
    pd.DataFrame({"path": [f"p{i}.png" for i in range(100)], "label": labels, "probability": predicted * 0.9,
                  "predicted": predicted, "probability_last_epoch": last * 0.9, "predicted_last_epoch": last}
                 ).to_csv(folder / "predictions.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({"best_epoch": best + 1}))
    return tmp_path


def test_training_summary_is_written_from_the_files(tmp_path):
    results = _model_folder(tmp_path, val_accuracy=[0.5, 0.550000012, 0.86, 0.6],
                            train_accuracy=[0.7, 0.85, 0.9, 0.92], inference_accuracy=[0.5, 0.48, 0.85, 0.5],
                            last_right=50)
    text = summaries.training_summary(results, "resnet50")
    assert "Epoch 3 of 4 had the best validation accuracy, 0.86 (the paper: 0.86)" in text
    assert "accuracy is 0.90 [" in text and "100 test" in text
    assert "in 2 of 4 epochs (1, 2)" in text  # 0.550000012 counts as 0.55
    assert "In epochs 2, 4 training mode reached 0.80" in text  # inference mode at chance there
    assert "BatchNorm" in text and "hypothesis" in text
    assert "would have scored 0.50 [" in text


def test_training_summary_stays_quiet_where_nothing_parted(tmp_path):
    results = _model_folder(tmp_path, val_accuracy=[0.7, 0.8], train_accuracy=[0.75, 0.85],
                            inference_accuracy=[0.74, 0.84], last_right=90)
    text = summaries.training_summary(results, "resnet50")
    assert "in 0 of 2 epochs." in text and "BatchNorm" not in text and "last epoch" not in text
