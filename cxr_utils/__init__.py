"""cxr_utils: the small package behind the cxr-replication book.

Submodules (imported on use, so ``import cxr_utils`` is cheap and never touches the network):

- ``cxr_utils.data``: find, download, index, sample, split and load the chest X-rays.
- ``cxr_utils.models``: the paper's ResNet50, LSTM and ResNet50-LSTM builders (Keras 3).
- ``cxr_utils.training``: the paper's training protocol, best-epoch selection, saved results.
- ``cxr_utils.metrics``: confusion matrices, metrics with intervals, McNemar's test.
- ``cxr_utils.paper``: the paper's reported tables as data.
- ``cxr_utils.plots``: training curves, confusion heatmaps, paper-vs-ours bars.
- ``cxr_utils.runtime``: seeding, hardware and version records.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("data", "models", "training", "metrics", "paper", "plots", "runtime")


def __getattr__(name):
    # Lazy submodules: keeps `import cxr_utils` free of TensorFlow start-up cost.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
