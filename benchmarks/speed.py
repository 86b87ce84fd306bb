"""Where the time goes: the paper's way vs the fast path, the data pipeline, and per-model throughput.

    python benchmarks/speed.py [--data-dir DIR] [--out benchmarks/results/speed.json]

Everything is measured side by side in one run on real images, and printed as a table plus a
JSON file (with the hardware and versions). Random backbone weights are used: the arithmetic
is the same as with ImageNet weights. Explained in book/reproducibility.

1. Paper's way vs fast path, for the paper's protocol (800 training + 100 validation images,
   15 epochs) with a frozen ResNet50 backbone. The paper's way runs the backbone on every image
   in every epoch inside ``fit``; measuring 15 such epochs would take most of an hour on a CPU,
   so a measured slice (``--slow-images`` images for one epoch, after a warm-up) is extrapolated
   linearly to 15 x 900 images, plus the one-off cost its warm-up measured (tracing, first
   allocations: a full run pays it once, and the fast path's time includes its own), and the
   table says so. The fast path is measured in full.
   (Section 4 measures the paper's way in full, for a GPU.)
2. Data pipeline: decoding every image in every epoch vs reading the on-disk cache; and the
   project's loader (cache -> in-memory arrays) as overhead on a training epoch.
3. Training and inference images/s of each model end to end (backbone trainable), and peak
   memory (host; GPU too where the backend reports it). Batch sizes after the first in
   ``--throughput-batch-sizes`` are measured for ResNet50 only.
4. ``protocol`` (not run by default; minutes on a GPU, hours on a CPU): the whole protocol
   measured in full, each of the three models built, trained (15 epochs on 800 + 100 images)
   and tested (100 images), three ways: as the ``paper`` profile trains them (frozen backbone,
   fast path), the paper's way (frozen backbone inside ``fit`` every epoch), and from scratch.
   Wall times include compilation (XLA on JAX), as a user would see them.

Mixed precision (``--mixed-precision``, default auto: on when Keras sees a GPU) is set before
any model is built, as ``cxr_utils.training.run_experiment`` does. ``--sections`` chooses and
orders the sections; the JSON is rewritten after each one, so a run cut short keeps what it
finished. ``--image-size`` and ``--epochs`` shrink the work for quick checks only.
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
SECTIONS = ("paper_way", "pipeline", "throughput", "protocol")
DEFAULT_SECTIONS = "paper_way,pipeline,throughput"


def peak_memory_mb() -> float:
    # ru_maxrss is in KiB on Linux: the process's high-water mark so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def add_gpu_memory(row: dict, key: str = "gpu_peak_memory_mb_so_far") -> dict:
    from cxr_utils import runtime

    peak = runtime.gpu_peak_memory_mb()
    if peak is not None:  # only where there is a GPU: CPU results keep their columns
        row[key] = round(peak)
    return row


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def protocol_parts(images, labels):
    """(train, val, test) pairs for the protocol (800/100/100), scaled down when fewer images
    were loaded; the test part reuses the validation images when no others are left (the
    arithmetic of testing is the same)."""
    n = len(images)
    n_val = min(PROTOCOL["val"], max(1, n // 9))
    n_train = min(PROTOCOL["train"], n - n_val)
    train = (images[:n_train], labels[:n_train])
    val = (images[n_train : n_train + n_val], labels[n_train : n_train + n_val])
    if n >= n_train + 2 * n_val:
        test = (images[n_train + n_val : n_train + 2 * n_val], labels[n_train + n_val : n_train + 2 * n_val])
        test_note = "separate"
    else:
        test, test_note = val, "the validation images again (not enough images loaded)"
    return train, val, test, test_note


def fit_epoch_timing(model, images, labels, batch_size, repeats=2):
    """(fastest of ``repeats`` epochs of ``fit``, seconds of the one-batch warm-up before them).

    Graph tracing is not training time, and the first full epoch after it still pays one-off
    costs (memory pools, kernel selection) that made a single timed epoch vary by 2x here.
    """
    from cxr_utils import training

    training.compile_for_training(model)
    _, warm_up_s = timed(model.fit, images[:batch_size], labels[:batch_size], batch_size=batch_size,
                         epochs=1, verbose=0)
    epoch_s = min(
        timed(model.fit, images, labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=True)[1]
        for _ in range(repeats)
    )
    return epoch_s, warm_up_s


def fit_epoch_seconds(model, images, labels, batch_size, repeats=2):
    """The fastest of ``repeats`` epochs of ``fit``, after a one-batch warm-up."""
    return fit_epoch_timing(model, images, labels, batch_size, repeats)[0]


def paper_way_vs_fast_path(images, labels, slow_images, log, image_size=224):
    from cxr_utils import models, runtime, training

    protocol_images = PROTOCOL["train"] + PROTOCOL["val"]
    shape = (image_size, image_size, 3)
    train, val, _, _ = protocol_parts(images, labels)
    n_train = len(train[0])
    rows = []
    for name in ("resnet50", "resnet50_lstm"):
        runtime.set_seed(0)
        model = models.build_model(name, weights=None, trainable_backbone=False, input_shape=shape)
        # Paper's way: the frozen backbone inside fit, every epoch. Measured on a slice.
        seconds, warm_up_s = fit_epoch_timing(model, images[:slow_images], labels[:slow_images],
                                              PROTOCOL["batch_size"], repeats=3)
        per_image = seconds / slow_images
        # A full run of the paper's way pays its one-off costs (tracing the train step, first
        # allocations) once, as the fast path's measured time includes its own: both sides count
        # them. One-off = the warm-up batch less what a steady batch costs.
        one_off_s = max(0.0, warm_up_s - per_image * PROTOCOL["batch_size"])
        slow_total = one_off_s + per_image * protocol_images * PROTOCOL["epochs"]
        # Fast path: features once for the protocol's 900 images, then 15 epochs of the head.
        runtime.set_seed(0)
        fresh = models.build_model(name, weights=None, trainable_backbone=False, input_shape=shape)
        config = training.TrainingConfig(epochs=PROTOCOL["epochs"], batch_size=PROTOCOL["batch_size"], progress=False)
        result, fast_total = timed(training.train_model, fresh, train, val, config)
        assert result.fast_path
        scale = protocol_images / (n_train + len(val[0]))  # if fewer images were available
        fast_total *= scale
        rows.append({
            "model": name,
            "paper_way_s": round(slow_total, 1),
            "paper_way_measured": (f"1 epoch of {slow_images} images, x{protocol_images * PROTOCOL['epochs'] / slow_images:.0f},"
                                   f" + one-off {one_off_s:.1f} s"),
            "fast_path_s": round(fast_total, 1),
            "fast_path_measured": (
                f"in full ({n_train}+{len(val[0])} images, {PROTOCOL['epochs']} epochs)" if scale == 1
                else f"{n_train}+{len(val[0])} images, {PROTOCOL['epochs']} epochs, x{scale:.1f}"
            ),
            "speedup": round(slow_total / fast_total, 1),
            # Where the fast path's time goes: the one backbone pass, then the head's epochs.
            # The head's share bounds the speed-up: (15 x features + head) / (features + head).
            "fast_path_features_s": round(result.features_s * scale, 1),
            "fast_path_head_s": round((result.wall_time_s - result.features_s) * scale, 1),
        })
        log(f"  {name}: paper's way ~{slow_total:.0f} s (extrapolated), fast path {fast_total:.0f} s")
    return rows


def data_pipeline(split, n_images, images_for_epoch, labels_for_epoch, log, image_size=224):
    from cxr_utils import data, models, runtime

    rows = split.iloc[:n_images]
    with tempfile.TemporaryDirectory() as cache:
        _, decode_s = timed(data.load_images, rows, image_size=image_size, cache_dir=None, progress=False)
        data.load_images(rows, image_size=image_size, cache_dir=cache, progress=False)  # fill the cache
        _, cached_s = timed(data.load_images, rows, image_size=image_size, cache_dir=cache, progress=False)
        # Overhead of the project's loader on training: one epoch of the LSTM (the cheapest
        # model, so the overhead share is the largest it gets) on in-memory arrays, vs the
        # cached load that produces those arrays.
        runtime.set_seed(0)
        model = models.build_lstm(input_shape=(image_size, image_size, 3))
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


def throughput(images, labels, batches, log, batch_sizes=(32,), image_size=224, on_row=None):
    from cxr_utils import models, runtime, training

    shape = (image_size, image_size, 3)
    rows = []
    for index, batch in enumerate(batch_sizes):
        # Every model at the first batch size; further sizes for ResNet50 only.
        for name in models.MODEL_NAMES if index == 0 else ("resnet50",):
            runtime.set_seed(0)
            options = {"input_shape": shape} if name == "lstm" else {"weights": None, "input_shape": shape}
            model = models.build_model(name, **options)  # from scratch: the backbone trains
            n = batch * batches
            # More images than were loaded: repeat them (throughput does not depend on which).
            take = np.arange(n) % len(images)
            x, y = (images[:n], labels[:n]) if n <= len(images) else (images[take], labels[take])
            train_s = fit_epoch_seconds(model, x, y, batch)
            training.predict_in_batches(model, x[:batch], batch)  # warm-up
            _, infer_s = timed(training.predict_in_batches, model, x, batch)
            rows.append(add_gpu_memory({
                "model": name,
                "batch_size": batch,
                "train_images_per_s": round(n / train_s, 1),
                "inference_images_per_s": round(n / infer_s, 1),
                "parameters": int(model.count_params()),
                "peak_memory_mb_so_far": round(peak_memory_mb()),
            }))
            log(f"  {name} batch {batch}: train {n / train_s:.1f} img/s, inference {n / infer_s:.1f} img/s")
            if on_row:
                on_row(rows)
    return rows


def fit_paper_way(model, train, val, config):
    """The paper's way: the whole model inside ``fit`` every epoch (a frozen backbone too), best
    epoch kept, as tests/test_training.py runs it against the fast path."""
    from cxr_utils import runtime, training

    runtime.set_seed(config.seed)
    training.compile_for_training(model, config.learning_rate)
    keep_best = training.KeepBestEpoch()
    model.fit(train[0], train[1], validation_data=val, epochs=config.epochs, batch_size=config.batch_size,
              shuffle=True, verbose=0, callbacks=[keep_best])
    return keep_best.best_epoch


PROTOCOL_VARIANTS = {
    "fast_path": "as the paper profile trains: ResNet50 backbones frozen (random weights in place of "
                 "ImageNet's, same arithmetic), features computed once, head trained on them",
    "paper_way": "the same frozen-backbone models with the backbone run inside fit on every image in "
                 "every epoch (the paper's way)",
    "scratch": "every weight trains (WEIGHTS=None)",
}


def paper_protocol(images, labels, log, image_size=224, on_row=None):
    """Section 4: each model built, trained and tested, timed end to end (compilation included).

    The LSTM has no backbone, so it is the same run in every variant: measured once, counted in
    each total."""
    from cxr_utils import models, runtime, training

    shape = (image_size, image_size, 3)
    train, val, test, test_note = protocol_parts(images, labels)
    config = training.TrainingConfig(epochs=PROTOCOL["epochs"], batch_size=PROTOCOL["batch_size"], progress=False)
    rows = []

    def summary():
        done = {v for v in PROTOCOL_VARIANTS if sum(r["variant"] == v for r in rows) == len(models.MODEL_NAMES)}
        return {
            "images": {"train": len(train[0]), "val": len(val[0]), "test": len(test[0]), "test_images": test_note},
            "epochs": PROTOCOL["epochs"],
            "batch_size": PROTOCOL["batch_size"],
            "variants": PROTOCOL_VARIANTS,
            "models": rows,
            "total_s": {v: round(sum(r["seconds"] for r in rows if r["variant"] == v), 1)
                        for v in PROTOCOL_VARIANTS if v in done},
        }

    for variant in PROTOCOL_VARIANTS:
        for name in models.MODEL_NAMES:
            measured = [r for r in rows if r["model"] == "lstm"]
            if name == "lstm" and measured:
                rows.append({**measured[0], "variant": variant})
                if on_row:
                    on_row(summary())
                continue
            runtime.set_seed(0)
            start = time.perf_counter()
            options = ({"input_shape": shape} if name == "lstm"
                       else {"weights": None, "trainable_backbone": variant == "scratch", "input_shape": shape})
            model = models.build_model(name, **options)
            if variant == "paper_way" and name != "lstm":
                best_epoch, fast_path = fit_paper_way(model, train, val, config), False
            else:
                result = training.train_model(model, train, val, config)
                best_epoch, fast_path = result.best_epoch, result.fast_path
            training.predict_probabilities(model, test[0], config.batch_size)
            seconds = time.perf_counter() - start
            rows.append(add_gpu_memory({"variant": variant, "model": name, "fast_path": fast_path,
                                        "seconds": round(seconds, 1), "best_epoch": int(best_epoch)}))
            log(f"  {variant} {name}: {seconds:.1f} s")
            if on_row:
                on_row(summary())
    return summary()


def markdown_table(title, rows) -> str:
    """A titled pipe table: readable in a terminal, rendered as a table in the book."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    widths = [max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys]
    lines = [f"**{title}**", "", "| " + " | ".join(k.ljust(w) for k, w in zip(keys, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(k, "")).ljust(w) for k, w in zip(keys, widths)) + " |")
    return "\n".join(lines) + "\n"


def show_tables(text: str, json_path, markdown_path=None) -> None:
    """Print a benchmark's tables and where its JSON is; write them as Markdown if asked."""
    from cxr_utils import runtime

    print(text)
    print(f"JSON: {json_path}")
    if markdown_path:
        runtime.write_text(text, markdown_path)


def render(record: dict) -> str:
    """The benchmark's tables as Markdown, from its JSON record (``--render`` redoes this)."""
    result, hardware, versions = record["results"], record["hardware"], record["versions"]
    mixed = result.get("mixed_precision")
    parts = [
        f"Measured {record['created_utc']} on {hardware['cpu']} ({hardware['cpu_count']} cores), "
        f"{hardware['accelerator']}; Keras {versions.get('keras')} on {hardware['keras_backend']}"
        f"{', mixed float16' if mixed else ''}; wall time {record['wall_time_s']:.0f} s.\n"
    ]
    epochs = result.get("protocol", PROTOCOL)["epochs"]
    if "paper_way_vs_fast_path" in result:
        parts.append(markdown_table(
            f"Paper's way (frozen backbone in fit, every epoch) vs fast path (features once), "
            f"900 images x {epochs} epochs", result["paper_way_vs_fast_path"]))
    if "data_pipeline" in result:
        parts.append(markdown_table("Data pipeline", [result["data_pipeline"]]))
    if "throughput" in result:
        parts.append(markdown_table("Throughput, end to end (backbone trainable)", result["throughput"]))
    if "paper_protocol" in result:
        protocol = result["paper_protocol"]
        totals = ", ".join(f"{k} {v} s" for k, v in protocol["total_s"].items())
        parts.append(markdown_table(
            f"The whole protocol, measured in full (train {protocol['images']['train']}, val "
            f"{protocol['images']['val']}, test {protocol['images']['test']}, {protocol['epochs']} epochs, "
            f"compilation included); totals: {totals}", protocol["models"]))
    gpu = f", GPU peak {result['gpu_peak_memory_mb']} MB" if "gpu_peak_memory_mb" in result else ""
    parts.append(f"Peak host memory {result['peak_memory_mb']} MB{gpu}.\n")
    return "\n".join(parts)


def parse_sections(text: str) -> list[str]:
    sections = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise argparse.ArgumentTypeError(f"sections must be a comma list of {', '.join(SECTIONS)}")
    return sections


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be a comma list of positive integers, e.g. 32,128")
    return sizes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--markdown", help="also write the tables as Markdown here (the book includes "
                        "book/measured/speed_cpu.md)")
    parser.add_argument("--render", metavar="JSON", help="only turn an earlier run's JSON into the tables "
                        "(with --markdown, into that file); measures nothing")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "speed.json"))
    parser.add_argument("--slow-images", type=int, default=160, help="images in the measured slice of the paper's way")
    parser.add_argument("--throughput-batches", type=int, default=3)
    parser.add_argument("--throughput-batch-sizes", type=parse_sizes, default=[PROTOCOL["batch_size"]],
                        help="comma list; every model at the first, ResNet50 alone at the others (default 32)")
    parser.add_argument("--images", type=int, default=900, help="real images to load (the protocol uses 900; "
                        "1000 gives the protocol section its own 100 test images)")
    parser.add_argument("--image-size", type=int, default=224, help="smaller only for quick checks (the paper: 224)")
    parser.add_argument("--epochs", type=int, default=PROTOCOL["epochs"], help="protocol epochs (the paper: 15)")
    parser.add_argument("--mixed-precision", choices=("auto", "on", "off"), default="auto",
                        help="mixed float16; auto: on when Keras sees a GPU (as training does)")
    parser.add_argument("--sections", type=parse_sections, default=parse_sections(DEFAULT_SECTIONS),
                        help=f"comma list, run in this order, of {', '.join(SECTIONS)} (default {DEFAULT_SECTIONS})")
    args = parser.parse_args(argv)
    if args.render:
        try:
            record = json.loads(Path(args.render).read_text())
            text = render(record)
        except (OSError, ValueError, KeyError) as error:
            parser.error(f"{args.render} is not a benchmark JSON written by this script ({error!r})")
        print(text)
        if args.markdown:
            from cxr_utils import runtime

            runtime.write_text(text, args.markdown)
        return 0
    PROTOCOL["epochs"] = args.epochs

    from cxr_utils import data, runtime

    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    start = time.perf_counter()
    mixed = runtime.use_mixed_precision({"auto": "auto", "on": True, "off": False}[args.mixed_precision])
    manifest = data.add_duplicate_groups(data.build_manifest(args.data_dir, progress=False))
    sample = data.sample_balanced(manifest, n_per_class=min(500, args.images // 2 + 1), seed=0)
    split = sample.sample(frac=1.0, random_state=0).reset_index(drop=True).iloc[: args.images]
    images = data.load_images(split, image_size=args.image_size, progress=False)
    labels = data.labels(split).astype(np.float32)
    log(f"{len(images)} images of {args.image_size}px loaded; Keras {runtime.backend()}, "
        f"mixed precision {'on' if mixed else 'off'}")

    sections = {}

    def save(complete: bool):
        result = {"protocol": PROTOCOL, "mixed_precision": mixed, **sections,
                  "peak_memory_mb": round(peak_memory_mb())}
        add_gpu_memory(result, "gpu_peak_memory_mb")
        result["goals"] = {"fast_path_speedup_at_least": 10, "loader_overhead_pct_at_most": 5}
        extra = {} if complete else {"incomplete": "stopped before every section ran"}
        record = runtime.run_record(vars(args), time.perf_counter() - start, results=result, **extra)
        runtime.write_json(record, args.out)
        return record, result

    def partial(key, value):  # after each measured row, so a run cut short keeps it
        sections[key] = value
        save(complete=False)

    for number, section in enumerate(args.sections, 1):
        log(f"{number}/{len(args.sections)} {section}")
        if section == "paper_way":
            sections["paper_way_vs_fast_path"] = paper_way_vs_fast_path(
                images, labels, args.slow_images, log, image_size=args.image_size)
        elif section == "pipeline":
            sections["data_pipeline"] = data_pipeline(
                split, min(len(split), 1000), images[:PROTOCOL["train"]], labels[:PROTOCOL["train"]], log,
                image_size=args.image_size)
        elif section == "throughput":
            sections["throughput"] = throughput(images, labels, args.throughput_batches, log,
                                              args.throughput_batch_sizes, args.image_size,
                                              on_row=lambda rows: partial("throughput", rows))
        elif section == "protocol":
            sections["paper_protocol"] = paper_protocol(images, labels, log, args.image_size,
                                                        on_row=lambda part: partial("paper_protocol", part))
        save(complete=False)
    record, result = save(complete=True)

    show_tables(render(record), args.out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
