"""`python -m cxr_utils.predict` beside the series' own inference: images/s on the same images.

    python benchmarks/predict_speed.py --run RESULTS_DIR [--images 512] [--rounds 2] [--out JSON] [--markdown FILE]
    python benchmarks/predict_speed.py --run RESULTS_DIR --images 8 --rounds 1     # a smoke test
    python benchmarks/predict_speed.py --render JSON [--markdown FILE]             # measures nothing

RESULTS_DIR is a finished run with its saved models (``python -m cxr_utils.run --profile sample``
leaves one in results/sample). The images are that run's extended test set
(``extended_set.extended_test_set``: images it never touched), ``--images`` of them (a seeded,
class-balanced subset), scored by every model of the registry two ways, side by side in one
process, in interleaved rounds (the order alternating; the fastest round of each way kept):

- ``predict``: what ``python -m cxr_utils.predict`` runs, through its Python API: the models
  loaded once (``saved_models.load_models``), then ``predict.score_images`` streams the files
  through them (decoded in threads, a chunk ahead; frozen backbones with the same weights share
  one pass, in memory).
- ``series``: the series' own inference, ``extended_set.predict_saved_models`` on the same rows,
  as chapter 6 runs it on a first run: the feature and image caches cold (a fresh folder each
  round), each model loaded once.

Each way is timed from the first model's loading to the last probability, and split into
loading (the ``keras.saving.load_model`` calls; for ``predict`` all of ``load_models``) and
scoring (the rest: decoding, backbone, heads, caches). Graph tracing happens in the scoring of
both ways alike, since both load fresh models every round. The ratios are ``series`` time over
``predict`` time: above 1, predict is faster. The goal: predict scores at least as fast as the
series (``GOALS``). The two ways' probabilities are compared too (largest difference per model):
they must be the same numbers, or the ways did not do the same work. ``--render`` turns a JSON
record into the summary and tables (book/measured/).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below
from rendering import (  # noqa: E402
    REPO_ROOT, add_record_options, markdown_table, measured_line, render_only, show_tables, summary, write_record,
)
from timing import log  # noqa: E402

from cxr_utils.config import PROTOCOL, REGISTRY  # noqa: E402  (no Keras)

WAYS = {
    "predict": "`python -m cxr_utils.predict`'s Python API: saved_models.load_models, then predict.score_images",
    "series": "the series' inference: extended_set.predict_saved_models, its caches cold (as on a first run)",
}
GOALS = {"predict_vs_series_at_least": 1.0}
IMAGES = 512
AGREEMENT = 1e-4  # largest difference between the two ways' probabilities that still means "the same numbers"


def shown_path(path) -> str:
    """A folder as the record names it: relative to the repository inside it, else by its name
    alone (no machine's absolute path in a committed record)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return f"RESULTS_DIR (…/{path.name})"


# -- the two ways ------------------------------------------------------------------------------------


class LoadClock:
    """Sums the time spent in ``keras.saving.load_model`` while installed (both ways load through it)."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        import keras

        self._keras, self._load = keras, keras.saving.load_model

        def timed_load(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self._load(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        keras.saving.load_model = timed_load
        return self

    def __exit__(self, *exc):
        self._keras.saving.load_model = self._load
        return False


def predict_way(results_dir, rows, image_size: int, batch_size: int) -> tuple[dict, dict]:
    """(times, probabilities by model id) of ``predict``'s way on ``rows``."""
    from cxr_utils import predict, saved_models

    start = time.perf_counter()
    loaded = saved_models.load_models(results_dir)
    loaded_at = time.perf_counter()
    table, problems = predict.score_images(loaded, rows["path"].tolist(), image_size, batch_size)
    end = time.perf_counter()
    if problems or len(table) != len(rows):
        raise RuntimeError(f"predict could not score {len(rows) - len(table)} of {len(rows)} images: {problems[:3]}")
    probabilities = {model_id: table[model_id].to_numpy() for model_id in loaded}
    return _times("predict", len(rows), len(loaded), start, end, loaded_at - start), probabilities


def series_way(results_dir, rows, image_size: int, batch_size: int) -> tuple[dict, dict]:
    """(times, probabilities by model id) of the series' inference on ``rows``, its caches cold."""
    from cxr_utils import extended_set

    ids = {spec.paper_name: model_id for model_id, spec in REGISTRY.items()}
    with tempfile.TemporaryDirectory(prefix="predict-speed-cache-") as cache, LoadClock() as clock:
        start = time.perf_counter()
        predictions = extended_set.predict_saved_models(results_dir, rows, image_size=image_size, cache_dir=cache,
                                                        batch_size=batch_size)
        end = time.perf_counter()
    probabilities = {ids[name]: table["probability"].to_numpy() for name, table in predictions.items()}
    return _times("series", len(rows), len(predictions), start, end, clock.seconds), probabilities


def _times(way: str, images: int, models: int, start: float, end: float, loading: float) -> dict:
    total = end - start
    scoring = total - loading
    return {"way": way, "images": images, "models": models, "total_s": round(total, 2), "loading_s": round(loading, 2),
            "scoring_s": round(scoring, 2), "images_per_s": round(images / scoring, 1) if scoring > 0 else None,
            "images_per_s_with_loading": round(images / total, 1) if total > 0 else None}


def largest_differences(first: dict, second: dict) -> dict:
    """Per model id, the largest absolute difference between two ways' probabilities."""
    return {model_id: float(np.max(np.abs(np.asarray(first[model_id], np.float64) - second[model_id]), initial=0.0))
            for model_id in first}


def measure(results_dir, rows, image_size: int, rounds: int, batch_size: int = PROTOCOL.batch_size,
            ways=None) -> dict:
    """Every way ``rounds`` times, interleaved (the order alternating), on the same rows: each
    round's times, the fastest round per way (by total time), the ratios and the agreement.
    ``ways``: name -> function as ``predict_way`` (the tests pass stand-ins)."""
    ways = ways or {"predict": predict_way, "series": series_way}
    names = list(ways)
    all_rounds, probabilities = [], {}
    for number in range(1, rounds + 1):
        for name in names if number % 2 else names[::-1]:
            log(f"  round {number}/{rounds}: {name} on {len(rows)} images ...")
            times, scored = ways[name](results_dir, rows, image_size, batch_size)
            all_rounds.append({"round": number, **times})
            probabilities.setdefault(name, scored)
            log(f"    {times['total_s']} s ({times['loading_s']} s loading), {times['images_per_s']} images/s scoring")
    fastest = {name: min((r for r in all_rounds if r["way"] == name), key=lambda r: r["total_s"]) for name in names}
    results = {"ways": fastest, "rounds": all_rounds}
    predict, series = fastest.get("predict"), fastest.get("series")
    if predict and series and predict["scoring_s"] > 0 and predict["total_s"] > 0:
        results["predict_vs_series"] = {
            "scoring": round(series["scoring_s"] / predict["scoring_s"], 2),
            "with_loading": round(series["total_s"] / predict["total_s"], 2),
        }
    if "predict" in probabilities and "series" in probabilities:
        results["largest_probability_difference"] = largest_differences(probabilities["predict"],
                                                                         probabilities["series"])
    return results


# -- the record and its rendering -----------------------------------------------------------------


def headlines(results: dict) -> list[str]:
    """The figures the prose cites, from the results alone."""
    ways, setup = results["ways"], results["setup"]
    goal = results.get("goals", GOALS)["predict_vs_series_at_least"]
    scope = (f"{setup['images']} images of the extended test set of {setup['run']} ({setup['profile']} profile, "
             f"{setup['image_size']} px, {setup['weights']}), {setup['models']} saved models; fastest of "
             f"{setup['rounds']} interleaved round{'s' if setup['rounds'] != 1 else ''}")
    items = []
    ratios = results.get("predict_vs_series")
    if ratios:
        predict, series = ways["predict"], ways["series"]
        verdict = "met" if ratios["scoring"] >= goal else "missed"
        items.append(
            f"**Scoring** ({scope}): `predict` {predict['images_per_s']} images/s, the series' inference "
            f"{series['images_per_s']} images/s: predict at {ratios['scoring']}x the series' speed (goal: at least "
            f"{goal}x, {verdict}).")
        items.append(
            f"**With loading the models**: {predict['images_per_s_with_loading']} vs "
            f"{series['images_per_s_with_loading']} images/s ({ratios['with_loading']}x; loading "
            f"{predict['loading_s']} s vs {series['loading_s']} s, a cost paid once per command, whatever the "
            "number of images).")
    else:
        items.append(f"**Incomplete**: not both ways measured ({scope}).")
    differences = results.get("largest_probability_difference")
    if differences:
        worst = max(differences.values())
        same = "the same numbers" if worst <= AGREEMENT else "**not the same numbers**: the ways did different work"
        items.append(f"**Same work**: the two ways' probabilities differ by at most {worst:.1e} ({same}).")
    items.append("**The two ways**: " + "; ".join(f"`{way}`, {text}" for way, text in
                                                 results.get("ways_explained", WAYS).items()) + ".")
    return items


def render(record: dict) -> str:
    """The benchmark's summary and tables as Markdown, from its JSON record (``--render``)."""
    results = record["results"]
    parts = [measured_line(record), summary(headlines(results))]
    parts.append(markdown_table("Each way, its fastest round (seconds; images/s of the scoring, and with loading)",
                                list(results["ways"].values())))
    parts.append(markdown_table("Every round, in the order run", results["rounds"]))
    differences = results.get("largest_probability_difference")
    if differences:
        parts.append(markdown_table("Largest difference between the two ways' probabilities",
                                    [{"model": m, "difference": f"{d:.1e}"} for m, d in differences.items()]))
    return "\n".join(parts)


# -- the command ------------------------------------------------------------------------------------


def run_rows(results_dir, images: int | None, seed: int = 0):
    """The run's extended test set (a seeded, class-balanced ``images`` of it), with the run's
    image size and settings."""
    from cxr_utils import data, extended_set, saved_models

    results_dir = Path(results_dir)
    manifest, split = data.read_manifest(results_dir / "manifest.csv"), data.read_manifest(results_dir / "split.csv")
    rows = extended_set.extended_test_set(manifest, split, max_images=images, seed=seed)
    missing = [p for p in rows["path"] if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of the run's images are not here, e.g. {missing[0]}; run the "
                                "benchmark where the run's data folder is")
    return rows, saved_models.run_image_size(results_dir) or PROTOCOL.image_size


def runtime_settings(results_dir) -> dict:
    """The settings the run recorded in its run.json (empty when it has none)."""
    from cxr_utils.atomic import read_json

    return (read_json(Path(results_dir) / "run.json") or {}).get("settings", {})


def weights_text(settings: dict) -> str:
    """How the run's ResNet50 models were initialised, in words."""
    from cxr_utils import config

    return config.weights_label(settings.get("weights")) if "weights" in settings else "weights not recorded"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", metavar="RESULTS_DIR", help="a finished run with its saved models (e.g. "
                        "results/sample, from `python -m cxr_utils.run --profile sample`)")
    parser.add_argument("--images", type=int, default=IMAGES, help=f"images of the run's extended test set scored "
                        f"(default {IMAGES}; 0: all of it)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each way's fastest is kept "
                        "(default 2)")
    add_record_options(parser, "predict_speed")
    args = parser.parse_args(argv)
    if args.render:
        return render_only(parser, args.render, args.markdown, render)
    if not args.run:
        parser.error("--run RESULTS_DIR is required (or --render JSON)")
    if args.rounds < 1 or args.images < 0:
        parser.error("--rounds must be at least 1 and --images at least 0")

    from cxr_utils import runtime, saved_models

    start = time.perf_counter()
    try:
        saved_models.check_run_folder(args.run, list(REGISTRY))
        rows, image_size = run_rows(args.run, args.images or None)
    except (saved_models.RunFolderError, OSError, ValueError) as error:
        parser.error(str(error))
    if rows.empty:
        parser.error(f"the run {args.run} leaves no image outside its sample to score")
    recorded = runtime_settings(args.run)
    log(f"{len(rows)} images of {args.run}'s extended test set at {image_size} px, {args.rounds} round(s) ...")
    results = measure(args.run, rows, image_size, args.rounds)
    results.update({
        "setup": {"run": shown_path(args.run), "profile": recorded.get("profile", "?"),
                  "weights": weights_text(recorded), "image_size": image_size, "images": int(len(rows)),
                  "per_class": {str(k): int(v) for k, v in rows["class"].value_counts().sort_index().items()},
                  "models": len(REGISTRY), "rounds": args.rounds, "batch_size": PROTOCOL.batch_size},
        "ways_explained": WAYS,
        "goals": GOALS,
    })
    settings = {**vars(args), "run": shown_path(args.run)}
    record = runtime.run_record(settings, time.perf_counter() - start, results=results)
    record = write_record(record, args.out)
    show_tables(render(record), args.out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
