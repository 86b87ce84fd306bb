"""Peak memory and speed of scoring the extended test set: about 12,800 images, three saved models.

    python benchmarks/extended_memory.py [--images 12832] [--out JSON] [--markdown FILE]   # about 12,800 scored
    python benchmarks/extended_memory.py --images 40 --train-per-class 10 --image-size 32   # a smoke test
    python benchmarks/extended_memory.py --render JSON [--markdown FILE]                  # measures nothing

Chapter 6 scores every image of the database a run did not use (about 12,800 of the full
database's 13,808) with each saved model, through ``extended_set.predict_saved_models``:
images stream a chunk at a time, and a frozen backbone's feature maps go through the on-disk
cache (cxr_utils.features), so both ResNet50 models share one backbone pass. This measures that
call's peak host memory and time on a folder of that size, made here (no real image copied):

1. ``--images`` synthetic PNGs at ``--image-size`` (224 px) in the dataset's layout
   (``COVID/images/COVID-<n>.png``, ``Normal/images/Normal-<n>.png``, the database's class
   shares), each made of seeded random smooth fields and a little noise: distinct images (the
   record says how many near-copy groups the duplicate check found: none so far), about the
   real copies' file size. Not X-rays: this measures memory and time, not accuracy. Made in a
   temporary folder (``--work-dir`` keeps them for a later run; the full run needs about 8 GB
   of disk there, mostly the feature cache).
2. Three saved models from a quick training: ``training.run_experiment`` for each model of
   ``config.REGISTRY`` on ``--train-per-class`` images per class, 1 epoch, at ``--image-size``;
   the ResNet50 models frozen with a weights file (a stand-in for ImageNet's,
   ``cxr_utils.standin_weights.make_standin``; ``--weights-file`` names another), so that they share
   the feature cache as with ImageNet weights.
3. The extended test set (``extended_set.extended_test_set``: every image outside the sample)
   scored by ``predict_saved_models`` in a fresh process whose ``ru_maxrss`` is the peak
   reported (its value after importing Keras and TensorFlow is reported beside it), with the
   feature cache cold for these images, as on a first run. Progress bars show the time left.
   Each model's share (from the start of its loading) is reported too. ``--models-from`` scores
   with the saved models of an earlier run instead of training (and then scores every image).

The old way (before streaming: every image loaded as one float32 array, then each whole model
run on it) is given as that array's size for the same images; ``--old-way-images K`` also
measures it, in its own process, on the first K images. The goal: a peak under
``GOALS["peak_memory_mb_below"]`` MB at the full size (about 12,800 images at 224 px).
``--render`` turns a JSON record into the summary and tables (book/measured/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below
from extended_memory_report import EXTENDED_FULL, GOALS, headlines, readme_sentence, render  # noqa: E402, F401
from rendering import add_record_options, render_only, show_tables, write_record  # noqa: E402
from timing import log, peak_memory_mb  # noqa: E402

from cxr_utils.config import PROTOCOL, REGISTRY  # noqa: E402  (no Keras)

# The full database: 3,616 COVID and 10,192 Normal images (a paper-profile run leaves EXTENDED_FULL).
DATABASE = {"COVID": 3616, "Normal": 10192}
TRAIN_PER_CLASS = 16
FULL_SCALE_IMAGES = 12_000  # from this many scored images at the paper's size, the goal is judged


def class_counts(images: int, train_per_class: int) -> dict[str, int]:
    """Images per class in the database's shares, each class with at least one image beyond the
    training sample."""
    covid = max(train_per_class + 1, round(images * DATABASE["COVID"] / sum(DATABASE.values())))
    normal = images - covid
    if normal < train_per_class + 1:
        raise ValueError(f"--images {images} leaves too few Normal images for --train-per-class {train_per_class}")
    return {"COVID": covid, "Normal": normal}


def synthetic_image(name: str, number: int, size: int, seed: int) -> np.ndarray:
    """A distinct stand-in image: seeded random fields of 8x8 and 32x32 values, bicubic to ``size``,
    plus a little noise; grey in three identical channels like the shared copies of the database."""
    from PIL import Image

    rng = np.random.default_rng([seed, sorted(DATABASE).index(name), number])

    def field(cells):
        coarse = Image.fromarray(rng.random((cells, cells), dtype=np.float32), mode="F")
        return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)

    grey = 40 + 170 * np.clip(0.75 * field(8) + 0.25 * field(32), 0, 1) + rng.integers(-1, 2, (size, size))
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def synthesise(root, counts: dict[str, int], size: int = PROTOCOL.image_size, seed: int = 0) -> dict:
    """Write the images into ``root`` in the dataset's layout (in threads, with the time left);
    reuses a folder that an earlier call made with the same settings. Returns what was made."""
    from PIL import Image

    root = Path(root)
    spec = {"counts": counts, "size": size, "seed": seed, "version": 2}
    marker = root / "synthetic.json"
    if marker.is_file() and json.loads(marker.read_text()).get("spec") == spec:
        log(f"  reusing the {sum(counts.values())} synthetic images in {root}")
        return json.loads(marker.read_text())
    shutil.rmtree(root, ignore_errors=True)
    jobs = []
    for name, count in counts.items():
        folder = root / name / "images"
        folder.mkdir(parents=True)
        jobs += [(name, number, folder / f"{name}-{number}.png") for number in range(1, count + 1)]

    def make(job):
        name, number, path = job
        # Fast zlib: files of about the real copies' size (30-40 KB at 224 px), written in minutes.
        Image.fromarray(synthetic_image(name, number, size, seed)).save(path, compress_level=1)
        return path.stat().st_size

    start, sizes, step = time.perf_counter(), [], max(1, len(jobs) // 10)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for done, size_bytes in enumerate(pool.map(make, jobs), 1):
            sizes.append(size_bytes)
            if done % step == 0 or done == len(jobs):
                elapsed = time.perf_counter() - start
                log(f"  synthesised {done}/{len(jobs)} images, {elapsed:.0f} s, about "
                    f"{elapsed / done * (len(jobs) - done):.0f} s left")
    made = {"spec": spec, "images": len(jobs), "per_class": counts, "size_px": size,
            "png_mb": round(sum(sizes) / 2**20, 1), "seconds": round(time.perf_counter() - start, 1)}
    marker.write_text(json.dumps(made))
    return made


def train_models(split, results_dir, cache_dir, weights_file, image_size: int) -> dict:
    """Every model of the registry trained for one epoch on ``split`` and saved, the ResNet50
    backbones frozen with ``weights_file``."""
    from cxr_utils import training

    settings = training.TrainingConfig(epochs=1, batch_size=8, seed=PROTOCOL.seed, progress=False,
                                       inference_check_images=0)
    start = time.perf_counter()
    for model_id in REGISTRY:
        log(f"  training {model_id} (1 epoch, {image_size} px) ...")
        training.run_experiment(model_id, split, results_dir, settings, model_options={"weights": str(weights_file)},
                                image_size=image_size, cache_dir=cache_dir)
    return {"models": list(REGISTRY), "epochs": 1, "image_size": image_size,
            "images": {part: int((split["split"] == part).sum()) for part in ("train", "val", "test")},
            "seconds": round(time.perf_counter() - start, 1)}


# -- scoring, in a fresh process -------------------------------------------------------------------


def score_worker(spec: dict) -> dict:
    """Score ``spec["rows"]`` with the saved models, the new way (``predict_saved_models``) or the
    old (every image as one array, each whole model on it); report time and peak memory, in all
    and per model (where each model's load starts, seen through ``keras.saving.load_model``)."""
    import keras

    from cxr_utils import data, extended_set, inference, models, training  # noqa: F401  (models registers custom layers)

    rows = data.read_manifest(spec["rows"])
    if spec.get("limit"):
        rows = rows.iloc[: spec["limit"]].reset_index(drop=True)
    after_imports = peak_memory_mb()
    image_size, cache_dir = spec["image_size"], spec["cache_dir"]
    loads, load_model = [], keras.saving.load_model

    def timed_load(path, *args, **kwargs):  # both ways load each model once, in the registry's order
        load = {"model": Path(path).parent.name, "begin": time.perf_counter(), "peak_at_begin": peak_memory_mb()}
        model = load_model(path, *args, **kwargs)
        loads.append({**load, "loaded": time.perf_counter()})
        return model

    keras.saving.load_model = timed_load
    start = time.perf_counter()
    try:
        if spec["way"] == "streamed":
            predictions = extended_set.predict_saved_models(spec["results_dir"], rows, image_size=image_size,
                                                            cache_dir=cache_dir, progress=len(rows) > 1000)
            probabilities = [table["probability"].to_numpy() for table in predictions.values()]
        else:
            images = data.load_images(rows, image_size=image_size, progress=len(rows) > 1000)
            probabilities = []
            for model_id in REGISTRY:
                model = keras.saving.load_model(Path(spec["results_dir"]) / model_id / "model.keras", safe_mode=True)
                probabilities.append(inference.predict_probabilities(model, images, PROTOCOL.batch_size))
    finally:
        keras.saving.load_model = load_model
    end = time.perf_counter()
    scored = [len(p) for p in probabilities]
    if scored != [len(rows)] * len(REGISTRY) or not all(np.isfinite(p).all() for p in probabilities):
        raise AssertionError(f"scored {scored} of {len(rows)} images per model, or a probability is not finite")
    steps = []
    if loads and loads[0]["begin"] - start >= 0.05:
        steps.append({"way": spec["way"], "step": "load every image", "seconds": round(loads[0]["begin"] - start, 1),
                      "peak_memory_mb_so_far": round(loads[0]["peak_at_begin"])})
    for index, load in enumerate(loads):
        following = loads[index + 1] if index + 1 < len(loads) else None
        steps.append({"way": spec["way"], "step": load["model"],
                      "seconds": round((following["begin"] if following else end) - load["begin"], 1),
                      "of_which_loading_s": round(load["loaded"] - load["begin"], 1),
                      "peak_memory_mb_so_far": round(following["peak_at_begin"] if following else peak_memory_mb())})
    return {"way": spec["way"], "images": int(len(rows)), "models": len(probabilities),
            "seconds": round(end - start, 1), "images_per_s": round(len(rows) / (end - start), 1),
            "peak_memory_mb": round(peak_memory_mb()), "memory_after_imports_mb": round(after_imports),
            "steps": steps}


def run_worker(spec: dict, work: Path) -> dict:
    spec_path, out_path = work / f"{spec['way']}.spec.json", work / f"{spec['way']}.result.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path),
                                "--out", str(out_path)], stdout=2)  # its stdout to stderr: ours holds the tables
    if completed.returncode != 0 or not out_path.is_file():
        raise RuntimeError(f"the {spec['way']} scoring process exited with status {completed.returncode}")
    return json.loads(out_path.read_text())


def folder_files(folder) -> tuple[int, float]:
    """(files, MB) under ``folder``."""
    sizes = [p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()]
    return len(sizes), sum(sizes) / 2**20


# -- the record and its rendering -----------------------------------------------------------------


def old_way_array_mb(images: int, image_size: int) -> dict:
    """What the old way held before scoring any image: all of them as float32 (N x S x S x 3 x
    4 bytes), decoded through a uint8 array of a quarter that size."""
    cells = images * image_size * image_size * 3
    return {"images": images, "float32_array_mb": round(cells * 4 / 2**20), "uint8_array_mb": round(cells / 2**20)}


# -- the command ------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, help=f"synthetic images in all (default {EXTENDED_FULL} + the "
                        "training sample, so that about as many are scored as a paper-profile run leaves)")
    parser.add_argument("--train-per-class", type=int, default=TRAIN_PER_CLASS,
                        help=f"images per class the models train on (default {TRAIN_PER_CLASS})")
    parser.add_argument("--image-size", type=int, default=PROTOCOL.image_size,
                        help=f"models' and images' size; smaller only for smoke tests (default {PROTOCOL.image_size})")
    parser.add_argument("--old-way-images", type=int, default=0,
                        help="also measure the old way (all images as one array) on this many images (default 0: "
                        "only its array's size is computed)")
    parser.add_argument("--models-from", metavar="RESULTS_DIR", help="score with the saved models of this results "
                        "folder (e.g. a run of `python -m cxr_utils.run`) instead of training three here; "
                        "--image-size must be theirs, and every synthetic image is scored")
    parser.add_argument("--weights-file", help="the ResNet50 models' frozen weights (default: the ImageNet stand-in, "
                        "made here)")
    parser.add_argument("--work-dir", help="keep the synthetic images (reused by a later run), models and caches "
                        "here (default: a temporary folder, removed; the full run needs about 8 GB of disk)")
    add_record_options(parser, "extended_memory")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.render:
        return render_only(parser, args.render, args.markdown, render)
    if args.worker:
        Path(args.out).write_text(json.dumps(score_worker(json.loads(Path(args.worker).read_text()))))
        return 0
    images = args.images if args.images is not None else EXTENDED_FULL + 2 * args.train_per_class
    try:
        counts = class_counts(images, args.train_per_class)
    except ValueError as error:
        parser.error(str(error))

    from cxr_utils import data, extended_set, features, runtime

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="extended-memory-") as temporary:
        work = Path(args.work_dir or temporary).resolve()
        results_dir, cache_dir = work / "results", work / "cache"
        for folder in (results_dir, cache_dir):  # a cold cache and fresh models on every run
            shutil.rmtree(folder, ignore_errors=True)
        results_dir.mkdir(parents=True)
        log(f"1/4 synthesising {images} images of {args.image_size} px in {work / 'dataset'} ...")
        setup = synthesise(work / "dataset", counts, args.image_size)
        log("2/4 manifest and duplicate check ...")
        manifest_start = time.perf_counter()
        manifest = data.add_duplicate_groups(data.build_manifest(work / "dataset", progress=images > 2000))
        manifest_s = time.perf_counter() - manifest_start
        sample = data.sample_balanced(manifest, n_per_class=args.train_per_class, seed=PROTOCOL.seed)
        split = data.split_dataset(sample, seed=PROTOCOL.seed)
        for name, table in (("manifest", manifest), ("sample", sample), ("split", split)):
            data.save_manifest(table, results_dir / f"{name}.csv")
        if args.models_from:
            results_dir = Path(args.models_from).resolve()
            missing = [m for m in REGISTRY if not (results_dir / m / "model.keras").is_file()]
            if missing:
                parser.error(f"--models-from {results_dir} has no saved model for {', '.join(missing)}")
            log(f"3/4 the saved models of {results_dir} (nothing trained) ...")
            training = {"models_from": str(results_dir), "models": list(REGISTRY), "image_size": args.image_size,
                        "seconds": 0.0}
            split = split.iloc[:0]  # none of these images was theirs: every one is scored
            weights_source = "their own weights (as their run recorded them)"
        else:
            if args.weights_file:
                weights_file = Path(args.weights_file).resolve()
                weights_source = f"the weights file {weights_file.name}"
            else:
                from cxr_utils.standin_weights import make_standin

                weights_file = make_standin(work / "standin")
                weights_source = "a stand-in for ImageNet's weights (a seeded ResNet50)"
            log("3/4 training the three saved models ...")
            training = train_models(split, results_dir, cache_dir, weights_file, args.image_size)
        rows = extended_set.extended_test_set(manifest, split)
        data.save_manifest(rows, work / "extended_rows.csv")
        features_before = folder_files(cache_dir / "features")
        log(f"4/4 scoring {len(rows)} images with {len(REGISTRY)} models in a fresh process (ResNet50's backbone "
            f"pass takes most of it{'; the bars show the time left' if len(rows) > 1000 else ''}) ...")
        spec = {"rows": str(work / "extended_rows.csv"), "results_dir": str(results_dir),
                "cache_dir": str(cache_dir), "image_size": args.image_size}
        streamed = run_worker({**spec, "way": "streamed"}, work)
        log(f"  streamed: {streamed['seconds']} s, {streamed['images_per_s']} images/s, "
            f"peak {streamed['peak_memory_mb']} MB")
        old_way = {"computed": old_way_array_mb(len(rows), args.image_size)}
        if args.old_way_images:
            log(f"  the old way on the first {args.old_way_images} images ...")
            old_way["measured"] = run_worker({**spec, "way": "one_array", "limit": args.old_way_images}, work)
            log(f"  one array: {old_way['measured']['seconds']} s, peak {old_way['measured']['peak_memory_mb']} MB")
        groups = manifest["duplicate_group"].value_counts()
        results = {
            "setup": {k: v for k, v in setup.items() if k != "spec"},
            "manifest_s": round(manifest_s, 1),
            "training": training,
            "weights_source": weights_source,
            "near_duplicate_groups": int((groups > 1).sum()),
            "excluded_as_duplicates": int(rows.attrs["excluded_as_duplicates"]),
            # One feature file per scored image, not one per ResNet50 model: they share the pass.
            "feature_cache_files": folder_files(cache_dir / "features")[0] - features_before[0],
            "feature_cache_mb": round(folder_files(cache_dir / "features")[1] - features_before[1], 1),
            "chunk_images": features.CHUNK_IMAGES,
            "streamed": streamed,
            "old_way": old_way,
            "full_scale": args.image_size == PROTOCOL.image_size and len(rows) >= FULL_SCALE_IMAGES,
            "goals": GOALS,
        }
        record = runtime.run_record(vars(args), time.perf_counter() - start, results=results)
        record = write_record(record, args.out)
    show_tables(render(record), args.out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
