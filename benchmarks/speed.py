"""Where the time goes: the paper's way vs the fast path, the data pipeline, and per-model throughput.

    python benchmarks/speed.py [--data-dir DIR] [--out benchmarks/results/speed.json] [--markdown FILE]
    python benchmarks/speed.py --render JSON [--markdown FILE]     # measures nothing

Everything is measured side by side in one run on real images, and printed as a summary and
tables plus a JSON file (with the hardware and versions). The protocol is the paper's,
``cxr_utils.config.PROTOCOL`` (800 training + 100 validation images, 15 epochs, batch 32);
``--epochs`` and ``--image-size`` shrink it for quick checks only. The models are
``cxr_utils.config.REGISTRY``'s, with random backbone weights: the arithmetic is the same as
with ImageNet weights. Explained in book/reproducibility.

1. Paper's way vs fast path, for the protocol with a frozen ResNet50 backbone (each model of
   the registry that has one). The paper's way runs the backbone on every image in every epoch
   inside ``fit``; measuring 15 such epochs would take most of an hour on a CPU, so a measured
   slice (``--slow-images`` images for one epoch, after a warm-up) is extrapolated linearly to
   15 x 900 images, plus the one-off cost its warm-up measured (tracing, first allocations: a
   full run pays it once, and the fast path's time includes its own), and the table says so.
   The fast path is measured in full. (Section 4 measures the paper's way in full, for a GPU.)
2. Data pipeline: decoding every image in every epoch vs reading the on-disk cache; and the
   project's loader (cache -> in-memory arrays) as overhead on a training epoch of the LSTM.
3. Training and inference images/s of each model end to end (backbone trainable), and peak
   memory (host; GPU too where the backend reports it). Batch sizes after the first in
   ``--throughput-batch-sizes`` are measured for ResNet50 only.
4. ``protocol`` (not run by default; minutes on a GPU, hours on a CPU): the whole protocol
   measured in full, each model built, trained (15 epochs on 800 + 100 images) and tested
   (100 images), three ways: as the ``paper`` profile trains them (frozen backbone, fast
   path), the paper's way (``training.train_model(..., fast_path=False)``: the frozen backbone
   inside ``fit`` every epoch), and from scratch. Wall times include compilation (XLA on JAX),
   as a user would see them.

Mixed precision (``--mixed-precision``, default auto: on when Keras sees a GPU) is set before
any model is built, as ``cxr_utils.training.run_experiment`` does. ``--sections`` chooses and
orders the sections; the JSON is rewritten after each one, so a run cut short keeps what it
finished. ``--render`` turns a JSON record into the summary and tables (book/measured/).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below
from rendering import DEFAULT_DATA, REPO_ROOT, protocol_record, render_only, show_tables, write_record  # noqa: E402
from speed_report import GOALS, LSTM, render  # noqa: E402
from timing import add_gpu_memory, log, peak_memory_mb, timed  # noqa: E402

from cxr_utils.config import PROTOCOL, REGISTRY, model_spec  # noqa: E402  (no Keras)

SECTIONS = ("paper_way", "pipeline", "throughput", "protocol")
DEFAULT_SECTIONS = "paper_way,pipeline,throughput"
RESNET50 = model_spec("resnet50")  # the one model measured at every batch size


def build(spec, image_size, **backbone_options):
    """``spec``'s model, seeded, with a random backbone where it has one (the same arithmetic as
    ImageNet weights; trainable unless ``trainable_backbone=False``)."""
    from cxr_utils import runtime

    runtime.set_seed(0)
    options = {"weights": None, **backbone_options} if spec.has_backbone else {}
    return spec.build(input_shape=(image_size, image_size, 3), **options)


def training_config(protocol):
    from cxr_utils import training

    return training.TrainingConfig(epochs=protocol.epochs, batch_size=protocol.batch_size, progress=False)


def protocol_parts(images, labels, protocol=PROTOCOL):
    """(train, val, test, note) for the protocol's split (800/100/100), scaled down when fewer
    images were loaded; the test part reuses the validation images when no others are left
    (the arithmetic of testing is the same)."""
    sizes, n = protocol.split_sizes(), len(images)
    n_val = min(sizes["val"], max(1, round(n * sizes["val"] / (sizes["train"] + sizes["val"]))))
    n_train = min(sizes["train"], n - n_val)
    n_test = min(sizes["test"], n_val)
    train = (images[:n_train], labels[:n_train])
    val = (images[n_train : n_train + n_val], labels[n_train : n_train + n_val])
    if n >= n_train + n_val + n_test:
        start = n_train + n_val
        return train, val, (images[start : start + n_test], labels[start : start + n_test]), "separate"
    return train, val, val, "the validation images again (not enough images loaded)"


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


def paper_way_vs_fast_path(images, labels, protocol, slow_images, image_size):
    from cxr_utils import training

    sizes, epochs, batch = protocol.split_sizes(), protocol.epochs, protocol.batch_size
    protocol_images = sizes["train"] + sizes["val"]
    train, val, _, _ = protocol_parts(images, labels, protocol)
    n_train, n_val = len(train[0]), len(val[0])
    rows = []
    for spec in (spec for spec in REGISTRY.values() if spec.has_backbone):
        # Paper's way: the frozen backbone inside fit, every epoch. Measured on a slice.
        model = build(spec, image_size, trainable_backbone=False)
        seconds, warm_up_s = fit_epoch_timing(model, images[:slow_images], labels[:slow_images], batch, repeats=3)
        per_image = seconds / slow_images
        # A full run of the paper's way pays its one-off costs (tracing the train step, first
        # allocations) once, as the fast path's measured time includes its own: both sides count
        # them. One-off = the warm-up batch less what a steady batch costs.
        one_off_s = max(0.0, warm_up_s - per_image * batch)
        slow_total = one_off_s + per_image * protocol_images * epochs
        # Fast path: features once for the protocol's images, then the head's epochs.
        fresh = build(spec, image_size, trainable_backbone=False)
        result, fast_total = timed(training.train_model, fresh, train, val, training_config(protocol))
        assert result.fast_path
        scale = protocol_images / (n_train + n_val)  # if fewer images were available
        fast_total *= scale
        rows.append({
            "model": spec.id,
            "paper_way_s": round(slow_total, 1),
            "paper_way_measured": (f"1 epoch of {slow_images} images, x{protocol_images * epochs / slow_images:.0f},"
                                   f" + one-off {one_off_s:.1f} s"),
            "fast_path_s": round(fast_total, 1),
            "fast_path_measured": (
                f"in full ({n_train}+{n_val} images, {epochs} epochs)" if scale == 1
                else f"{n_train}+{n_val} images, {epochs} epochs, x{scale:.1f}"
            ),
            "speedup": round(slow_total / fast_total, 1),
            # Where the fast path's time goes: the one backbone pass, then the head's epochs.
            # The head's share bounds the speed-up: (15 x features + head) / (features + head).
            "fast_path_features_s": round(result.features_s * scale, 1),
            "fast_path_head_s": round((result.wall_time_s - result.features_s) * scale, 1),
        })
        log(f"  {spec.id}: paper's way ~{slow_total:.0f} s (extrapolated), fast path {fast_total:.0f} s")
    return rows


def data_pipeline(split, n_images, images_for_epoch, labels_for_epoch, protocol, image_size):
    from cxr_utils import data

    rows = split.iloc[:n_images]
    with tempfile.TemporaryDirectory() as cache:
        _, decode_s = timed(data.load_images, rows, image_size=image_size, cache_dir=None, progress=False)
        data.load_images(rows, image_size=image_size, cache_dir=cache, progress=False)  # fill the cache
        _, cached_s = timed(data.load_images, rows, image_size=image_size, cache_dir=cache, progress=False)
        # Overhead of the project's loader on training: one epoch of the LSTM (the cheapest
        # model, so the overhead share is the largest it gets) on in-memory arrays, vs the
        # cached load that produces those arrays.
        model = build(LSTM, image_size)
        epoch_s = fit_epoch_timing(model, images_for_epoch, labels_for_epoch, protocol.batch_size)[0]
        per_epoch_load = cached_s * len(images_for_epoch) / n_images
    result = {
        "images": n_images,
        "decode_every_epoch_s_per_epoch": round(decode_s, 2),
        "cached_s_per_load": round(cached_s, 2),
        "cache_speedup": round(decode_s / cached_s, 1),
        "protocol_decode_every_epoch_s": round(decode_s * protocol.epochs, 1),
        "protocol_cache_once_s": round(cached_s, 2),
        f"{LSTM.id}_epoch_s": round(epoch_s, 2),
        "loader_overhead_pct_if_reloaded_each_epoch": round(100 * per_epoch_load / epoch_s, 1),
        "loader_overhead_pct_load_once": round(100 * per_epoch_load / (epoch_s * protocol.epochs), 2),
    }
    log(f"  decode {decode_s:.1f} s vs cache {cached_s:.2f} s for {n_images} images")
    return result


def throughput(images, labels, batches, batch_sizes, image_size, on_row=None):
    from cxr_utils import inference

    rows = []
    for index, batch in enumerate(batch_sizes):
        # Every model at the first batch size; further sizes for ResNet50 only.
        for spec in REGISTRY.values() if index == 0 else (RESNET50,):
            model = build(spec, image_size)  # from scratch: the backbone trains
            n = batch * batches
            # More images than were loaded: repeat them (throughput does not depend on which).
            take = np.arange(n) % len(images)
            x, y = (images[:n], labels[:n]) if n <= len(images) else (images[take], labels[take])
            train_s = fit_epoch_timing(model, x, y, batch)[0]
            inference.predict_in_batches(model, x[:batch], batch)  # warm-up
            _, infer_s = timed(inference.predict_in_batches, model, x, batch)
            rows.append(add_gpu_memory({
                "model": spec.id,
                "batch_size": batch,
                "train_images_per_s": round(n / train_s, 1),
                "inference_images_per_s": round(n / infer_s, 1),
                "parameters": int(model.count_params()),
                "peak_memory_mb_so_far": round(peak_memory_mb()),
            }))
            log(f"  {spec.id} batch {batch}: train {n / train_s:.1f} img/s, inference {n / infer_s:.1f} img/s")
            if on_row:
                on_row(rows)
    return rows


PROTOCOL_VARIANTS = {
    "fast_path": "as the paper profile trains: ResNet50 backbones frozen (random weights in place of "
                 "ImageNet's, same arithmetic), features computed once, head trained on them",
    "paper_way": "the same frozen-backbone models with the backbone run inside fit on every image in "
                 "every epoch (the paper's way)",
    "scratch": "every weight trains (WEIGHTS=None)",
}


def paper_protocol(images, labels, protocol, image_size, on_row=None):
    """Section 4: each model built, trained and tested, timed end to end (compilation included).

    A model without a backbone is the same run in every variant: measured once, counted in
    each total."""
    from cxr_utils import inference, training

    train, val, test, test_note = protocol_parts(images, labels, protocol)
    config = training_config(protocol)
    rows = []

    def progress():
        done = {v for v in PROTOCOL_VARIANTS if sum(r["variant"] == v for r in rows) == len(REGISTRY)}
        part = {
            "images": {"train": len(train[0]), "val": len(val[0]), "test": len(test[0]), "test_images": test_note},
            "epochs": protocol.epochs,
            "batch_size": protocol.batch_size,
            "variants": PROTOCOL_VARIANTS,
            "models": rows,
            "total_s": {v: round(sum(r["seconds"] for r in rows if r["variant"] == v), 1)
                        for v in PROTOCOL_VARIANTS if v in done},
        }
        if on_row:
            on_row(part)
        return part

    for variant in PROTOCOL_VARIANTS:
        for spec in REGISTRY.values():
            measured = [r for r in rows if r["model"] == spec.id]
            if measured and not spec.has_backbone:
                rows.append({**measured[0], "variant": variant})
                progress()
                continue
            start = time.perf_counter()
            model = build(spec, image_size, trainable_backbone=variant == "scratch")
            result = training.train_model(model, train, val, config, fast_path=variant != "paper_way")
            inference.predict_probabilities(model, test[0], config.batch_size)
            seconds = time.perf_counter() - start
            rows.append(add_gpu_memory({"variant": variant, "model": spec.id, "fast_path": result.fast_path,
                                        "seconds": round(seconds, 1), "best_epoch": int(result.best_epoch)}))
            log(f"  {variant} {spec.id}: {seconds:.1f} s")
            progress()
    return progress()


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
    sizes = PROTOCOL.split_sizes()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help=f"the real images (default {DEFAULT_DATA})")
    parser.add_argument("--markdown", help="also write the summary and tables as Markdown here (the book "
                        "includes book/measured/speed_cpu.md)")
    parser.add_argument("--render", metavar="JSON", help="only turn an earlier run's JSON into the summary and "
                        "tables (with --markdown, into that file); measures nothing")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "speed.json"),
                        help="the JSON record, rewritten after every section (default benchmarks/results/speed.json)")
    parser.add_argument("--slow-images", type=int, default=160,
                        help="images in the measured slice of the paper's way (default 160)")
    parser.add_argument("--throughput-batches", type=int, default=3, help="batches per throughput epoch (default 3)")
    parser.add_argument("--throughput-batch-sizes", type=parse_sizes, default=[PROTOCOL.batch_size],
                        help="comma list; every model at the first, ResNet50 alone at the others "
                        f"(default {PROTOCOL.batch_size})")
    parser.add_argument("--images", type=int, default=sizes["train"] + sizes["val"],
                        help=f"real images to load (the protocol trains on {sizes['train'] + sizes['val']}; "
                        f"{sum(sizes.values())} gives the protocol section its own {sizes['test']} test images)")
    parser.add_argument("--image-size", type=int, default=PROTOCOL.image_size,
                        help=f"smaller only for quick checks (the paper: {PROTOCOL.image_size})")
    parser.add_argument("--epochs", type=int, default=PROTOCOL.epochs,
                        help=f"the protocol's epochs; fewer only for quick checks (the paper: {PROTOCOL.epochs})")
    parser.add_argument("--mixed-precision", choices=("auto", "on", "off"), default="auto",
                        help="mixed float16; auto: on when Keras sees a GPU (as training does)")
    parser.add_argument("--sections", type=parse_sections, default=parse_sections(DEFAULT_SECTIONS),
                        help=f"comma list, run in this order, of {', '.join(SECTIONS)} (default {DEFAULT_SECTIONS})")
    args = parser.parse_args(argv)
    if args.render:
        return render_only(parser, args.render, args.markdown, render)
    protocol = dataclasses.replace(PROTOCOL, epochs=args.epochs)

    from cxr_utils import data, runtime

    start = time.perf_counter()
    mixed = runtime.use_mixed_precision({"auto": "auto", "on": True, "off": False}[args.mixed_precision])
    manifest = data.add_duplicate_groups(data.build_manifest(args.data_dir, progress=False))
    sample = data.sample_balanced(manifest, n_per_class=min(PROTOCOL.n_per_class, args.images // 2 + 1), seed=0)
    split = sample.sample(frac=1.0, random_state=0).reset_index(drop=True).iloc[: args.images]
    images = data.load_images(split, image_size=args.image_size, progress=False)
    labels = data.labels(split).astype(np.float32)
    log(f"{len(images)} images of {args.image_size}px loaded; Keras {runtime.backend()}, "
        f"mixed precision {'on' if mixed else 'off'}")

    sections = {}

    def save(complete: bool):
        result = {"protocol": protocol_record(protocol), "mixed_precision": mixed, **sections,
                  "peak_memory_mb": round(peak_memory_mb())}
        add_gpu_memory(result, "gpu_peak_memory_mb")
        result["goals"] = GOALS
        extra = {} if complete else {"incomplete": "stopped before every section ran"}
        record = runtime.run_record(vars(args), time.perf_counter() - start, results=result, **extra)
        return write_record(record, args.out)

    def partial(key, value):  # after each measured row, so a run cut short keeps it
        sections[key] = value
        save(complete=False)

    n_train = sizes["train"]
    for number, section in enumerate(args.sections, 1):
        log(f"{number}/{len(args.sections)} {section}")
        if section == "paper_way":
            sections["paper_way_vs_fast_path"] = paper_way_vs_fast_path(
                images, labels, protocol, args.slow_images, args.image_size)
        elif section == "pipeline":
            sections["data_pipeline"] = data_pipeline(
                split, min(len(split), 2 * PROTOCOL.n_per_class), images[:n_train], labels[:n_train], protocol,
                args.image_size)
        elif section == "throughput":
            sections["throughput"] = throughput(images, labels, args.throughput_batches,
                                              args.throughput_batch_sizes, args.image_size,
                                              on_row=lambda rows: partial("throughput", rows))
        elif section == "protocol":
            sections["paper_protocol"] = paper_protocol(images, labels, protocol, args.image_size,
                                                        on_row=lambda part: partial("paper_protocol", part))
        save(complete=False)
    show_tables(render(save(complete=True)), args.out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
