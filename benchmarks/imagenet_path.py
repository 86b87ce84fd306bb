"""The paper profile's series (`make run`) with the shared feature cache vs each chapter's own pass.

    python benchmarks/imagenet_path.py [--data-dir DIR] [--out JSON] [--markdown FILE]
    python benchmarks/imagenet_path.py --n-per-class 10 --image-size 32 --epochs 1    # a smoke test
    python benchmarks/imagenet_path.py --render JSON [--markdown FILE]                # measures nothing

What `make run` executes after its dataset check: ``run.execute_series`` with
``run.profile_parameters("paper", data_dir=...)``, the paper's protocol with ImageNet weights
(500 + 500 images sampled, 15 epochs, 224 px, the extended test set of every image left), on the
2,000 real images of ../shared/data/covid19-radiography-224 (so the extended set holds about
1,000). Two ways, side by side in one run, each in its own process with its own fresh cache and
results folders (temporary):

- ``shared``: the series as `make run` runs it. Each image's frozen-ResNet50 feature map is
  computed once (cxr_utils.features) and read by every later chapter: chapter 5 reuses
  chapter 3's, chapter 6 scores the extended set with one pass for both ResNet50 models.
- ``per_chapter``: the same call, with the feature cache (``cache_dir/features``) emptied as each
  notebook starts, so every chapter computes its own backbone features (the decoded-image cache
  is kept in both ways: only the sharing of feature maps differs).

ImageNet weights without a network: Keras' download of
``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`` is answered, in every kernel papermill
starts, by a stand-in file (``cxr_utils.standin_weights.make_standin``: a seeded ResNet50 saved
in that file's format; ``--weights-file`` names another, e.g. the real one), through the
``sitecustomize.py`` of ``standin_weights.write_site`` on the kernels' PYTHONPATH, the route
tests/test_imagenet_standin.py uses too; connections leaving the machine are refused and
counted. So the times exclude downloads; the stand-in's arithmetic is ImageNet's (same layers
and shapes), its accuracy is not.

Reported: each way's wall time (the ``execute_series`` call, model card included) and the
per-notebook times and peak memory of its run record, the ratio, the largest kernel's peak memory
(``ru_maxrss`` of the worker's reaped children: papermill's kernels) and the worker's own (the
runner's part, Keras loaded), and the goals: the shared series in at most
``GOALS["shared_series_s_at_most"]`` s on a 2-core CPU, and under
``GOALS["series_peak_memory_mb_below"]`` MB of host memory (runner plus largest kernel).
``--n-per-class``, ``--image-size`` and ``--epochs`` scale the run down for smoke tests (the
goals are then not judged). ``--render`` turns a JSON record into the summary and tables (book/measured/).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below
from rendering import DEFAULT_DATA, add_record_options, render_only, show_tables, write_record  # noqa: E402
from rendering import markdown_table, measured_line, summary  # noqa: E402  (the tables)
from timing import log, peak_memory_mb  # noqa: E402

from cxr_utils import standin_weights  # noqa: E402  (imports nothing heavy; routes nothing by itself)
from cxr_utils.config import PROTOCOL  # noqa: E402  (no Keras)

MODES = {
    "shared": "as `make run` runs it: each image's backbone features computed once, read by every later chapter",
    "per_chapter": "the feature cache emptied as each notebook starts: each chapter computes its own backbone "
                   "features (decoded images cached in both ways)",
}
GOALS = {"shared_series_s_at_most": 180, "series_peak_memory_mb_below": 4000}
FEATURES_FOLDER = "features"  # cxr_utils.features.FEATURES_FOLDER (not imported: that pulls in pandas)
# execute_series announces each notebook as "[index/count] name ..." before starting it.
ANNOUNCE = re.compile(r"^\[(\d+)/(\d+)\] (\S+) \.\.\.$")

# -- one way of running the series, in its own process -------------------------------------------


def series_worker(spec: dict, execute=None) -> dict:
    """Run the series one way (``spec["mode"]``) and return what was measured. Runs in a worker
    process (``--worker``), so that the reaped kernels' peak memory is this mode's alone.
    ``execute``: ``run.execute_series`` (the tests pass a stand-in)."""
    from cxr_utils import run

    execute = execute or run.execute_series
    mode, parameters = spec["mode"], spec["parameters"]
    # The kernels papermill starts inherit this environment: the route, not the worker itself.
    os.environ.update(standin_weights.route_environment(spec["site"], spec["route_log"], spec["weights_file"]))
    features = Path(parameters["cache_dir"]) / FEATURES_FOLDER
    expected = spec.get("expected_s") or {}
    announced = []

    def progress(message):
        match = ANNOUNCE.match(str(message))
        if match:
            name = match.group(3)
            announced.append(name)
            if mode == "per_chapter":
                shutil.rmtree(features, ignore_errors=True)  # this chapter computes its own features
            left = sum(seconds for notebook, seconds in expected.items() if notebook not in announced[:-1])
            eta = f"; about {left:.0f} s left (from the {spec['expected_from']} run)" if expected else ""
            message = f"{message} ({time.perf_counter() - start:.0f} s in{eta})"
        log(f"  {mode}: {str(message).strip()}")

    # What `python -m cxr_utils.run` imports before its series starts (Keras and TensorFlow
    # among them): not part of the series' time.
    import papermill  # noqa: F401

    from cxr_utils import runtime  # noqa: F401

    status, error = "ok", None
    record = {}
    start = time.perf_counter()
    try:
        record = execute(parameters, progress=False, log=progress)
    except Exception as failure:  # noqa: BLE001  (recorded, and the other way still runs)
        status, error = "failed", f"{type(failure).__name__}: {failure}"
        run_json = Path(parameters["results_dir"]) / "run.json"
        record = json.loads(run_json.read_text()) if run_json.is_file() else {}
    series_s = time.perf_counter() - start
    notebooks = record.get("notebooks", {})
    if status == "ok" and mode == "per_chapter" and announced != list(notebooks):
        status, error = "failed", ("execute_series did not announce each notebook as it started "
                                   f"({announced} vs {list(notebooks)}): the feature cache was not emptied per chapter")
    result = {
        "mode": mode,
        "status": status,
        "series_s": round(series_s, 1),
        "run_record_s": record.get("wall_time_s"),
        "notebooks_s": {name: entry.get("wall_time_s") for name, entry in notebooks.items()},
        # Each notebook's kernel as the run record sampled it (cxr_utils.run.KernelMemory).
        "notebooks_peak_mb": {name: entry.get("peak_memory_mb") for name, entry in notebooks.items()},
        "kernel_peak_memory_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        # This process is `python -m cxr_utils.run`'s part: it holds Keras while the kernels run.
        "runner_peak_memory_mb": round(peak_memory_mb()),
        **standin_weights.route_counts(spec["route_log"]),
    }
    try:
        result.update(extended_size(parameters["results_dir"]))
    except Exception as failure:  # noqa: BLE001  (a failed series may leave no readable tables)
        log(f"  {mode}: extended set not counted ({failure})")
    if error:
        result["error"] = error
    return result


def extended_size(results_dir) -> dict:
    """How many images the run sampled, and how many its extended test set scored."""
    from cxr_utils import data, extended_set

    results = Path(results_dir)
    if not (results / "manifest.csv").is_file() or not (results / "split.csv").is_file():
        return {}
    manifest, split = data.read_manifest(results / "manifest.csv"), data.read_manifest(results / "split.csv")
    rows = extended_set.extended_test_set(manifest, split)
    return {"sampled_images": int(len(split)), "extended_images": int(len(rows)),
            "extended_excluded_as_duplicates": int(rows.attrs["excluded_as_duplicates"])}


def run_mode(spec: dict) -> dict:
    """``series_worker(spec)`` in a fresh process; its progress goes to this one's stderr."""
    spec_path = Path(spec["work"]) / f"{spec['mode']}.spec.json"
    out_path = Path(spec["work"]) / f"{spec['mode']}.result.json"
    spec_path.write_text(json.dumps(spec))
    completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path),
                                "--out", str(out_path)], stdout=2)  # its stdout to stderr: ours holds the tables
    if completed.returncode != 0 or not out_path.is_file():
        return {"mode": spec["mode"], "status": "failed",
                "error": f"the worker process exited with status {completed.returncode}"}
    return json.loads(out_path.read_text())


# -- the record and its rendering -----------------------------------------------------------------


def is_paper_scale(settings: dict) -> bool:
    return (settings["n_per_class"], settings["epochs"], settings["image_size"]) == (
        PROTOCOL.n_per_class, PROTOCOL.epochs, PROTOCOL.image_size)


def combine(modes: dict, settings: dict, data: dict, weights_source: str) -> dict:
    """The results of a run: each way, per notebook side by side, the ratio and the goal."""
    results = {"settings": settings, "paper_scale": is_paper_scale(settings), "data": data,
               "weights_source": weights_source, "modes_explained": {m: MODES[m] for m in modes},
               "modes": modes, "goals": GOALS}
    names = list(dict.fromkeys(n for mode in modes.values() for n in mode.get("notebooks_s", {})))
    results["notebooks"] = [{"notebook": name, **{f"{m}_s": modes[m].get("notebooks_s", {}).get(name) for m in modes}}
                            for name in names]
    for row in results["notebooks"]:
        row.update({f"{m}_peak_mb": modes[m]["notebooks_peak_mb"].get(row["notebook"]) for m in modes
                    if modes[m].get("notebooks_peak_mb", {}).get(row["notebook"]) is not None})
    if all(modes.get(m, {}).get("status") == "ok" for m in MODES) and modes["shared"]["series_s"] > 0:
        shared, own = modes["shared"]["series_s"], modes["per_chapter"]["series_s"]
        results["per_chapter_vs_shared"] = round(own / shared, 2)
        for row in results["notebooks"]:
            if row.get("shared_s") is not None and row.get("per_chapter_s") is not None:
                row["difference_s"] = round(row["per_chapter_s"] - row["shared_s"], 1)
    return results


def headlines(results: dict) -> list[str]:
    """The figures the prose cites, from the results alone."""
    settings, modes, data = results["settings"], results["modes"], results.get("data", {})
    goal = results.get("goals", GOALS)["shared_series_s_at_most"]
    shared = modes.get("shared", {})
    sampled = shared.get("sampled_images", 2 * settings["n_per_class"])
    extended = shared.get("extended_images")
    scope = (f"{sampled} sampled + {extended} extended-test images of a {data.get('images', '?')}-image folder"
             if extended is not None else f"{sampled} sampled images of a {data.get('images', '?')}-image folder")
    items = []
    failed = [f"{mode} ({entry.get('error', 'failed')})" for mode, entry in modes.items()
              if entry.get("status") != "ok"]
    if failed:
        items.append(f"**Failed**: {'; '.join(failed)}.")
    if shared.get("status") == "ok":
        if results.get("paper_scale"):
            verdict = "met" if shared["series_s"] <= goal else "missed"
            judged = f"goal: at most {goal} s on a 2-core CPU, {verdict}"
        else:
            epochs = f"{settings['epochs']} epoch{'s' if settings['epochs'] != 1 else ''}"
            judged = (f"scaled down to n_per_class={settings['n_per_class']}, {settings['image_size']} px, "
                      f"{epochs}: the goal of at most {goal} s is for the paper's settings")
        text = (f"**The paper profile's series** (`make run`'s {len(shared.get('notebooks_s', {}))} notebooks; "
                f"ImageNet weights: {results['weights_source']}; {scope}): {shared['series_s']} s with the "
                f"shared feature cache ({judged})")
        own = modes.get("per_chapter", {})
        if "per_chapter_vs_shared" in results:
            text += (f"; {own['series_s']} s with each chapter computing its own backbone features: "
                     f"{results['per_chapter_vs_shared']}x the shared cache's time")
        items.append(text + ".")
        rows = [r for r in results["notebooks"] if "difference_s" in r]
        if rows:
            biggest = max(rows, key=lambda r: r["difference_s"])
            items.append(f"**Where the difference is**: {biggest['notebook']} takes {biggest['per_chapter_s']} s "
                         f"with its own backbone pass vs {biggest['shared_s']} s with the shared cache; every "
                         "notebook's time is in the table below.")
            if results.get("paper_scale") and shared["series_s"] > goal and extended is not None:
                items.append(unshared_passes(biggest, sampled, extended, goal))
    memory = [f"{mode} {entry['kernel_peak_memory_mb']} MB" for mode, entry in modes.items()
              if "kernel_peak_memory_mb" in entry]
    if memory:
        items.append(f"**Largest kernel's peak memory**: {', '.join(memory)}.")
    if "runner_peak_memory_mb" in shared:
        limit = results.get("goals", GOALS)["series_peak_memory_mb_below"]
        # The kernels run one after another beside the runner: the series never holds more than the
        # runner's peak plus the largest kernel's (an upper bound: the two peaks need not coincide).
        whole = shared["runner_peak_memory_mb"] + shared["kernel_peak_memory_mb"]
        judged = (f"goal: under {limit} MB, {'met' if whole < limit else 'missed'}" if results.get("paper_scale")
                  else f"the goal of under {limit} MB is for the paper's settings")
        largest = max(((n, mb) for n, mb in shared.get("notebooks_peak_mb", {}).items() if mb is not None),
                      key=lambda item: item[1], default=None)
        where = f"; the largest notebook, {largest[0]}, {largest[1]} MB" if largest else ""
        items.append(f"**The whole series' host memory** (shared): at most {whole} MB, the runner's peak "
                     f"({shared['runner_peak_memory_mb']} MB) plus the largest kernel's ({judged}){where}.")
    routes = [entry for entry in modes.values() if "downloads_routed" in entry]
    if routes:
        items.append(
            "**Offline**: the kernels asked Keras for the ImageNet file "
            + " and ".join(f"{e['downloads_routed']} times ({e['mode']})" for e in routes)
            + ", each answered by the stand-in; other downloads refused: "
            + str(sum(e["downloads_refused"] for e in routes)) + "; connections off the machine refused: "
            + str(sum(e["network_refused"] for e in routes)) + ".")
    return items


def unshared_passes(own_pass: dict, sampled: int, extended: int, goal: float) -> str:
    """Why the time goal is out of reach on this machine, from the run's own figures: the backbone
    passes no cache can share (each image's features are computed at least once), timed at the
    rate of the chapter whose own pass is the largest difference between the two ways."""
    per_image = own_pass["difference_s"] / sampled
    # Chapter 3's sample, chapter 6's extended set, chapter 8's sample with the lungs blanked.
    images = 2 * sampled + extended
    return (f"**The backbone passes sharing cannot remove**: {own_pass['notebook']}'s own pass over the "
            f"{sampled} sampled images took about {own_pass['difference_s']} s (its difference above, "
            f"{per_image * 1000:.0f} ms an image); every series computes features at least once for the "
            f"sample (chapter 3), the extended test set (chapter 6) and the sample with the lungs blanked "
            f"(chapter 8), {images} images: about {per_image * images:.0f} s at that rate, against the goal "
            f"of {goal} s for the whole series.")


def render(record: dict) -> str:
    """The benchmark's summary and tables as Markdown, from its JSON record (``--render``)."""
    results = record["results"]
    settings, modes = results["settings"], results["modes"]
    parts = [measured_line(record)]
    items = headlines(results)
    if "incomplete" in record:
        items.insert(0, f"**Incomplete run**: {record['incomplete']}.")
    items.append("**The two ways**: " + "; ".join(f"`{mode}`, {text}" for mode, text in
                                                 results.get("modes_explained", MODES).items()) + ".")
    parts.append(summary(items))
    setting_text = ", ".join(f"{k}={v}" for k, v in settings.items())
    parts.append(markdown_table(
        f"Each way's series (profile settings: {setting_text})",
        [{"mode": mode, **{k: v for k, v in entry.items()
                           if k not in ("mode", "notebooks_s", "notebooks_peak_mb", "error")}}
         for mode, entry in modes.items()]))
    if results["notebooks"]:
        parts.append(markdown_table("Per notebook (seconds, and peak memory in MB, from each run record)",
                                    results["notebooks"]))
    parts.append(f"Peak host memory of the benchmark's own process {results['peak_memory_mb']} MB "
                 "(the kernels' is in the first table).\n")
    return "\n".join(parts)


# -- the command ------------------------------------------------------------------------------------


def count_images(data_dir) -> dict:
    """Images per class of the dataset folder (read once: the kernels then find them in the
    page cache in both ways alike)."""
    from cxr_utils import data

    layout = data.find_dataset(data_dir)
    counts = {}
    for name, folder in layout.class_dirs.items():
        files = data.layout.image_files(folder)
        for path in files:
            path.read_bytes()
        counts[name] = len(files)
    return {"images": sum(counts.values()), "per_class": counts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help=f"the real images (default {DEFAULT_DATA})")
    add_record_options(parser, "imagenet_path", ', rewritten after each way')
    parser.add_argument("--n-per-class", type=int, help=f"images sampled per class (the paper: {PROTOCOL.n_per_class})")
    parser.add_argument("--image-size", type=int,
                        help=f"smaller only for smoke tests (the paper: {PROTOCOL.image_size})")
    parser.add_argument("--epochs", type=int, help=f"fewer only for smoke tests (the paper: {PROTOCOL.epochs})")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma list, run in this order, of {', '.join(MODES)} (default: both, shared first)")
    parser.add_argument("--weights-file", help="what Keras' ImageNet download is answered with (default: a "
                        "stand-in made here, a seeded ResNet50 in the real file's format)")
    parser.add_argument("--work-dir", help="keep the results and caches here (default: a temporary folder, removed)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.render:
        return render_only(parser, args.render, args.markdown, render)
    if args.worker:
        result = series_worker(json.loads(Path(args.worker).read_text()))
        Path(args.out).write_text(json.dumps(result, indent=1))
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        parser.error(f"--modes must be a comma list of {', '.join(MODES)}")
    if not Path(args.data_dir).is_dir():
        parser.error(f"no dataset folder at {args.data_dir}")

    from cxr_utils import run, runtime

    start = time.perf_counter()
    overrides = {k: v for k, v in (("n_per_class", args.n_per_class), ("image_size", args.image_size),
                                   ("epochs", args.epochs)) if v is not None}
    data = count_images(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="imagenet-path-") as temporary:
        work = Path(args.work_dir or temporary).resolve()
        work.mkdir(parents=True, exist_ok=True)
        if args.weights_file:
            weights_file = Path(args.weights_file).resolve()
            weights_source = f"the file {weights_file.name}"
        else:
            log("making the ImageNet stand-in (a seeded ResNet50 in the real file's format) ...")
            weights_file = standin_weights.make_standin(work / "standin")
            weights_source = "a stand-in file, a seeded ResNet50 (ImageNet's arithmetic, not its values)"
        site = standin_weights.write_site(work / "site")
        settings = None
        results_by_mode = {}

        def save(complete: bool):
            results = combine(results_by_mode, settings, data, weights_source)
            results["peak_memory_mb"] = round(peak_memory_mb())
            extra = {} if complete else {"incomplete": f"{len(results_by_mode)} of {len(modes)} ways measured"}
            record = runtime.run_record(vars(args), time.perf_counter() - start, results=results, **extra)
            return write_record(record, args.out)

        for number, mode in enumerate(modes, 1):
            folder = work / mode
            shutil.rmtree(folder, ignore_errors=True)
            parameters = run.profile_parameters("paper", data_dir=args.data_dir, results_dir=folder / "results",
                                                overrides={**overrides, "cache_dir": str(folder / "cache")})
            settings = {k: parameters[k] for k in ("profile", "n_per_class", "epochs", "batch_size", "image_size",
                                                   "weights", "extended_test_size")}
            earlier = next((r for r in results_by_mode.values() if r.get("status") == "ok"), None)
            log(f"{number}/{len(modes)} {mode}: {MODES[mode]}")
            results_by_mode[mode] = run_mode({
                "mode": mode, "parameters": parameters, "work": str(work), "site": str(site),
                "route_log": str(folder / "downloads.log"), "weights_file": str(weights_file),
                "expected_s": earlier["notebooks_s"] if earlier else None,
                "expected_from": earlier["mode"] if earlier else None,
            })
            entry = results_by_mode[mode]
            log(f"  {mode}: {entry['status']}, {entry.get('series_s', '-')} s" + (
                f" ({entry['error']})" if "error" in entry else ""))
            save(complete=False)
        record = save(complete=True)
    show_tables(render(record), args.out, args.markdown)
    return 0 if all(r["status"] == "ok" for r in results_by_mode.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
