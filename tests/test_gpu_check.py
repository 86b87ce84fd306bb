"""The CPU-side pieces of the GPU check (benchmarks/gpu_check.sh): the wheel-set check of
benchmarks/pack_for_gpu.py, the protocol split of benchmarks/speed.py, GPU memory reporting,
and benchmarks/gpu_check.py's backend check and summary."""

import dataclasses
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from cxr_utils import config

ROOT = Path(__file__).resolve().parents[1]
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.py"


def _wheel(folder: Path, name: str, version: str, requires=()):
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        lines = [f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
        archive.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(lines) + "\n")


def test_wheel_check_names_what_the_gpu_machine_would_miss(tmp_path, benchmark_module):
    pack = benchmark_module("pack_for_gpu")
    quiet = lambda *args: None  # noqa: E731
    _wheel(tmp_path, "keras", "3.15.1", [
        "numpy",  # on the GPU machine
        "namex",  # nowhere: must be reported
        "optree>=0.30",  # packed, but too old
        "tensorflow; extra == 'tf'",  # an extra: not needed
        "appnope; platform_system == 'Darwin'",  # another platform's
        "debugpy>=1.6",  # left out on purpose
    ])
    _wheel(tmp_path, "optree", "0.20.0", ["typing-extensions>=4.6"])
    problems = pack.check_wheels(tmp_path, "3.12", log=quiet)
    assert len(problems) == 2
    assert "needs namex: neither packed nor on the GPU machine" in problems[0]
    assert "needs optree>=0.30, packed optree 0.20.0" in problems[1]

    _wheel(tmp_path, "namex", "0.1.0")
    _wheel(tmp_path, "namex", "0.0.9")
    problems = pack.check_wheels(tmp_path, "3.12", log=quiet)
    assert any("two versions of namex" in p for p in problems)


def test_carried_packages_are_pinned_and_tensorflow_is_not_carried(benchmark_module):
    pack = benchmark_module("pack_for_gpu")
    pins = pack.pins()
    carried = {pack.normalize(name) for name in pack.CARRIED}
    assert carried <= set(pins), carried - set(pins)
    assert not {name for name in carried if name.startswith("tensorflow")}
    # What the GPU machine has is not carried twice (two versions would stop pip).
    assert not carried & {pack.normalize(name) for name in pack.DEVICE_PACKAGES}


def test_gpu_machine_package_list_is_data_that_says_where_it_came_from(benchmark_module):
    pack = benchmark_module("pack_for_gpu")
    text = pack.DEVICE_PACKAGES_FILE.read_text()
    assert text.startswith("#") and "KINDS.md" in text
    assert {"jax", "torch", "numpy"} <= set(pack.DEVICE_PACKAGES)
    assert not [name for name in pack.DEVICE_PACKAGES if "#" in name or " " in name]


def test_protocol_split_is_the_papers_and_shrinks_for_quick_checks(benchmark_module):
    speed = benchmark_module("speed")
    paper = tuple(config.PROTOCOL.split_sizes().values())
    assert paper == (800, 100, 100)
    for n, sizes, separate in ((1000, paper, True), (900, paper, False), (72, (64, 8, 8), False)):
        images = np.arange(n)
        train, val, test, note = speed.protocol_parts(images, images)
        assert (len(train[0]), len(val[0]), len(test[0])) == sizes
        assert not set(train[0]) & set(val[0])
        assert (note == "separate") == separate
        if separate:
            assert not set(test[0]) & (set(train[0]) | set(val[0]))


def test_gpu_peak_memory_is_reported_only_with_a_gpu(benchmark_module):
    from cxr_utils import runtime

    peak = benchmark_module("timing").gpu_peak_memory_mb()
    if runtime.gpu_names():
        assert peak is None or peak >= 0
    else:
        assert peak is None


def test_gpu_check_script_parses_and_explains_itself():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2
    assert "bash benchmarks/gpu_check.sh prepare" in usage.stdout
    assert '[".whl", ".gpu_data"]' in usage.stdout


def test_protocol_overrides_are_arguments_not_a_changed_global(benchmark_module):
    speed = benchmark_module("speed")
    quick = dataclasses.replace(config.PROTOCOL, epochs=1)
    assert speed.training_config(quick).epochs == 1
    assert speed.protocol_record(quick)["epochs"] == 1
    assert config.PROTOCOL.epochs == 15 and speed.protocol_record()["epochs"] == 15


def test_gpu_check_has_tells_which_modules_import():
    def has(*modules):
        return subprocess.run([sys.executable, str(GPU_CHECK), "has", *modules], capture_output=True).returncode

    assert has("json", "numpy") == 0
    assert has("json", "no_such_module_for_the_gpu_check") == 1


def test_gpu_check_summary_gathers_figures_and_judges_goals_at_full_scale_only(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    probe = {"nvidia_smi": "NVIDIA H200, 143771 MiB", "dtype_policy": "mixed_float16"}
    (work / "probe.json").write_text(json.dumps(probe))
    steps = tmp_path / "steps.tsv"
    steps.write_text("probe\tok\t0\t5\t20\tjax\nspeed\ttimeout\t124\t170\t170\tjax\n")
    throughput = [{"model": "resnet50", "batch_size": 32, "train_images_per_s": 2500.0,
                   "inference_images_per_s": 9000.0}]
    protocol = {"variants": {"fast_path": "", "paper_way": "", "scratch": ""}, "total_s": {"fast_path": 42.0},
                "models": [{"variant": "fast_path", "model": "lstm", "seconds": 3.0}]}
    (out / "speed.json").write_text(json.dumps({
        "hardware": {"keras_backend": "jax"}, "incomplete": "stopped",
        "results": {"mixed_precision": True, "throughput": throughput, "paper_protocol": protocol}}))
    (out / "speed_compare.json").write_text(json.dumps({
        "hardware": {"keras_backend": "torch"},
        "results": {"throughput": [{**throughput[0], "train_images_per_s": 1500.0}]}}))
    (out / "pytest.log").write_text("...\n===== 17 passed, 1 deselected in 40.1s =====\n")

    def summary(scale):
        completed = subprocess.run(
            [sys.executable, str(GPU_CHECK), "summary", "--steps", str(steps), "--out", str(out), "--work", str(work),
             "--scale", scale, "--wall-s", "300"], capture_output=True, text=True, check=True)
        assert "GPU check summary" in completed.stdout
        return json.loads((out / "summary.json").read_text())

    full = summary("full")
    assert [(s["step"], s["status"], s["seconds"], s["backend"]) for s in full["steps"]] == [
        ("probe", "ok", 5, "jax"), ("speed", "timeout", 170, "jax")]
    assert full["gpu"] == "NVIDIA H200, 143771 MiB" and full["dtype_policy_auto"] == "mixed_float16"
    figures = full["figures"]
    assert figures["resnet50_b32_train_img_s"] == 2500.0 and figures["compare_resnet50_b32_train_img_s"] == 1500.0
    assert figures["complete"] is False and figures["compare_complete"] is True
    assert figures["protocol_fast_path_s"] == 42.0 and figures["protocol_rows_measured"] == ["fast_path/lstm: 3.0 s"]
    assert figures["pytest"] == "17 passed, 1 deselected in 40.1s"
    assert full["goals"]["resnet50_train_2000_img_s_at_batch_32"] is True
    assert full["goals"]["paper_protocol_under_60_s"] is True
    smoke = summary("smoke")["goals"]
    assert smoke["resnet50_train_2000_img_s_at_batch_32"] is None and smoke["paper_protocol_under_60_s"] is None
