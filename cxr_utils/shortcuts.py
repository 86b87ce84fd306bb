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

REFERENCES = (
    "DeGrave, A. J., Janizek, J. D. and Lee, S.-I. (2021). AI for radiographic COVID-19 detection selects "
    "shortcuts over signal. *Nature Machine Intelligence* 3, 610-619. https://doi.org/10.1038/s42256-021-00338-7",
    "Maguolo, G. and Nanni, L. (2021). A critic evaluation of methods for COVID-19 automatic detection from "
    "X-ray images. *Information Fusion* 76, 1-7. https://doi.org/10.1016/j.inffus.2021.04.008",
)
CHANCE = 0.5  # two balanced classes
RESNET_STRIDE = 32  # ResNet50's last feature map: one cell per 32 x 32 pixels (7 x 7 at 224 px)
ABOVE, BELOW, UNCLEAR, NO_INTERVAL = "above chance", "below chance", "not distinguishable from chance", "no interval"


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


def _set_name(test_set: str) -> str:
    return "the extended test set" if test_set == "extended" else "the run's test set"


AT_CHANCE = "at chance: nothing to read"  # said of a model whose test accuracy interval includes 0.5
SEES_LUNGS = {"border": False, "histogram": True, "thumbnail": True}  # which baselines' inputs hold the lungs


def at_chance(low: float, high: float) -> bool:
    """A model whose 95% accuracy interval includes 0.5 (or has none): no Grad-CAM map or blanking
    result of it says anything about what it uses, since it uses nothing detectable."""
    return chance_verdict(low, high) in (UNCLEAR, NO_INTERVAL)


def _baseline_lines(baselines) -> tuple[list[str], dict]:
    """One bullet per baseline; and per baseline the verdict and the test-set row."""
    lines, verdicts = [], {}
    for name, rows in baselines.groupby("baseline", sort=False):
        by_set = {row["test_set"]: row for _, row in rows.iterrows()}
        main = by_set.get("extended", by_set.get("test"))
        verdict = chance_verdict(main["accuracy_low"], main["accuracy_high"])
        verdicts[name] = (verdict, by_set.get("test"), main["test_set"])
        scored = "; ".join(
            f"accuracy {_interval(row['accuracy'], row['accuracy_low'], row['accuracy_high'])} on {_set_name(s)} "
            f"(n = {int(row['n']):,}), AUC {_interval(row['auc'], row['auc_low'], row['auc_high'])}"
            for s, row in sorted(by_set.items(), key=lambda item: item[0] != "extended"))
        if verdict == ABOVE:
            says = ("scores above chance without seeing the lungs" if not SEES_LUNGS.get(name, True)
                    else "scores above chance")
        elif verdict == NO_INTERVAL:
            says = "has no interval to compare with chance"
        else:
            says = f"is {verdict}" + (" (its interval includes 0.5)" if verdict == UNCLEAR else "")
        lines.append(f"- **{name}**, {main['description']}: {scored}. On {_set_name(main['test_set'])} it {says}.")
    return lines, verdicts


def _against_models(name: str, row, pairs) -> str | None:
    """How each model's intact test accuracy compares with a baseline's on the same test images:
    McNemar's exact test on the images only one of the two got right (``pairs``: model,
    model_only, baseline_only, p_value, accuracy, accuracy_low, accuracy_high; None: not compared)."""
    if row is None or pairs is None or len(pairs) == 0:
        return None
    parts = []
    for _, pair in pd.DataFrame(pairs).iterrows():
        if pair["p_value"] < SIGNIFICANCE:
            who = "the model" if pair["model_only"] > pair["baseline_only"] else "the baseline"
            verdict = f"{who} is right significantly more often"
        else:
            verdict = "not told apart"
        parts.append(f"{pair['model']} {_interval(pair['accuracy'], pair['accuracy_low'], pair['accuracy_high'])} "
                     f"(only the model right on {int(pair['model_only'])} images, only the baseline on "
                     f"{int(pair['baseline_only'])}, McNemar p = {pair['p_value']:.2g}: {verdict})")
    return (f"On the same test images as the **{name}** baseline "
            f"({_interval(row['accuracy'], row['accuracy_low'], row['accuracy_high'])}), paired image by image: "
            + "; ".join(parts) + ".")


def _blanked_lines(blanked) -> list[str]:
    done = blanked[blanked["status"] == "complete"]
    lines = []
    for _, row in done.iterrows():
        scores = (f"- **{row['model']}**: accuracy "
                  f"{_interval(row['blanked_accuracy'], row['blanked_accuracy_low'], row['blanked_accuracy_high'])} "
                  f"with the lungs blanked against "
                  f"{_interval(row['intact_accuracy'], row['intact_accuracy_low'], row['intact_accuracy_high'])} "
                  f"intact (difference {row['accuracy_difference']:+.2f}, McNemar p = {row['mcnemar_p']:.2g})")
        if at_chance(row["intact_accuracy_low"], row["intact_accuracy_high"]):
            lines.append(f"{scores}. Intact it is {AT_CHANCE}: blanking cannot take away what it does not use.")
            continue
        verdict = chance_verdict(row["blanked_accuracy_low"], row["blanked_accuracy_high"])
        kept = ""
        if row["intact_accuracy_low"] > CHANCE:  # the intact margin's interval excludes zero
            share = (row["blanked_accuracy"] - CHANCE) / (row["intact_accuracy"] - CHANCE)
            kept = f"; it keeps {share:.0%} of its intact margin above chance"
        says = {ABOVE: "Trained and tested without the lungs, it still scores above chance.",
                BELOW: "Without the lungs it scores below chance.",
                UNCLEAR: "Without the lungs it is not distinguishable from chance (its interval includes 0.5).",
                NO_INTERVAL: "Its blanked accuracy has no interval."}[verdict]
        lines.append(f"{scores}{kept}. {says}")
    missing = blanked.loc[blanked["status"] != "complete", "model"].tolist()
    if missing:
        lines.append(f"- Not yet trained with the lungs blanked: {', '.join(missing)} "
                     "(`python -m cxr_utils.study blanked --run RESULTS_DIR`).")
    return lines


def _gradcam_lines(gradcam_table) -> tuple[list[str], list[str]]:
    """One bullet per model of ``gradcam_table`` (``shortcut_run.gradcam_for_run``'s gradcam.csv);
    and the models whose maps put less than an even share inside the box (interval below it)."""
    columns = ["model", "n", "mean_lung_share", "share_low", "share_high", "box_area_share", "relation", "accuracy",
               "accuracy_low", "accuracy_high"]
    lines, below = [], []
    for _, row in pd.DataFrame(gradcam_table).reindex(columns=columns).iterrows():
        name = row["model"]
        if not np.isfinite(row["mean_lung_share"]):
            # grad_cam gives an all-zero map where no feature raises the class score (always so
            # for a 1x1 feature map, i.e. images of 32 px): no share exists.
            lines.append(f"- **{name}**: every Grad-CAM map is zero (no region raises its score), so no share "
                         "inside the lung box can be given.")
            continue
        if not 0 <= row["mean_lung_share"] <= 1:
            raise ValueError(f"the Grad-CAM share of {name} must be a share in [0, 1], not {row['mean_lung_share']!r}")
        accuracy = _interval(row["accuracy"], row["accuracy_low"], row["accuracy_high"])
        share = _interval(row["mean_lung_share"], row["share_low"], row["share_high"])
        area = row["box_area_share"]
        if not np.isfinite(row["accuracy"]):
            lines.append(f"- **{name}**: mean share of its Grad-CAM mass inside the lung box {share}, saved without "
                         "the model's test accuracy (a run from before chapter 8 kept it), so its maps are not read.")
            continue
        if at_chance(row["accuracy_low"], row["accuracy_high"]):
            lines.append(f"- **{name}** (test accuracy {accuracy}) is {AT_CHANCE}: its maps show where a model "
                         f"that tells the classes apart no better than a coin looks (share inside the box {share}).")
            continue
        relation = {"below": "below", "above": "above", "even": "not told apart from"}.get(row["relation"])
        if relation is None:
            lines.append(f"- **{name}** (test accuracy {accuracy}): mean share of its Grad-CAM mass inside the lung "
                         f"box {share}; no interval, so it is not compared with the box's {area:.0%} of the image.")
            continue
        if row["relation"] == "below":
            below.append(name)
        lines.append(f"- **{name}** (test accuracy {accuracy}): on average {share} of its Grad-CAM mass lies "
                     f"inside the lung box (mean over {int(row['n'])} test images, 95% bootstrap interval), "
                     f"{relation} the {area:.0%} of the image the box covers, the share of a map spread evenly.")
    return lines, below


def box_limits_markdown(box: LungBox, image_size: int, feature_grid: int) -> str:
    """"What a fixed box cannot tell": the limits of one rectangle for every image, on a coarse
    Grad-CAM grid, written from the box, the image size and the grid."""
    cell = image_size / feature_grid
    return "\n".join([
        "### What a fixed box cannot tell", "",
        f"- **One rectangle for every image.** The box ({box.top:.0%} from the top, {box.left:.0%} from the left, "
        f"{box.height:.0%} high and {box.width:.0%} wide: {box.area_fraction(image_size):.0%} of the image) was drawn on "
        "the mean image; a patient placed higher, lower or smaller than the mean has lung outside it and "
        "background inside it. No per-image lung mask was used.",
        "- **Not only the lungs.** It also covers the heart, the mediastinum and the diaphragm, so \"inside the box\" "
        "does not mean \"on the lungs\", and blanking it removes those too.",
        f"- **A coarse map.** Grad-CAM here is computed on ResNet50's last feature map, {feature_grid} x "
        f"{feature_grid} cells of {cell:.0f} px each for {image_size} px images: a cell on the box's edge is partly "
        "inside and partly outside, so a share says where attention lies to within a cell, not a structure.",
        "- **Attention is not use.** A Grad-CAM share describes which features raise the score; it does not show "
        "that the model would fail without them (the blanked runs test that, for this box).", "",
    ])


def shortcut_summary(baselines_table, blanked_table=None, gradcam_table=None, box: LungBox | None = None,
                     image_size: int | None = None, baseline_pairs=None) -> str:
    """Chapter 8's conclusion in Markdown, every number read from the tables: the baselines
    (``baselines.evaluate_baselines``; None: not run), each model paired with the border baseline
    on the same test images (``baseline_pairs``, ``shortcut_run.baseline_pairs``), the
    lungs-blanked runs (``blanked.blanked_results``; None: not run) and Grad-CAM
    (``gradcam_table``: gradcam.csv of ``shortcut_run.gradcam_for_run``), against the share of
    the image the box covers at ``image_size`` (default ``config.PROTOCOL.image_size``). It claims
    only what the intervals show; a model at chance gets no reading. Explained in
    notebooks/08_shortcuts.
    """
    from cxr_utils import config

    box = box or LungBox()
    image_size = image_size or config.PROTOCOL.image_size
    if baselines_table is None or len(baselines_table) == 0:
        verdicts = {}
        out = ["### Simple baselines", "", "No baselines yet (`cxr_utils.baselines.evaluate_baselines`).", ""]
    else:
        lines, verdicts = _baseline_lines(pd.DataFrame(baselines_table))
        blind = [name for name in verdicts if not SEES_LUNGS.get(name, True)]
        seeing = [name for name in verdicts if SEES_LUNGS.get(name, True)]
        out = ["### Simple baselines", "",
               "Logistic regressions on simple features of the images, fitted on the run's training images. "
               f"{' and '.join(blind) or 'None'} never sees the lungs; {' and '.join(seeing) or 'none'} "
               "see them (the histogram without positions, the thumbnail at low resolution), so their score "
               "does not tell where in the image the class is read:", "", *lines, ""]
    blanked = None if blanked_table is None else pd.DataFrame(blanked_table)
    if "border" in verdicts:
        comparison = _against_models("border", verdicts["border"][1], baseline_pairs)
        out += [comparison, ""] if comparison else []
    if verdicts.get("border", (None,))[0] == ABOVE:
        out += [f"The border baseline's interval on {_set_name(verdicts['border'][2])} lies above 0.5, so the images "
                "carry class information outside the lungs: the two classes differ where the lungs are not seen, as "
                "DeGrave et al. (2021) and Maguolo and Nanni (2021) found for public COVID-19 collections. That the "
                "paper's models *use* it is a hypothesis the baseline cannot test; the lungs-blanked runs and "
                "Grad-CAM below speak to it.", ""]
    elif "border" in verdicts:
        out += ["The border baseline does not score above chance here, which does not rule out other shortcuts.", ""]

    out += ["### The models with the lungs blanked", ""]
    if blanked is None:
        out += ["No lungs-blanked runs yet (`python -m cxr_utils.study blanked --run RESULTS_DIR`).", ""]
    else:
        out += [f"Each model trained and tested again with the lung box ({box.area_fraction(image_size):.0%} of the "
                "image) set to a constant, the test Maguolo and Nanni (2021) ran:", "", *_blanked_lines(blanked), ""]
        if any(chance_verdict(r["blanked_accuracy_low"], r["blanked_accuracy_high"]) == ABOVE
               for _, r in blanked[blanked["status"] == "complete"].iterrows()):
            out += ["A model that scores above chance with the lungs blanked learnt the classes from outside the "
                    "lung box: this shows what the images allow, not what the intact models rely on.", ""]

    below = []
    if gradcam_table is not None and len(gradcam_table):
        lines, below = _gradcam_lines(gradcam_table)
        out += ["### Where Grad-CAM looks", "", *lines, ""]
    if below:
        out += [f"For {', '.join(below)}, Grad-CAM puts less weight inside the lung box than an even spread would. "
                "That is consistent with the hypothesis that the model draws on what lies outside the box; it does "
                "not show it (see the limits below).", ""]
    else:
        why = ("no Grad-CAM shares were given" if gradcam_table is None or not len(gradcam_table)
               else "no model above chance puts less than an even share of its Grad-CAM mass inside the lung box")
        out += [f"Whether the intact models use the information outside the lungs remains a hypothesis: {why}.", ""]
    out += [box_limits_markdown(box, image_size, max(1, image_size // RESNET_STRIDE))]
    out += ["References:", "", *(f"- {reference}" for reference in REFERENCES)]
    return "\n".join(out) + "\n"
