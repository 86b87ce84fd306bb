"""Where the time goes: the paper's way vs the fast path, the data pipeline, and per-model throughput.

    python benchmarks/speed.py [--data-dir DIR] [--out benchmarks/results/speed.json]

Everything is measured side by side in one run on real images, and printed as a table plus a
JSON file (with the hardware and versions). Random backbone weights are used: the arithmetic
is the same as with ImageNet weights. Explained in book/reproducibility.

1. Paper's way vs fast path, for the paper's protocol (800 training + 100 validation images,
   15 epochs) with a frozen ResNet50 backbone. The paper's way runs the backbone on every image
   in every epoch inside ``fit``; measuring 15 such epochs would take most of an hour on a CPU,
   so a measured slice (``--slow-images`` images for one epoch, after a warm-up) is extrapolated
   linearly to 15 x 900 images, and the table says so. The fast path is measured in full.
2. Data pipeline: decoding every image in every epoch vs reading the on-disk cache; and the
   project's loader (cache -> in-memory arrays) as overhead on a training epoch.
3. Training and inference images/s of each model end to end (backbone trainable), and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "covid19-radiography-224"
PROTOCOL = {"train": 800, "val": 100, "epochs": 15, "batch_size": 32}


def peak_memory_mb() -> float:
    # ru_maxrss is in KiB on Linux: the process's high-water mark so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def fit_epoch_seconds(model, images, labels, batch_size):
    """One epoch of ``fit`` after a one-batch warm-up (graph tracing is not training time)."""
    from cxr_utils import training

    training.compile_for_training(model)
    model.fit(images[:batch_size], labels[:batch_size], batch_size=batch_size, epochs=1, verbose=0)
    _, seconds = timed(model.fit, images, labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=True)
    return seconds


def paper_way_vs_fast_path(images, labels, slow_images, log):
    from cxr_utils import models, runtime, training

    protocol_images = PROTOCOL["train"] + PROTOCOL["val"]
    rows = []
    for name in ("resnet50", "resnet50_lstm"):
        runtime.set_seed(0)
        model = models.build_model(name, weights=None, trainable_backbone=False)
        # Paper's way: the frozen backbone inside fit, every epoch. Measured on a slice.
        seconds = fit_epoch_seconds(model, images[:slow_images], labels[:slow_images], PROTOCOL["batch_size"])
        per_image = seconds / slow_images
        slow_total = per_image * protocol_images * PROTOCOL["epochs"]
        # Fast path: features once for the protocol's 900 images, then 15 epochs of the head.
        n_train = min(PROTOCOL["train"], len(images) - PROTOCOL["val"])
        train = (images[:n_train], labels[:n_train])
        val = (images[n_train : n_train + PROTOCOL["val"]], labels[n_train : n_train + PROTOCOL["val"]])
        runtime.set_seed(0)
        fresh = models.build_model(name, weights=None, trainable_backbone=False)
        config = training.TrainingConfig(epochs=PROTOCOL["epochs"], batch_size=PROTOCOL["batch_size"], progress=False)
        result, fast_total = timed(training.train_model, fresh, train, val, config)
        assert result.fast_path
        scale = protocol_images / (n_train + len(val[0]))  # if fewer images were available
        fast_total *= scale
        rows.append({
            "model": name,
            "paper_way_s": round(slow_total, 1),
            "paper_way_measured": f"1 epoch of {slow_images} images, x{protocol_images * PROTOCOL['epochs'] / slow_images:.0f}",
            "fast_path_s": round(fast_total, 1),
            "fast_path_measured": (
                f"in full ({n_train}+{len(val[0])} images, 15 epochs)" if scale == 1
                else f"{n_train}+{len(val[0])} images, 15 epochs, x{scale:.1f}"
            ),
            "speedup": round(slow_total / fast_total, 1),
        })
        log(f"  {name}: paper's way ~{slow_total:.0f} s (extrapolated), fast path {fast_total:.0f} s")
    return rows


def data_pipeline(split, n_images, images_for_epoch, labels_for_epoch, log):
    from cxr_utils import data, models, runtime

    rows = split.iloc[:n_images]
    with tempfile.TemporaryDirectory() as cache:
        _, decode_s = timed(data.load_images, rows, cache_dir=None, progress=False)
        data.load_images(rows, cache_dir=cache, progress=False)  # fill the cache
        _, cached_s = timed(data.load_images, rows, cache_dir=cache, progress=False)
        # Overhead of the project's loader on training: one epoch of the LSTM (the cheapest
        # model, so the overhead share is the largest it gets) on in-memory arrays, vs the
        # cached load that produces those arrays.
        runtime.set_seed(0)
        model = models.build_lstm()
        epoch_s = fit_epoch_seconds(model, images_for_epoch, labels_for_epoch, PROTOCOL["batch_size"])
        per_epoch_load = cached_s * len(images_for_epoch) / n_images
    result = {
        "images": n_images,
        "decode_every_epoch_s_per_epoch": round(decode_s, 2),
        "cached_s_per_load": round(cached_s, 2),
        "cache_speedup": round(decode_s / cached_s, 1),
        "protocol_decode_every_epoch_s": round(decode_s * PROTOCOL["epochs"], 1),
        "protocol_cache_once_s": round(cached_s, 2),
        "lstm_epoch_s": round(epoch_s, 2),
        "loader_overhead_pct_if_reloaded_each_epoch": round(100 * per_epoch_load / epoch_s, 1),
        "loader_overhead_pct_load_once": round(100 * per_epoch_load / (epoch_s * PROTOCOL["epochs"]), 2),
    }
    log(f"  decode {decode_s:.1f} s vs cache {cached_s:.2f} s for {n_images} images")
    return result


def throughput(images, labels, batches, log):
    from cxr_utils import models, runtime, training

    batch = PROTOCOL["batch_size"]
    rows = []
    for name in models.MODEL_NAMES:
        runtime.set_seed(0)
        options = {} if name == "lstm" else {"weights": None}  # from scratch: backbone trains
        model = models.build_model(name, **options)
        n = batch * batches
        train_s = fit_epoch_seconds(model, images[:n], labels[:n], batch)
        training.predict_in_batches(model, images[:batch], batch)  # warm-up
        _, infer_s = timed(training.predict_in_batches, model, images[:n], batch)
        rows.append({
            "model": name,
            "train_images_per_s": round(n / train_s, 1),
            "inference_images_per_s": round(n / infer_s, 1),
            "parameters": int(model.count_params()),
            "peak_memory_mb_so_far": round(peak_memory_mb()),
        })
        log(f"  {name}: train {n / train_s:.1f} img/s, inference {n / infer_s:.1f} img/s")
    return rows


def print_table(title, rows):
    print(f"\n{title}")
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for row in rows:
        print("  ".join(str(row[k]).ljust(w) for k, w in zip(keys, widths)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "speed.json"))
    parser.add_argument("--slow-images", type=int, default=96, help="images in the measured slice of the paper's way")
    parser.add_argument("--throughput-batches", type=int, default=3)
    parser.add_argument("--images", type=int, default=900, help="real images to load (the protocol uses 900)")
    args = parser.parse_args(argv)

    from cxr_utils import data, runtime

    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    start = time.perf_counter()
    manifest = data.add_duplicate_groups(data.build_manifest(args.data_dir, progress=False))
    sample = data.sample_balanced(manifest, n_per_class=min(500, args.images // 2 + 1), seed=0)
    split = sample.sample(frac=1.0, random_state=0).reset_index(drop=True).iloc[: args.images]
    images = data.load_images(split, progress=False)
    labels = data.labels(split).astype(np.float32)

    log("1/3 paper's way vs fast path")
    protocol = paper_way_vs_fast_path(images, labels, args.slow_images, log)
    log("2/3 data pipeline")
    pipeline = data_pipeline(split, min(len(split), 1000), images[:PROTOCOL["train"]], labels[:PROTOCOL["train"]], log)
    log("3/3 throughput")
    models_rows = throughput(images, labels, args.throughput_batches, log)

    result = {
        "protocol": PROTOCOL,
        "paper_way_vs_fast_path": protocol,
        "data_pipeline": pipeline,
        "throughput": models_rows,
        "peak_memory_mb": round(peak_memory_mb()),
        "goals": {"fast_path_speedup_at_least": 10, "loader_overhead_pct_at_most": 5},
    }
    record = runtime.run_record(vars(args), time.perf_counter() - start, results=result)
    runtime.write_json(record, args.out)

    print(f"Hardware: {record['hardware']['cpu']} ({record['hardware']['cpu_count']} cores), "
          f"{record['hardware']['accelerator']}, Keras {record['versions'].get('keras')} on {record['hardware']['keras_backend']}")
    print_table("Paper's way (frozen backbone in fit, every epoch) vs fast path (features once), 900 images x 15 epochs", protocol)
    print_table("Data pipeline", [pipeline])
    print_table("Throughput, end to end (backbone trainable), batch 32", models_rows)
    print(f"\nPeak memory {result['peak_memory_mb']} MB; wall time {record['wall_time_s']:.0f} s; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
