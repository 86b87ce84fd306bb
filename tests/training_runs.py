"""A model's results folder written by hand (run.json, history.csv, predictions.csv,
metrics.json), as ``training.run_experiment`` writes it, with chosen figures: for the tests of
the files' readers (``cxr_utils.remedy``, the seed study's summary)."""

import json

import numpy as np
import pandas as pd


def write_run(folder, model_id, val_accuracy, inference, best, counts, n_images=0, seed=42, last_counts=None):
    """``folder/model_id``: per epoch the validation accuracy and the training images' inference-mode
    accuracy given, ``best`` the kept epoch, the test set's confusion counts (tp, fn, fp, tn) at the
    kept epoch and, given ``last_counts``, at the last; ``n_images`` the remedy's option."""
    folder = folder / model_id
    folder.mkdir(parents=True)
    epochs = np.arange(1, len(val_accuracy) + 1)
    pd.DataFrame({"epoch": epochs, "loss": 0.3, "accuracy": 0.9, "val_loss": 0.5, "val_accuracy": val_accuracy,
                  "train_inference_loss": 0.6, "train_inference_accuracy": inference,
                  "is_best": epochs == best}).to_csv(folder / "history.csv", index=False)
    tp, fn, fp, tn = counts
    labels = [1] * (tp + fn) + [0] * (fp + tn)
    predicted = [1] * tp + [0] * fn + [1] * fp + [0] * tn
    pd.DataFrame({"path": [f"x{i}.png" for i in range(len(labels))], "label": labels, "probability": predicted,
                  "predicted": predicted}).to_csv(folder / "predictions.csv", index=False)

    def test(counts):
        tp, fn, fp, tn = counts
        n = tp + fn + fp + tn
        return {"accuracy": (tp + tn) / n, "tp": tp, "fn": fn, "fp": fp, "tn": tn, "n": n}

    record = {"model": model_id, "best_epoch": best, "test": test(counts)}
    if last_counts is not None:
        record["test_last_epoch"] = test(last_counts)
    (folder / "metrics.json").write_text(json.dumps(record))
    settings = {"model": model_id, "model_options": {"weights": None},
                "images": {"train": 80, "val": 10, "test": sum(counts)},
                "image_size": 224, "blanked": None, "batchnorm_layers_recomputed": 53 if n_images else 0,
                "training": {"epochs": len(epochs), "batch_size": 32, "learning_rate": 0.001, "seed": seed,
                             "restore_best": True, "recompute_batchnorm_images": n_images}}
    (folder / "run.json").write_text(json.dumps({"settings": settings}))
    return folder
