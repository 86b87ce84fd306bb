"""Seeding, accelerator detection and the record every run writes next to its results.

Backend-specific calls live here and only here, so that ``models`` and ``training`` stay plain
Keras 3 and run unchanged on TensorFlow (the CPU default), JAX or PyTorch. Explained in
book/reproducibility.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import keras

from cxr_utils.atomic import atomic_write  # the one atomic writer, re-exported

# Packages whose versions change numbers; recorded in every run record.
RECORDED_PACKAGES = (
    "keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch", "numpy", "pandas",
    "scikit-learn", "scipy", "statsmodels", "pillow", "imagehash", "papermill", "jupyter-book",
)

# TensorFlow sizes its thread pools from these before its first operation. One thread each makes
# ResNet50's training bit-identical run to run on a CPU (measured: ``set_seed``); ``python -m
# cxr_utils.run --one-thread`` sets them for every notebook, any other command takes them from the shell.
ONE_THREAD_ENVIRONMENT = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def backend() -> str:
    return keras.backend.backend()


def tensorflow_threads() -> dict:
    """TensorFlow's thread settings as this process's environment gives them ("default": TensorFlow
    chooses from the machine's cores)."""
    return {name: os.environ.get(name, "default") for name in ONE_THREAD_ENVIRONMENT}


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and the Keras backend, and ask TensorFlow for deterministic ops.

    On the TensorFlow CPU backend the LSTM then trains to the same weights (tests/test_training.py).
    A ResNet50 trained from scratch at 224 px does not, on this project's CPU: its weights differ
    from the sixth significant digit after one epoch, with or without XLA; with one thread (intra-
    and inter-op, ``ONE_THREAD_ENVIRONMENT``) three trainings agreed, so TensorFlow's multi-threaded
    CPU kernels are the cause (measured; book/reproducibility). GPU kernels may differ too.
    """
    keras.utils.set_random_seed(seed)
    if backend() == "tensorflow":
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()


def gpu_names() -> list[str]:
    """Names of the accelerators the current Keras backend can use (empty on a CPU)."""
    name = backend()
    try:
        if name == "tensorflow":
            import tensorflow as tf
            return [d.name for d in tf.config.list_physical_devices("GPU")]
        if name == "jax":
            import jax
            return [str(d) for d in jax.devices() if d.platform == "gpu"]
        if name == "torch":
            import torch
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver means: no usable GPU
        return []
    return []


def use_mixed_precision(enabled: bool | str = "auto") -> bool:
    """Set Keras' global dtype policy, before a model is built; returns whether it is a mixed one.

    "auto": mixed float16 when a GPU is present, else float32; True: "mixed_float16"; False: "float32";
    "bfloat16": "mixed_bfloat16" (ResNet50 trained about 1.5x faster than in float32 on this
    project's CPU). Output layers of ``cxr_utils.models`` stay float32.
    """
    if isinstance(enabled, str) and enabled == "auto":
        enabled = bool(gpu_names())
    if isinstance(enabled, str) and enabled == "bfloat16":
        policy = "mixed_bfloat16"
    elif not isinstance(enabled, str) and enabled in (True, False):
        policy = "mixed_float16" if enabled else "float32"
    else:
        raise ValueError(f"mixed_precision must be 'auto', True, False or 'bfloat16', not {enabled!r}")
    keras.mixed_precision.set_global_policy(policy)
    return policy != "float32"


def accelerator_summary(mixed_precision: bool | str = "auto") -> str:
    """One line for a notebook's first cell: the Keras backend, the accelerator it sees, and
    whether training will use mixed precision (``use_mixed_precision``'s "auto" rule)."""
    gpus = gpu_names()
    mixed = bool(gpus) if mixed_precision == "auto" else bool(mixed_precision)
    warning = ("" if gpus else " Warning: no GPU, so training at the paper's scale takes hours; on Google Colab choose "
               "Runtime > Change runtime type > GPU.")
    return (f"Keras {keras.__version__} on {backend()}; accelerator: {', '.join(gpus) or 'none (CPU only)'}; "
            f"mixed precision: {'on' if mixed else 'off'}.{warning}")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in RECORDED_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions


def hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    gpus = gpu_names()
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
        "accelerator": gpus[0] if gpus else "CPU only",
        "keras_backend": backend(),
        "tensorflow_threads": tensorflow_threads(),
    }


def git_commit(path: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def invoked_command(argv: list[str] | None = None) -> str:
    """The command line that started this process, as its user would type it again: a module of
    this package run with ``python -m`` is named by its module (``python -m cxr_utils.study seeds
    ...``, where ``sys.argv[0]`` says only ``__main__.py``); any other program by its file name."""
    argv = list(sys.argv if argv is None else argv) or ["python"]
    program = Path(argv[0] or "python")
    package = Path(__file__).resolve().parent
    if program.suffix == ".py" and program.resolve().is_relative_to(package):
        module = program.resolve().relative_to(package.parent).with_suffix("")
        program_name = "python -m " + ".".join(part for part in module.parts if part != "__main__")
    else:
        program_name = program.name
    return " ".join([program_name, *argv[1:]])


def run_record(settings: dict, wall_time_s: float | None = None, **extra) -> dict:
    """Everything needed to tell how a result was obtained: settings, versions, hardware, time."""
    record = {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "versions": package_versions(),
        "hardware": hardware(),
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "command": invoked_command(),
    }
    if wall_time_s is not None:
        record["wall_time_s"] = round(wall_time_s, 2)
    record.update(extra)
    return record


def write_text(text: str, path: str | Path) -> Path:
    """Write a text file atomically (``atomic_write``: complete, or the earlier file untouched)."""
    return atomic_write(path, lambda temporary: temporary.write_text(text))


def write_json(data: dict, path: str | Path) -> Path:
    """Write JSON atomically (``write_text``)."""
    return write_text(json.dumps(data, indent=2, default=str) + "\n", path)
