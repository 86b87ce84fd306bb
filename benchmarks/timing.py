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


def add_gpu_memory(row: dict, key: str = "gpu_peak_memory_mb_so_far") -> dict:
    """``row`` with the GPU's peak memory under ``key``, only where there is a GPU (CPU results
    keep their columns)."""
    from cxr_utils import runtime

    peak = runtime.gpu_peak_memory_mb()
    if peak is not None:
        row[key] = round(peak)
    return row


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds the tables alone."""
    print(message, file=sys.stderr, flush=True)
