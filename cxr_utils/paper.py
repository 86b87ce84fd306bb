"""The paper's reported numbers (Tables 2-7) as data, transcribed from the paper.

Each function returns a fresh DataFrame, so callers may change it. Explained in book/paper and
notebooks/07_comparison.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Our model ids -> the paper's names, in the paper's order.
MODELS = {"resnet50": "ResNet50", "lstm": "LSTM", "resnet50_lstm": "ResNet50-LSTM"}
_NAMES = list(MODELS.values())


def table2() -> pd.DataFrame:
    """Training vs validation at the best epoch (paper Table 2)."""
    return pd.DataFrame(
        {
            "train_loss": [0.5702, 0.5090, 0.2938],
            "train_accuracy": [0.7800, 0.7650, 0.9150],
            "val_loss": [0.5473, 0.5446, 0.3150],
            "val_accuracy": [0.8600, 0.7400, 0.9100],
        },
        index=pd.Index(_NAMES, name="model"),
    )


def confusion_counts() -> pd.DataFrame:
    """Tables 3-5 on the 100 test images: TP (COVID->COVID), FN, FP, TN."""
    return pd.DataFrame(
        {"tp": [47, 42, 47], "fn": [3, 8, 3], "fp": [4, 8, 2], "tn": [46, 42, 48]},
        index=pd.Index(_NAMES, name="model"),
    )


def confusion_table(model: str) -> pd.DataFrame:
    """One of Tables 3-5 in ``cxr_utils.metrics.confusion_matrix``'s orientation."""
    counts = confusion_counts()
    if model not in counts.index:
        raise ValueError(f"unknown model {model!r}; the paper's models are {', '.join(_NAMES)}")
    row = counts.loc[model]
    return pd.DataFrame(
        [[row["tp"], row["fn"]], [row["fp"], row["tn"]]],
        index=pd.Index(["COVID", "Normal"], name="actual"),
        columns=pd.Index(["COVID", "Normal"], name="predicted"),
    )


def table6() -> pd.DataFrame:
    """Test metrics, COVID positive, as printed (paper Table 6)."""
    return pd.DataFrame(
        {
            "accuracy": [0.93, 0.84, 0.95],
            "precision": [0.92, 0.84, 0.96],
            "recall": [0.94, 0.84, 0.94],
            "f1": [0.93, 0.84, 0.95],
        },
        index=pd.Index(_NAMES, name="model"),
    )


def table7() -> pd.DataFrame:
    """Comparison with earlier work as printed (paper Table 7); percentages as fractions."""
    nan = np.nan
    rows = [
        ("W. Swastika", "140 X-ray, binary", "VGG16", 0.93, 1.00, 0.86, nan),
        ("Naufal et al.", "3,886 X-ray, multi-class", "KNN, SVM, CNN", 0.95, 0.95, 0.95, 0.95),
        ("B. P. Hartato", "2,905 X-ray, multi-class", "CNN", 0.97, 0.97, 0.98, nan),
        ("M. Harahap et al.", "550 X-ray, binary",
         "ResNet50V2, InceptionResNetV2, VGG19, MobileNetV2", 0.95, 0.96, 0.97, 0.96),
        ("Kanjanasurat et al.", "9,271 X-ray + 6,939 CT, multi-class",
         "ResNet152V2 + LSTM + GRU", 0.93, 0.94, 0.93, 0.94),
        ("Proposed (paper)", "1,000 X-ray, binary", "ResNet50 + LSTM", 0.95, 0.96, 0.94, 0.95),
    ]
    return pd.DataFrame(rows, columns=["author", "data", "method", "accuracy", "precision", "recall", "f1"])


def claims() -> pd.DataFrame:
    """The three claims a replication tests (PAPER.md, "Claims the paper makes")."""
    return pd.DataFrame(
        [
            (1, "ResNet50-LSTM reaches 95% accuracy, 96% precision, 94% recall, 95% F1 on the test set",
             "Table 6", "accuracy 0.95, precision 0.96, recall 0.94, f1 0.95"),
            (2, "ResNet50-LSTM beats ResNet50 alone (93%) and LSTM alone (84%)",
             "Table 6", "accuracy 0.95 vs 0.93 and 0.84"),
            (3, "ResNet50-LSTM overfits slightly", "Table 2", "val_loss 0.3150 > train_loss 0.2938"),
        ],
        columns=["claim", "text", "source", "paper_values"],
    )
