"""What the models look at: the lung rectangle, and images with it blanked.

The database's COVID and Normal images come from different collections, so a classifier can
score well by recognising the collection (borders, markers, exposure) rather than the disease
(DeGrave et al. 2021; Maguolo and Nanni 2021). Chapter 8 tests that three ways: trivial
baselines that never see the lungs (``cxr_utils.baselines``), the paper's models trained on
images whose lungs are blanked (``LungBox.blank``, used by ``training.run_experiment``), and
where Grad-CAM puts the models' attention (``cxr_utils.gradcam``). Explained in
notebooks/08_shortcuts.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from cxr_utils import config, prose
from cxr_utils.claims import SIGNIFICANCE

RESULTS_FOLDER = "shortcuts"  # chapter 8's tables, below the run's results folder


@dataclasses.dataclass(frozen=True)
class LungBox:
    """A fixed rectangle covering both lungs of a frontal chest X-ray, as fractions of the
    image's height and width, and the constant grey level (in [0, 1]) that replaces it.

    The default was drawn on the mean of 200 of the database's images (chapter 8 shows it):
    both lung fields lie inside it on the mean image; the outer strips (shoulders, neck, the
    abdomen, the border and any burnt-in text) stay visible.
    """

    top: float = 0.12
    left: float = 0.12
    height: float = 0.70
    width: float = 0.76
    fill: float = 0.0

    def __post_init__(self):
        for name in ("top", "left", "height", "width", "fill"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"LungBox.{name} must be a number in [0, 1], not {value!r}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError("LungBox height and width must be positive")
        if self.top + self.height > 1 + 1e-9 or self.left + self.width > 1 + 1e-9:
            raise ValueError(
                f"LungBox {self} reaches outside the image: top + height and left + width must be at most 1"
            )

    def pixels(self, size: int) -> tuple[int, int, int, int]:
        """(first row, end row, first column, end column) of the rectangle in a size x size image."""
        return (round(self.top * size), round((self.top + self.height) * size),
                round(self.left * size), round((self.left + self.width) * size))

    def mask(self, size: int) -> np.ndarray:
        """Boolean (size, size) array, True inside the rectangle."""
        row0, row1, col0, col1 = self.pixels(size)
        inside = np.zeros((size, size), dtype=bool)
        inside[row0:row1, col0:col1] = True
        return inside

    def area_fraction(self, size: int) -> float:
        """The share of a size x size image's pixels that the rectangle covers."""
        return float(self.mask(size).mean())

    def blank(self, images: np.ndarray) -> np.ndarray:
        """A copy of ``images`` (N, H, W[, C], square) with the rectangle set to ``fill``; the
        input is never modified."""
        images = np.asarray(images)
        if images.ndim not in (3, 4) or images.shape[1] != images.shape[2]:
            raise ValueError(f"expected square images (N, H, W[, C]), got shape {images.shape}")
        blanked = images.copy()
        row0, row1, col0, col1 = self.pixels(images.shape[1])
        blanked[:, row0:row1, col0:col1] = np.asarray(self.fill, dtype=images.dtype)
        return blanked

    @property
    def key(self) -> str:
        """Text for cache keys and run records."""
        return f"lungbox:{self.top},{self.left},{self.height},{self.width},fill={self.fill}"


# -- chapter 8's summary, written from the numbers ----------------------------------------------------
# The words are in cxr_utils/templates/shortcuts_summary.md.j2 and shortcuts_box_limits.md.j2; the
# functions below compute what they say: intervals as text, verdicts against chance, which case applies.

CHANCE = 0.5  # two balanced classes
RESNET_STRIDE = 32  # ResNet50's last feature map: one cell per 32 x 32 pixels (7 x 7 at 224 px)
ABOVE, BELOW, UNCLEAR, NO_INTERVAL = "above chance", "below chance", "not distinguishable from chance", "no interval"
# The verdicts as the template compares them (it words each differently).
VERDICTS = {"above": ABOVE, "below": BELOW, "unclear": UNCLEAR, "no_interval": NO_INTERVAL}
SEES_LUNGS = {"border": False, "histogram": True, "thumbnail": True}  # which baselines' inputs hold the lungs
RELATIONS = ("below", "above", "even")  # gradcam.csv's comparisons of a share with the box's area


def chance_verdict(low: float, high: float) -> str:
    """Where a 95% interval lies against chance (0.5): ABOVE, BELOW, UNCLEAR or NO_INTERVAL."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return NO_INTERVAL
    if low > CHANCE:
        return ABOVE
    return BELOW if high < CHANCE else UNCLEAR


def _interval(value, low, high) -> str:
    if not np.isfinite(value):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.2f} (no interval)"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def _row_interval(row, column: str) -> str:
    return _interval(row[column], row[f"{column}_low"], row[f"{column}_high"])


def _set_name(test_set: str) -> str:
    return "the extended test set" if test_set == "extended" else "the run's test set"


def at_chance(low: float, high: float) -> bool:
    """A model whose 95% accuracy interval includes 0.5 (or has none): no Grad-CAM map or blanking
    result of it says anything about what it uses, since it uses nothing detectable."""
    return chance_verdict(low, high) in (UNCLEAR, NO_INTERVAL)


def _baselines(baselines) -> tuple[list[dict], dict]:
    """What each baseline's bullet reports (its scores on each test set, the extended one first, and
    its verdict on the extended set, or the run's test set without one); and per baseline the
    verdict, the run's test-set row and the test set the verdict is on."""
    described, verdicts = [], {}
    for name, rows in baselines.groupby("baseline", sort=False):
        by_set = {row["test_set"]: row for _, row in rows.iterrows()}
        main = by_set.get("extended", by_set.get("test"))
        verdict = chance_verdict(main["accuracy_low"], main["accuracy_high"])
        verdicts[name] = (verdict, by_set.get("test"), main["test_set"])
        scores = [{"accuracy": _row_interval(row, "accuracy"), "test_set": _set_name(test_set), "n": int(row["n"]),
                   "auc": _row_interval(row, "auc")}
                  for test_set, row in sorted(by_set.items(), key=lambda item: item[0] != "extended")]
        described.append({"name": name, "description": main["description"], "scores": scores, "verdict": verdict,
                          "test_set": _set_name(main["test_set"]), "sees_lungs": SEES_LUNGS.get(name, True)})
    return described, verdicts


def _paired_with_models(row, pairs) -> dict | None:
    """How each model's intact test accuracy compares with a baseline's (``row``, its run's test-set
    row) on the same test images: McNemar's exact test on the images only one of the two got right
    (``pairs``: model, model_only, baseline_only, p_value, accuracy, accuracy_low, accuracy_high;
    None: not compared)."""
    if row is None or pairs is None or len(pairs) == 0:
        return None
    models = [{"model": pair["model"], "accuracy": _row_interval(pair, "accuracy"),
               "model_only": int(pair["model_only"]), "baseline_only": int(pair["baseline_only"]),
               "p_value": pair["p_value"], "significant": pair["p_value"] < SIGNIFICANCE,
               "model_better": pair["model_only"] > pair["baseline_only"]}
              for _, pair in pd.DataFrame(pairs).iterrows()]
    return {"accuracy": _row_interval(row, "accuracy"), "models": models}


def _blanked(blanked) -> dict:
    """Each lungs-blanked run that finished, against its intact model; the models without one; and
    whether any scores above chance without the lungs."""
    complete = []
    for _, row in blanked[blanked["status"] == "complete"].iterrows():
        kept = None
        if row["intact_accuracy_low"] > CHANCE:  # the intact margin's interval excludes zero
            kept = (row["blanked_accuracy"] - CHANCE) / (row["intact_accuracy"] - CHANCE)
        complete.append({
            "model": row["model"], "blanked": _row_interval(row, "blanked_accuracy"),
            "intact": _row_interval(row, "intact_accuracy"), "difference": row["accuracy_difference"],
            "p_value": row["mcnemar_p"], "intact_at_chance": at_chance(row["intact_accuracy_low"],
                                                                       row["intact_accuracy_high"]),
            "kept": kept, "verdict": chance_verdict(row["blanked_accuracy_low"], row["blanked_accuracy_high"]),
        })
    return {"complete": complete, "missing": blanked.loc[blanked["status"] != "complete", "model"].tolist(),
            "any_above": any(row["verdict"] == ABOVE for row in complete)}


def _gradcam_case(row) -> str:
    """Which reading a model's Grad-CAM share gets (the template words each)."""
    if not np.isfinite(row["mean_lung_share"]):
        # grad_cam gives an all-zero map where no feature raises the class score (always so
        # for a 1x1 feature map, i.e. images of 32 px): no share exists.
        return "all zero"
    if not 0 <= row["mean_lung_share"] <= 1:
        raise ValueError(f"the Grad-CAM share of {row['model']} must be a share in [0, 1], "
                         f"not {row['mean_lung_share']!r}")
    if not np.isfinite(row["accuracy"]):
        return "no accuracy"  # a run from before chapter 8 kept the share without the accuracy
    if at_chance(row["accuracy_low"], row["accuracy_high"]):
        return "at chance"
    return "compared" if row["relation"] in RELATIONS else "no interval"


def _gradcam(gradcam_table) -> list[dict]:
    """What each model's bullet of ``gradcam_table`` (``shortcut_run.gradcam_for_run``'s gradcam.csv)
    reports: its case, its share and test accuracy as intervals, the box's share of the image."""
    columns = ["model", "n", "mean_lung_share", "share_low", "share_high", "box_area_share", "relation", "accuracy",
               "accuracy_low", "accuracy_high"]
    rows = []
    for _, row in pd.DataFrame(gradcam_table).reindex(columns=columns).iterrows():
        case = _gradcam_case(row)
        rows.append({"model": row["model"], "case": case, "relation": row["relation"],
                     "accuracy": _row_interval(row, "accuracy"),
                     "share": _interval(row["mean_lung_share"], row["share_low"], row["share_high"]),
                     "area": row["box_area_share"], "n": int(row["n"]) if case == "compared" else None})
    return rows


def box_limits_markdown(box: LungBox, image_size: int, feature_grid: int) -> str:
    """"What a fixed box cannot tell": the limits of one rectangle for every image, on a coarse
    Grad-CAM grid, written from the box, the image size and the grid."""
    return prose.render("shortcuts_box_limits.md.j2", box=box, box_area=box.area_fraction(image_size),
                        image_size=image_size, feature_grid=feature_grid)


def shortcut_summary(baselines_table, blanked_table=None, gradcam_table=None, box: LungBox | None = None,
                     image_size: int | None = None, baseline_pairs=None) -> str:
    """Chapter 8's conclusion in Markdown, every number read from the tables: the baselines
    (``baselines.fit_baselines``' table; None: not run), each model paired with the border baseline
    on the same test images (``baseline_pairs``, ``shortcut_run.baseline_pairs``), the
    lungs-blanked runs (``blanked.blanked_results``; None: not run) and Grad-CAM
    (``gradcam_table``: gradcam.csv of ``shortcut_run.gradcam_for_run``), against the share of
    the image the box covers at ``image_size`` (default ``config.PROTOCOL.image_size``). It claims
    only what the intervals show; a model at chance gets no reading. Explained in
    notebooks/08_shortcuts.
    """
    box = box or LungBox()
    image_size = image_size or config.PROTOCOL.image_size
    described = border = n_train = None
    if baselines_table is not None and len(baselines_table):
        baselines_table = pd.DataFrame(baselines_table)
        described, verdicts = _baselines(baselines_table)
        if "n_train" in baselines_table and baselines_table["n_train"].nunique() == 1:  # older runs lack it
            n_train = int(baselines_table["n_train"].iloc[0])
        if "border" in verdicts:
            verdict, test_row, test_set = verdicts["border"]
            border = {"verdict": verdict, "test_set": _set_name(test_set),
                      "paired": _paired_with_models(test_row, baseline_pairs)}
    gradcam = _gradcam(gradcam_table) if gradcam_table is not None and len(gradcam_table) else None
    return prose.render(
        "shortcuts_summary.md.j2", verdicts=VERDICTS, baselines=described, n_train=n_train, border=border,
        blind=[row["name"] for row in described or () if not row["sees_lungs"]],
        seeing=[row["name"] for row in described or () if row["sees_lungs"]],
        blanked=None if blanked_table is None else _blanked(pd.DataFrame(blanked_table)),
        box_area=box.area_fraction(image_size), gradcam=gradcam,
        below=[row["model"] for row in gradcam or () if row["case"] == "compared" and row["relation"] == "below"],
        box_limits=box_limits_markdown(box, image_size, max(1, image_size // RESNET_STRIDE)),
    )
