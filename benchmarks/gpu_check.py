"""The Python side of benchmarks/gpu_check.sh: what the device run asks of the interpreter.

    python benchmarks/gpu_check.py has MODULE...        # exit 0 when every module imports
    python benchmarks/gpu_check.py probe OUT.json       # the GPU, versions, the dtype policy
    python benchmarks/gpu_check.py summary --steps STEPS.tsv --out DIR --work DIR --scale S --wall-s N

The shell script runs the steps (each under its cap) and calls this file for the rest: ``has``
tells whether a Keras backend or pytest-timeout is there; ``probe`` records what the machine
offers (nvidia-smi, Keras and its backend, the GPUs Keras sees, the dtype policy training picks
with ``mixed_precision="auto"``); ``summary`` gathers the steps' table and the figures of
speed.json, speed_compare.json, pytest.log and sample_run.json into DIR/summary.json, judges the
two GPU goals (at scale ``full`` only) and prints a short table. It measures nothing itself.
Standard library only at import, so ``has`` and ``summary`` run under any Python 3.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

# The goals on an H100/H200 (benchmarks/gpu_check.sh's header): ResNet50 trained from scratch
# at batch 32 with mixed precision, and the whole protocol as the paper profile trains it.
RESNET50_TRAIN_IMAGES_PER_S_AT_LEAST = 2000
PAPER_PROTOCOL_SECONDS_UNDER = 60
STEP_COLUMNS = ("step", "status", "rc", "seconds", "cap_s", "backend")  # one tab-separated line a step


def has(modules: list[str]) -> int:
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a backend that fails to import is as good as absent
            return 1
    return 0


def probe(out: Path) -> int:
    info = {}
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=15).stdout.strip()
    except Exception as error:  # noqa: BLE001 - no nvidia-smi is an answer too
        info["nvidia_smi"] = f"unavailable: {error}"
    import keras

    import timing  # benchmarks/timing.py, beside this script
    from cxr_utils import runtime

    info.update(python=sys.version.split()[0], keras=keras.__version__, backend=runtime.backend(),
                gpus=runtime.gpu_names(), mixed_precision_auto=runtime.use_mixed_precision("auto"),
                dtype_policy=keras.mixed_precision.global_policy().name,
                versions=runtime.package_versions(), gpu_peak_memory_mb=timing.gpu_peak_memory_mb())
    text = json.dumps(info, indent=2)
    print(text)
    out.write_text(text + "\n")
    return 0


def load(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_steps(path: Path) -> list[dict]:
    steps = []
    for line in Path(path).read_text().splitlines():
        step = dict(zip(STEP_COLUMNS, (line.split("\t") + [""] * len(STEP_COLUMNS))[: len(STEP_COLUMNS)]))
        step["seconds"], step["cap_s"] = int(step["seconds"] or 0), int(step["cap_s"] or 0)
        steps.append(step)
    return steps


def speed_figures(speed: dict, prefix: str) -> dict:
    """The figures of one speed.py record, keys prefixed (``compare_`` for the other backend)."""
    results = speed.get("results", {})
    figures = {f"{prefix}backend": speed.get("hardware", {}).get("keras_backend"),
               f"{prefix}complete": "incomplete" not in speed,
               f"{prefix}mixed_precision": results.get("mixed_precision")}
    for row in results.get("throughput", []):
        key = f"{prefix}{row['model']}_b{row.get('batch_size', 32)}"
        figures[f"{key}_train_img_s"] = row["train_images_per_s"]
        figures[f"{key}_inference_img_s"] = row["inference_images_per_s"]
    protocol = results.get("paper_protocol") or {}
    for variant, seconds in protocol.get("total_s", {}).items():
        figures[f"{prefix}protocol_{variant}_s"] = seconds
    measured = protocol.get("models", [])
    if measured and len(protocol.get("total_s", {})) < len(protocol.get("variants", {})):
        figures[f"{prefix}protocol_rows_measured"] = [f"{r['variant']}/{r['model']}: {r['seconds']} s"
                                                      for r in measured]
    figures[f"{prefix}gpu_peak_memory_mb"] = results.get("gpu_peak_memory_mb")
    return figures


def summarize(steps_tsv: Path, out: Path, work: Path, scale: str, wall_s: int) -> dict:
    """summary.json's content: the steps, the GPU, the figures, the goals."""
    probe_info = load(work / "probe.json") or {}
    summary = {"scale": scale, "wall_time_s": wall_s, "gpu": probe_info.get("nvidia_smi") or probe_info.get("gpus"),
               "dtype_policy_auto": probe_info.get("dtype_policy"), "steps": read_steps(steps_tsv)}
    figures = {}
    for name, prefix in (("speed.json", ""), ("speed_compare.json", "compare_")):
        speed = load(out / name)
        if speed:
            figures.update(speed_figures(speed, prefix))
    pytest_log = out / "pytest.log"
    if pytest_log.is_file():
        finals = [line for line in pytest_log.read_text().splitlines()
                  if re.match(r"=+ .*(passed|failed|error|skipped|deselected).* =+$", line)]
        figures["pytest"] = finals[-1].strip("= ") if finals else "no summary line"
    sample = load(out / "sample_run.json")
    if sample:
        figures["sample_wall_time_s"] = sample.get("wall_time_s")
        figures["sample_notebooks_ok"] = sum(1 for e in sample.get("notebooks", {}).values()
                                             if e.get("status") == "ok")
    summary["figures"] = figures

    def best(key):  # the better of the two backends
        values = [figures[k] for k in (key, f"compare_{key}") if isinstance(figures.get(k), (int, float))]
        return (max if "img_s" in key else min)(values) if values else None

    resnet, protocol_s = best("resnet50_b32_train_img_s"), best("protocol_fast_path_s")
    full = scale == "full"  # the goals are for a GPU at full scale; smoke sizes say nothing about them
    summary["goals"] = {
        f"resnet50_train_{RESNET50_TRAIN_IMAGES_PER_S_AT_LEAST}_img_s_at_batch_32":
            None if resnet is None or not full else resnet >= RESNET50_TRAIN_IMAGES_PER_S_AT_LEAST,
        f"paper_protocol_under_{PAPER_PROTOCOL_SECONDS_UNDER}_s":
            None if protocol_s is None or not full else protocol_s < PAPER_PROTOCOL_SECONDS_UNDER,
        "how": "better backend of the two; ResNet50 from scratch with mixed precision; the protocol as "
               "the paper profile trains it (three models, 800+100+100 images, 15 epochs, compilation "
               "included); None: not measured, or scale smoke",
    }
    return summary


def print_summary(summary: dict) -> None:
    print(f"\n==== GPU check summary: scale {summary['scale']}, {summary['wall_time_s']} s, GPU {summary['gpu']}, "
          f"policy {summary['dtype_policy_auto']} ====")
    for s in summary["steps"]:
        print(f"  {s['step']:<8} {s['backend']:<6} {s['status']:<8} {s['seconds']:>4} s (cap {s['cap_s']} s)")
    for key, value in summary["figures"].items():
        print(f"  {key}: {value}")
    for key, value in summary["goals"].items():
        print(f"  goal {key}: {value}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("has", help="exit 0 when every module imports, 1 otherwise")
    command.add_argument("modules", nargs="+")
    command = commands.add_parser("probe", help="the GPU, versions and dtype policy, printed and written as JSON")
    command.add_argument("out", type=Path)
    command = commands.add_parser("summary", help="DIR/summary.json from the steps' table and the outputs")
    command.add_argument("--steps", type=Path, required=True, help="the steps' table: " + " TAB ".join(STEP_COLUMNS))
    command.add_argument("--out", type=Path, required=True, help="the folder of the outputs (the script's $OUT)")
    command.add_argument("--work", type=Path, required=True, help="the scratch folder holding probe.json")
    command.add_argument("--scale", choices=("full", "smoke"), required=True)
    command.add_argument("--wall-s", type=int, required=True, help="the run's wall time so far")
    args = parser.parse_args(argv)
    if args.command == "has":
        return has(args.modules)
    if args.command == "probe":
        return probe(args.out)
    summary = summarize(args.steps, args.out, args.work, args.scale, args.wall_s)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
