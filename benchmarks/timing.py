"""What the benchmark scripts share for measuring: wall time, peak memory, and the log.

Imported by speed.py and profile_head.py (``sys.path`` holds benchmarks/ when they run);
measures nothing by itself. Keras is imported only where a GPU's memory is asked for.
"""

from __future__ import annotations

import resource
import sys
import time


def timed(function, *args, **kwargs):
    """(``function(*args, **kwargs)``, its wall time in seconds)."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def peak_memory_mb() -> float:
    """The process's host-memory high-water mark so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_peak_memory_mb() -> float | None:
    """Peak accelerator memory this process has used so far, in MiB; None on a CPU.

    The host's peak (``resource.ru_maxrss``) does not see GPU memory. Each backend keeps its
    own high-water mark: PyTorch ``max_memory_allocated``, JAX the device's
    ``memory_stats()["peak_bytes_in_use"]`` (what its allocator handed out, not the pool it
    reserved at start), TensorFlow ``get_memory_info(...)["peak"]``. First GPU only.
    """
    from cxr_utils import runtime  # imports Keras

    name = runtime.backend()
    try:
        if name == "jax":
            import jax

            devices = [d for d in jax.devices() if d.platform == "gpu"]
            stats = (devices[0].memory_stats() or {}) if devices else {}
            peak = stats.get("peak_bytes_in_use")
            return None if peak is None else peak / 2**20
        if name == "torch":
            import torch

            return torch.cuda.max_memory_allocated(0) / 2**20 if torch.cuda.is_available() else None
        if name == "tensorflow":
            import tensorflow as tf

            if not tf.config.list_physical_devices("GPU"):
                return None
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    except Exception:  # no GPU, or a backend without the statistic: nothing to report
        return None
    return None


def add_gpu_memory(row: dict, key: str = "gpu_peak_memory_mb_so_far") -> dict:
    """``row`` with the GPU's peak memory under ``key``, only where there is a GPU (CPU results
    keep their columns)."""
    peak = gpu_peak_memory_mb()
    if peak is not None:
        row[key] = round(peak)
    return row


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds the tables alone."""
    print(message, file=sys.stderr, flush=True)
