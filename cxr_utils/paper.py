"""The numbers the paper reports (Tables 2-7) and the claims it makes, as data.

Transcribed from the paper (book/paper.md summarises it; checked against the paper's text). Every
function returns a fresh copy, so callers may modify what they get. Explained in
notebooks/07_comparison.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr_utils import config
from cxr_utils.config import PAPER_ORDER

_TABLE2 = {  # best epoch: train_loss, train_accuracy, val_loss, val_accuracy
    "ResNet50": (0.5702, 0.7800, 0.5473, 0.8600),
    "LSTM": (0.5090, 0.7650, 0.5446, 0.7400),
    "ResNet50-LSTM": (0.2938, 0.9150, 0.3150, 0.9100),
}
_CONFUSION = {  # Tables 3-5 on the 100 test images: tp, fn, fp, tn
    "ResNet50": (47, 3, 4, 46),
    "LSTM": (42, 8, 8, 42),
    "ResNet50-LSTM": (47, 3, 2, 48),
}
_TABLE6 = {  # accuracy, precision, recall, f1 (COVID positive), as printed to 2 places
    "ResNet50": (0.93, 0.92, 0.94, 0.93),
    "LSTM": (0.84, 0.84, 0.84, 0.84),
    "ResNet50-LSTM": (0.95, 0.96, 0.94, 0.95),
}
_TABLE7 = [  # author, data, method, accuracy, precision, recall, f1 ("-" in the paper -> NaN)
    ("W. Swastika", "140 X-ray, binary", "VGG16", 0.93, 1.00, 0.86, np.nan),
    ("Naufal et al.", "3,886 X-ray, multi-class", "KNN, SVM, CNN", 0.95, 0.95, 0.95, 0.95),
    ("B. P. Hartato", "2,905 X-ray, multi-class", "CNN", 0.97, 0.97, 0.98, np.nan),
    ("M. Harahap et al.", "550 X-ray, binary",
     "ResNet50V2, InceptionResNetV2, VGG19, MobileNetV2", 0.95, 0.96, 0.97, 0.96),
    ("Kanjanasurat et al.", "9,271 X-ray + 6,939 CT, multi-class", "ResNet152V2 + LSTM + GRU",
     0.93, 0.94, 0.93, 0.94),
    ("Proposed", "1,000 X-ray, binary", "ResNet50 + LSTM", 0.95, 0.96, 0.94, 0.95),
]


def _by_model(rows: dict, columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("model")


def table2() -> pd.DataFrame:
    """Table 2: each model's loss and accuracy on training and validation data at its best epoch.

    Explained in notebooks/03_resnet50 to 05_resnet50_lstm.
    """
    return _by_model(_TABLE2, ["train_loss", "train_accuracy", "val_loss", "val_accuracy"])


def confusion_counts() -> pd.DataFrame:
    """Tables 3-5 as counts on the 100 test images, one row per model. Explained in notebooks/07_comparison."""
    return _by_model(_CONFUSION, ["tp", "fn", "fp", "tn"])


def confusion_table(model: str) -> pd.DataFrame:
    """One of Tables 3-5 as a 2x2 table oriented like ``metrics.confusion_matrix`` (rows actual, columns
    predicted, each COVID, Normal); ``model``: the paper's name ("ResNet50") or our id ("resnet50").
    """
    tp, fn, fp, tn = _CONFUSION[config.model_spec(model).paper_name]
    return pd.DataFrame(
        [[tp, fn], [fp, tn]],
        index=pd.Index(PAPER_ORDER, name="actual"),
        columns=pd.Index(PAPER_ORDER, name="predicted"),
    )


def table6() -> pd.DataFrame:
    """Table 6 as printed: accuracy, precision, recall, F1 (COVID positive). Explained in notebooks/07_comparison."""
    return _by_model(_TABLE6, ["accuracy", "precision", "recall", "f1"])


def table7() -> pd.DataFrame:
    """Table 7: the paper's comparison with earlier work, as printed (percentages as fractions).

    The last row ("Proposed") is the paper's own ResNet50-LSTM. Explained in notebooks/07_comparison.
    """
    return pd.DataFrame(
        _TABLE7, columns=["author", "data", "method", "accuracy", "precision", "recall", "f1"]
    )


def claims() -> pd.DataFrame:
    """The three claims of the paper (book/paper.md) with the reported numbers each rests on
    (``paper_values``: "model metric" -> value). Explained in notebooks/07_comparison and book/report.
    """
    scores, fits = table6(), table2()
    names = config.paper_names()
    hybrid, resnet, lstm = names["resnet50_lstm"], names["resnet50"], names["lstm"]
    rows = [
        (1, "ResNet50-LSTM reaches 95% accuracy, 96% precision, 94% recall and 95% F1 on the "
            "100-image test set", "Table 6",
         {f"{hybrid} {metric}": float(scores.loc[hybrid, metric]) for metric in scores.columns}),
        (2, "ResNet50-LSTM beats ResNet50 alone (93%) and LSTM alone (84%)", "Table 6",
         {f"{name} accuracy": float(scores.loc[name, "accuracy"]) for name in (hybrid, resnet, lstm)}),
        (3, "ResNet50-LSTM overfits slightly (validation loss 0.3150 > training loss 0.2938)",
         "Table 2",
         {f"{hybrid} {metric}": float(fits.loc[hybrid, metric]) for metric in ("train_loss", "val_loss")}),
    ]
    return pd.DataFrame(rows, columns=["id", "claim", "source", "paper_values"])
