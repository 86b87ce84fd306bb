"""The CPU-side pieces of the GPU check (benchmarks/gpu_check.sh): the wheel-set check of
benchmarks/pack_for_gpu.py, the protocol split of benchmarks/speed.py, GPU memory reporting."""

import subprocess
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


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


def test_protocol_split_is_the_papers_and_shrinks_for_quick_checks(benchmark_module):
    speed = benchmark_module("speed")
    for n, sizes, separate in ((1000, (800, 100, 100), True), (900, (800, 100, 100), False), (72, (64, 8, 8), False)):
        images = np.arange(n)
        train, val, test, note = speed.protocol_parts(images, images)
        assert (len(train[0]), len(val[0]), len(test[0])) == sizes
        assert not set(train[0]) & set(val[0])
        assert (note == "separate") == separate
        if separate:
            assert not set(test[0]) & (set(train[0]) | set(val[0]))


def test_gpu_peak_memory_is_reported_only_with_a_gpu():
    from cxr_utils import runtime

    peak = runtime.gpu_peak_memory_mb()
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
