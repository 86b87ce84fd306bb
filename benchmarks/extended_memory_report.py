"""benchmarks/extended_memory.py's record as a reader sees it: the figures the prose cites, the
README's line and the tables (``--render JSON``; book/measured/ holds this rendering)."""

from __future__ import annotations

from rendering import markdown_table, measured_line, summary

from cxr_utils.config import PROTOCOL  # no Keras

EXTENDED_FULL = 12_800  # about the images a paper-profile run leaves for the extended test set
GOALS = {"peak_memory_mb_below": 4000}


def headlines(results: dict) -> list[str]:
    """The figures the prose cites, from the results alone."""
    streamed, setup = results["streamed"], results["setup"]
    goal = results.get("goals", GOALS)["peak_memory_mb_below"]
    size = results["training"]["image_size"]
    if results.get("full_scale"):
        judged = f"goal: under {goal} MB, {'met' if streamed['peak_memory_mb'] < goal else 'missed'}"
    else:
        judged = (f"scaled down: the goal of under {goal} MB is for about {EXTENDED_FULL:,} images at "
                  f"{PROTOCOL.image_size} px")
    items = [
        f"**Scoring the extended test set** (`extended_set.predict_saved_models`, {streamed['images']} images at "
        f"{size} px, {streamed['models']} saved models, the feature cache cold): {streamed['seconds']} s, "
        f"{streamed['images_per_s']} images/s; peak host memory of the scoring process "
        f"{streamed['peak_memory_mb']} MB, {streamed['memory_after_imports_mb']} MB of it already after importing "
        f"Keras and TensorFlow ({judged}).",
    ]
    old = results["old_way"]
    text = (f"**The old way** (all images loaded as one array, then each whole model run on it): for these "
            f"{old['computed']['images']} images that array alone takes {old['computed']['float32_array_mb']} MB "
            f"(float32, images x {size} x {size} x 3 x 4 bytes), decoded through a uint8 array of "
            f"{old['computed']['uint8_array_mb']} MB")
    measured = old.get("measured")
    if measured:
        text += (f"; measured on the first {measured['images']} images: peak {measured['peak_memory_mb']} MB, "
                 f"{measured['images_per_s']} images/s (its backbone runs once per ResNet50 model)")
    items.append(text + ".")
    training = results["training"]
    models = (f"the saved models of {training['models_from']}" if "models_from" in training else
              f"the models trained for {training['epochs']} epoch on {training['images']['train']} images")
    items.append(
        f"**Inputs**: {setup['images']} synthetic PNGs ({setup['png_mb']} MB, seeded random fields, not X-rays: "
        f"memory and time, not accuracy), {results['near_duplicate_groups']} near-duplicate groups found, "
        f"{results['excluded_as_duplicates']} images excluded as copies; {models}, ResNet50 backbones frozen "
        f"with {results['weights_source']}; the feature cache written for the scored images: "
        f"{results['feature_cache_files']} files, {results['feature_cache_mb']} MB on disk.")
    return items


def readme_sentence(record: dict) -> str:
    """The README's line on this benchmark, from its record: tests/test_benchmark_scripts.py checks
    that the README holds exactly this line for the committed record, so it cannot go stale."""
    results, hardware = record["results"], record["hardware"]
    streamed, goal = results["streamed"], results.get("goals", GOALS)["peak_memory_mb_below"]
    met = "under" if streamed["peak_memory_mb"] < goal else "over"
    return (f"Measured on a {hardware['cpu_count']}-core CPU ({record['created_utc'][:10]}): scoring "
            f"{streamed['images']:,} synthetic images at {results['training']['image_size']} px with the three saved "
            f"models peaked at {streamed['peak_memory_mb']:,.0f} MB of host memory ({met} the {goal:,} MB goal) and took "
            f"{streamed['seconds'] / 60:.0f} minutes, {streamed['images_per_s']} images/s (details in the book's "
            f"benchmark appendix).")


def render(record: dict) -> str:
    """The benchmark's summary and tables as Markdown, from its JSON record (``--render``)."""
    results = record["results"]
    parts = [measured_line(record), summary(headlines(results))]
    ways = [results["streamed"], *([results["old_way"]["measured"]] if results["old_way"].get("measured") else [])]
    parts.append(markdown_table("Scoring, each way in a fresh process (peak: its ru_maxrss)",
                                [{k: v for k, v in way.items() if k != "steps"} for way in ways]))
    steps = [step for way in ways for step in way.get("steps", [])]
    if steps:
        parts.append(markdown_table("Step by step (each model from the start of its loading; peak: ru_maxrss by "
                                    "the step's end)", steps))
    parts.append(markdown_table("Set-up (not measured above)", [
        {"step": "synthesise", "seconds": results["setup"]["seconds"]},
        {"step": "manifest and duplicate check", "seconds": results["manifest_s"]},
        {"step": "train the saved models" if "models_from" not in results["training"] else "(models given)",
         "seconds": results["training"]["seconds"]},
    ]))
    return "\n".join(parts)
