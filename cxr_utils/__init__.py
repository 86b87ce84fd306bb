"""cxr_utils: the small package behind the cxr-replication book (README's modules table says more).

Submodules are imported on use, so ``import cxr_utils`` is cheap and never touches the network:

- the replication: ``config`` (protocol, model registry, names), ``data``, ``models``, ``training``
  (command line: ``training_cli``), ``callbacks``, ``features``, ``runtime`` (seeds, run records),
  ``atomic`` (files written whole or not at all), ``chapters`` (what a chapter needs from earlier ones);
- judging it: ``metrics``, ``paper`` (the paper's tables as data), ``evaluation``, ``extended_set``,
  ``comparison``, ``claims``, ``plots``;
- the book's texts and tables: ``report``, ``summaries``, ``glance``, ``prose`` (renders the Jinja2
  templates in ``cxr_utils/templates``), ``findings``;
- chapter 8, what the models could be scoring on: ``shortcuts``, ``baselines``, ``blanked``, ``gradcam``,
  ``shortcut_run``;
- running and publishing the series: ``run`` (papermill), ``series``, ``paths``, ``publish``
  (``portable``, ``run_pages``), ``study`` (``seeds``, ``blanked``);
- using a finished run: ``predict``, ``external``, ``model_card`` (``model_card_sections``,
  ``model_card_run``), ``saved_models``, ``image_checks``; ``command``: the style of all command lines.
"""

import ctypes
import ctypes.util
import importlib
import platform

__version__ = "0.1.0"

# glibc gives each thread that allocates under contention its own heap ("arena", up to 8 per core)
# and returns a freed block to the system only from the top of its arena; Keras gathers each batch
# on TensorFlow's worker threads, so freed batches scatter over many arenas. Measured on the 2-core
# CPU: fitting the ResNet50 head on 800 cached feature maps peaked 1.3 GB above its inputs and kept
# 0.5 GB after fit returned; with at most two arenas, 0.6 GB and under 0.1 GB. Chapter 4's kernel
# peaked at 3.5 GB, 2.3 GB with the limit from its start (benchmarks/imagenet_path.py measures whole
# series). Set on import for threads started later (TensorFlow's); `python -m cxr_utils.run` sets
# MALLOC_ARENA_MAX for its kernels, whose ipykernel threads take their heaps before any cell runs.
# A no-op elsewhere than glibc.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def _limit_malloc_arenas() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c")).mallopt(_M_ARENA_MAX, MALLOC_ARENAS))
    except (OSError, AttributeError):
        return False


MALLOC_ARENAS_LIMITED = _limit_malloc_arenas()

_SUBMODULES = (
    "config", "data", "models", "training", "metrics", "paper", "plots", "runtime", "evaluation", "report",
    "chapters", "run", "atomic", "callbacks", "features", "extended_set", "comparison", "summaries", "publish",
    "portable", "glance", "study", "predict", "external", "model_card", "model_card_sections", "model_card_run",
    "saved_models", "training_cli", "shortcuts", "baselines", "gradcam", "shortcut_run", "claims", "image_checks",
    "paths", "series", "run_pages", "blanked", "prose", "findings", "command",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
