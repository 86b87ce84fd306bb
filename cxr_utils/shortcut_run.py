"""Chapter 8 on a run's files: the lung rectangle, the baselines, the lungs-blanked models and
Grad-CAM, each saved under ``results_dir/shortcuts/`` and summarised from what was saved.

The pieces live in ``cxr_utils.shortcuts`` (the rectangle, the summary), ``cxr_utils.baselines``,
``cxr_utils.blanked`` and ``cxr_utils.gradcam``; this module joins them to a run's split,
manifest and saved models, so the chapter stays a few calls. Explained in notebooks/08_shortcuts.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import baselines, chapters, config, data, evaluation, extended_set, metrics, paper, prose, shortcuts
from cxr_utils.atomic import read_json
from cxr_utils.blanked import (
    BLANKED_DIR, RESULTS_CSV, blanked_results, save_blanked_results, train_blanked, trained_beside,
)
from cxr_utils.shortcuts import RESULTS_FOLDER as SHORTCUTS_DIR, LungBox

BASELINES_CSV = baselines.BASELINES_CSV.as_posix()
BLANKED_CSV = (BLANKED_DIR / RESULTS_CSV).as_posix()  # blanked.save_blanked_results writes it
GRADCAM_CSV = f"{SHORTCUTS_DIR}/gradcam.csv"
GRADCAM_SHARES_CSV = f"{SHORTCUTS_DIR}/gradcam_shares.csv"  # per test image and model
BOX_JSON = f"{SHORTCUTS_DIR}/lung_box.json"  # the rectangle and image size the tests above used


def lung_box(values) -> LungBox:
    """The chapter's ``lung_box`` parameter, (top, left, height, width) as fractions, as a LungBox."""
    if isinstance(values, LungBox):
        return values
    try:
        top, left, height, width = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(
            f"lung_box must be four fractions (top, left, height, width), e.g. (0.12, 0.12, 0.70, 0.76), not {values!r}"
        ) from None
    return LungBox(top, left, height, width)


def _save_box(results_dir: Path, box: LungBox, image_size: int) -> None:
    from cxr_utils import runtime  # imports Keras: only when called

    runtime.write_json({**dataclasses.asdict(box), "image_size": int(image_size)}, results_dir / BOX_JSON)


def _saved_box(results_dir: Path) -> tuple[LungBox | None, int | None]:
    path = results_dir / BOX_JSON
    if not path.is_file():
        return None, None
    saved = json.loads(path.read_text())
    image_size = saved.pop("image_size", None)
    return LungBox(**saved), image_size


def plot_lung_box(split: pd.DataFrame, box: LungBox, image_size: int = config.PROTOCOL.image_size,
                  cache_dir=None, path=None, max_images: int = 200, seed: int = 0):
    """Two panels: the mean of (up to ``max_images``) training images with the rectangle drawn,
    and one training image as the blanked models see it. Explained in notebooks/08_shortcuts."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from cxr_utils import plots  # imports matplotlib, as the figure does: only when one is drawn

    train = split[split["split"] == "train"]
    chosen = train.sample(n=min(max_images, len(train)), random_state=seed)
    images = data.load_images(chosen, image_size=image_size, cache_dir=cache_dir, progress=False)[..., 0]
    figure, axes = plt.subplots(1, 2, figsize=(plots.PAGE_WIDTH_IN * 0.75, plots.PAGE_WIDTH_IN * 0.4))
    row0, row1, col0, col1 = box.pixels(image_size)
    panels = ((images.mean(axis=0), f"Mean of {len(images)} training images"),
              (box.blank(images[:1])[0], "One training image, lungs blanked"))
    for ax, (picture, title) in zip(axes, panels):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
        ax.add_patch(Rectangle((col0 - 0.5, row0 - 0.5), col1 - col0, row1 - row0, fill=False,
                               edgecolor="tab:orange", linewidth=2))
        ax.set_title(title, fontsize=plots.FONT_SIZE)
        ax.axis("off")
    figure.tight_layout()
    return plots.finish_figure(figure, path)


def evaluate_baselines(results_dir, split: pd.DataFrame, data_dir=None, thumbnail_size: int = 32,
                       border_width: int = 2, histogram_bins: int = 32, extended_test_size: int | None = None,
                       seed: int = config.PROTOCOL.seed, cache_dir=None,
                       image_size: int = config.PROTOCOL.image_size) -> pd.DataFrame:
    """The three baselines (``cxr_utils.baselines``) trained on the run's training images and
    scored on its test set and on the extended test set (the images it never used, as in
    chapter 6); saved to ``shortcuts/baselines.csv``. Explained in notebooks/08_shortcuts."""
    results_dir = Path(results_dir)
    manifest = chapters.manifest(results_dir, data_dir)
    extended = extended_set.extended_test_set(manifest, split, max_images=extended_test_size, seed=seed)
    table, predictions = baselines.fit_baselines(split, extended, thumbnail_size=thumbnail_size,
                                                 border_width=border_width, histogram_bins=histogram_bins,
                                                 cache_dir=cache_dir, seed=seed, image_size=image_size)
    baselines.save_baselines(results_dir, table, predictions)
    return table


def blanked_models(results_dir, split: pd.DataFrame, box: LungBox, epochs: int = config.PROTOCOL.epochs,
                   batch_size: int = config.PROTOCOL.batch_size, seed: int = config.PROTOCOL.seed,
                   weights=config.PROTOCOL.weights, image_size: int = config.PROTOCOL.image_size,
                   cache_dir=None) -> pd.DataFrame:
    """Every model of the registry trained with the run's protocol on its split with the lungs
    blanked (``blanked``; models already trained there with the same settings are kept,
    e.g. by ``python -m cxr_utils.study blanked``), beside the intact models; the table is saved
    to ``shortcuts/blanked/results.csv``. Explained in notebooks/08_shortcuts."""
    from cxr_utils import training  # imports Keras: only when models train

    results_dir = Path(results_dir)
    # The blanked models answer where the class can be read, not why validation is unsteady: no
    # paired BatchNorm check (it would add about a quarter to their training time).
    training_config = training.TrainingConfig(epochs=epochs, batch_size=batch_size, seed=seed, progress=False,
                                              batchnorm_check=False)
    train_blanked(results_dir, split, box, training_config, {"weights": weights}, cache_dir=cache_dir,
                  image_size=image_size)
    table = blanked_results(results_dir, seed=seed)
    save_blanked_results(results_dir, table)
    _save_box(results_dir, box, image_size)
    return table


def _gradcam_maps(results_dir: Path, test: pd.DataFrame, images) -> dict:
    """Grad-CAM maps of the run's backbone models on the test images, keyed by model id: the cells each
    model's chapter saved (``experiment.GRADCAM_CELLS``) upsampled, else from ``model.keras``."""
    # Keras and the modules that import it: only when Grad-CAM runs.
    import keras

    from cxr_utils import experiment, gradcam, models  # noqa: F401  (models registers the custom layers)

    maps = {}
    for spec in config.REGISTRY.values():
        if not spec.has_backbone:
            continue
        folder = results_dir / spec.id
        cells_file = folder / experiment.GRADCAM_CELLS
        if cells_file.is_file():
            with np.load(cells_file) as saved:
                if saved["names"].tolist() == data.file_names(test["path"]):  # the same images, wherever they lie
                    maps[spec.id] = gradcam.upsample(saved["cells"], *images.shape[1:3])
                    continue
        path = folder / "model.keras"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing and {cells_file} does not hold this split's test images; "
                                    f"re-run notebooks/{spec.chapter}.ipynb")
        maps[spec.id] = gradcam.grad_cam(keras.saving.load_model(path, safe_mode=True), images)
    return maps


def gradcam_for_run(results_dir, split: pd.DataFrame, box: LungBox, image_size: int = config.PROTOCOL.image_size,
                    cache_dir=None, seed: int = 0, per_group: int = 2, path=None) -> dict:
    """Grad-CAM of each saved backbone model on the run's test images: per model, the mean share
    of its maps inside ``box`` with a 95% bootstrap interval over the images, against the share
    of the image the box covers (``gradcam.share_against_area``: below, even or above), and the
    model's test accuracy with its 95% interval (a model at chance has nothing to read in its
    maps); saved to ``shortcuts/gradcam.csv``, each image's share to ``gradcam_shares.csv``. And a
    figure of examples, correct and wrong, of both classes, picked from the proposed hybrid's
    predictions. Returns {"shares", "figure"}. Explained in notebooks/08_shortcuts."""
    from cxr_utils import gradcam, runtime  # they import Keras: only when Grad-CAM runs

    results_dir = Path(results_dir)
    test = split[split["split"] == "test"].reset_index(drop=True)
    images = data.load_images(test, image_size=image_size, cache_dir=cache_dir, progress=False)
    cams = _gradcam_maps(results_dir, test, images)
    area = box.area_fraction(image_size)
    interval_seed = evaluation.run_seed(results_dir)  # one bootstrap per run
    rows, per_image = [], []
    for model_id, maps in cams.items():
        name = config.model_spec(model_id).paper_name
        each = gradcam.lung_share(maps, box)
        per_image.append(pd.DataFrame({"path": test["path"].to_numpy(), "model": name, "lung_share": each}))
        predictions = pd.read_csv(results_dir / model_id / "predictions.csv")
        rows.append({"model": name, "n": len(test), **gradcam.share_against_area(each, area, interval_seed),
                     **metrics.accuracy_and_auc(predictions["label"], predictions["predicted"], seed=interval_seed)})
    shares = pd.DataFrame(rows)
    (results_dir / SHORTCUTS_DIR).mkdir(parents=True, exist_ok=True)
    runtime.write_text(shares.to_csv(index=False), results_dir / GRADCAM_CSV)
    runtime.write_text(pd.concat(per_image).to_csv(index=False), results_dir / GRADCAM_SHARES_CSV)
    _save_box(results_dir, box, image_size)

    # The examples are grouped by the last backbone model of the registry (the paper's proposal):
    # its right and wrong answers, of both classes; every model's map is shown for each.
    names = {model_id: config.model_spec(model_id).paper_name for model_id in reversed(list(cams))}
    predictions = {name: pd.read_csv(results_dir / model_id / "predictions.csv") for model_id, name in names.items()}
    examples = gradcam.gradcam_examples(predictions, per_group=per_group, seed=seed)
    position = {str(p): k for k, p in enumerate(test["path"].astype(str))}
    chosen = [position[str(p)] for p in examples["path"]]
    figure = gradcam.plot_gradcam_grid(images[chosen], {names[m]: cams[m][chosen] for m in cams}, examples,
                                       box=box, path=path)
    return {"shares": shares, "figure": figure}


def baseline_pairs(results_dir, baseline: str = "border") -> pd.DataFrame | None:
    """Each intact model against a baseline on the run's test images, paired image by image:
    McNemar's exact test (model_only, baseline_only: the images only that one got right; p_value)
    and the model's accuracy with its 95% interval. None when the baseline's per-image predictions
    or the models' are missing (a run from before they were saved). Explained in
    notebooks/08_shortcuts."""
    path = Path(results_dir) / baselines.PREDICTIONS_CSV
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    chosen = table[(table["baseline"] == baseline) & (table["test_set"] == "test")].set_index("path")
    seed = evaluation.run_seed(results_dir)
    rows = []
    for spec in config.REGISTRY.values():
        file = Path(results_dir) / spec.id / "predictions.csv"
        if not file.is_file():
            return None
        model = pd.read_csv(file)
        if set(model["path"]) != set(chosen.index):
            raise ValueError(f"{file} and {path} hold different test images; run chapters 03-05 and 08 on one split")
        other = chosen.loc[model["path"]]
        test = metrics.mcnemar_test(model["label"], model["predicted"], other["predicted"].to_numpy())
        rows.append({"model": spec.paper_name, "model_only": int(test["a_only_correct"]),
                     "baseline_only": int(test["b_only_correct"]), "p_value": float(test["p_value"]),
                     **metrics.accuracy_and_auc(model["label"], model["predicted"], seed=seed)})
    return pd.DataFrame(rows)


def summary_markdown(results_dir) -> str:
    """What the chapter's three tests show, written from the files they saved
    (``shortcuts.shortcut_summary``). Explained in notebooks/08_shortcuts."""
    results_dir = Path(results_dir)

    def optional(relative):
        file = results_dir / relative
        return pd.read_csv(file) if file.is_file() else None

    box, image_size = _saved_box(results_dir)
    baselines = optional(BASELINES_CSV)
    return _for_the_papers_claims(baselines) + shortcuts.shortcut_summary(
        baselines, optional(BLANKED_CSV), optional(GRADCAM_CSV), box=box, image_size=image_size,
        baseline_pairs=baseline_pairs(results_dir),
    ) + costs_markdown(results_dir)


def costs_markdown(results_dir) -> str:
    """What the lungs-blanked models cost beside the intact ones, from their run records (wall
    time and machine); empty when none was trained. Explained in notebooks/08_shortcuts."""
    results_dir = Path(results_dir)
    rows, hardware, checked = [], {}, []
    for spec in config.REGISTRY.values():
        intact, blanked = results_dir / spec.id / "run.json", results_dir / BLANKED_DIR / spec.id / "run.json"
        if intact.is_file() and blanked.is_file():
            blanked_record = json.loads(blanked.read_text())
            hardware = hardware or blanked_record.get("hardware", {})
            rows.append({"model": spec.paper_name, "intact_s": json.loads(intact.read_text())["wall_time_s"],
                         "blanked_s": blanked_record["wall_time_s"]})
            if evaluation.ran_paired_check(results_dir / spec.id):
                checked.append(spec.paper_name)
    if not rows:
        return ""
    chapter = (read_json(results_dir / "run.json") or {}).get("notebooks", {}).get("08_shortcuts", {})
    return prose.render("shortcuts_costs.md.j2", rows=rows, hardware=hardware, checked=checked,
                        chapter_s=chapter.get("wall_time_s"), trained_before=trained_beside(results_dir) is not None)


def _for_the_papers_claims(baselines: pd.DataFrame | None) -> str:
    """The paper's accuracies beside the best baseline's, in words: what the baselines mean for
    claims made on test images of the same database."""
    if baselines is None or baselines.empty:
        return ""
    best = baselines.sort_values(["accuracy_low", "accuracy"], ascending=False).iloc[0]
    return prose.render("shortcuts_claims.md.j2", claimed=paper.table6()["accuracy"].to_dict(), best=best.to_dict(),
                        above_chance=best["accuracy_low"] > shortcuts.CHANCE)
