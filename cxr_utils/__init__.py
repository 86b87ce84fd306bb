"""cxr_utils: the small package behind the cxr-replication book.

Submodules (imported on use, so ``import cxr_utils`` is cheap and never touches the network):

- ``cxr_utils.config``: the facts everything shares: the paper's protocol, the model registry,
  class and metric names, what ``weights`` means.
- ``cxr_utils.data``: find, download, index, sample, split and load the chest X-rays.
- ``cxr_utils.models``: the paper's ResNet50, LSTM and ResNet50-LSTM builders (Keras 3).
- ``cxr_utils.training``: the paper's training protocol, best-epoch selection, saved results
  (its command line: ``training_cli``).
- ``cxr_utils.metrics``: confusion matrices, metrics with intervals, McNemar's test.
- ``cxr_utils.paper``: the paper's reported tables as data.
- ``cxr_utils.plots``: training curves, confusion heatmaps, paper-vs-ours bars.
- ``cxr_utils.runtime``: seeding, hardware and version records.
- ``cxr_utils.evaluation``: from saved predictions to the paper's tables, ours beside theirs.
- ``cxr_utils.claims``: the rules that judge the paper's claims, stated once.
- ``cxr_utils.report``: the short texts the book shows about a run (findings, the verdicts table).
- ``cxr_utils.chapters``: what each chapter needs from the ones before it, rebuilt when missing.
- ``cxr_utils.run``: executes the notebook series with papermill and publishes it to the book;
  ``series``: what the series is (its notebooks, profiles, the hash of their code); ``paths``:
  where the repository, the notebooks and the book's published folders are.
- ``cxr_utils.atomic``: writing files so that a crash never leaves half a file.
- ``cxr_utils.callbacks``, ``features``, ``extended_set``, ``comparison``, ``summaries``,
  ``glance``, ``publish`` (``portable``, ``run_pages``): the protocol's callbacks, the shared
  backbone pass, the extended test set, the paper beside the run, the book's texts, the tables as
  the chapters show them, publishing a run into the book (portable copies, the pages written from it).
- ``cxr_utils.study``: ``python -m cxr_utils.study seeds``: the protocol over several seeds,
  resumable, with a summary; ``study blanked``: chapter 8's lungs-blanked models, trained beside a run.
- ``cxr_utils.shortcuts``, ``baselines``, ``blanked``, ``gradcam``, ``shortcut_run``: chapter 8, what
  the models could be scoring on: the lung rectangle, border and histogram baselines, the models
  trained with the lungs blanked, Grad-CAM.
- ``cxr_utils.predict``, ``external``, ``model_card`` (its sections: ``model_card_sections``; the
  run as it reads it: ``model_card_run``), ``saved_models``, ``image_checks``: using a finished
  run: score images, evaluate a labelled folder, the model card, loading a run's models safely,
  the size an image must have to be scored.
- ``cxr_utils.prose``: renders the pages' words, kept as Jinja2 templates in
  ``cxr_utils/templates``; ``findings``: what a run shows beyond its tables, for the report.
- ``cxr_utils.command``: the one style of the eight command lines (help, exit statuses, errors).
"""

import ctypes
import ctypes.util
import importlib
import platform

__version__ = "0.1.0"

# glibc gives each thread that allocates under contention its own heap ("arena"), up to 8 per
# core, and a freed block returns to the system only from the top of its arena. Keras' training
# loop gathers each batch on TensorFlow's worker threads, so freed batches end up scattered over
# many arenas. Measured on the 2-core CPU: fitting the ResNet50 head on 800 cached feature maps
# peaked 1.3 GB above its inputs and kept 0.5 GB after fit returned, with at most two arenas
# 0.6 GB and under 0.1 GB; chapter 4's kernel peaked at 3.5 GB, 2.3 GB with the limit from its
# start (benchmarks/imagenet_path.py measures whole series). Set on import for the threads
# started after it (TensorFlow's); `python -m cxr_utils.run` gives its kernels the limit from
# their start (MALLOC_ARENA_MAX), since ipykernel's threads take their heaps before any cell
# runs. A no-op elsewhere than glibc.
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
    "config", "data", "models", "training", "metrics", "paper", "plots", "runtime", "evaluation",
    "report", "chapters", "run", "atomic", "callbacks", "features", "extended_set", "comparison",
    "summaries", "publish", "portable", "glance", "study", "predict", "external", "model_card",
    "model_card_sections", "model_card_run", "saved_models", "training_cli", "shortcuts", "baselines", "gradcam", "shortcut_run",
    "claims", "image_checks", "paths", "series", "run_pages", "blanked", "prose", "findings", "command",
)


def __getattr__(name):
    # Lazy submodules: keeps `import cxr_utils` free of TensorFlow start-up cost.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
