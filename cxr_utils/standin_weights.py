"""A test and benchmark aid: Keras' ImageNet ResNet50 download answered offline by a stand-in file.

Nothing in the book, the notebooks or ``python -m cxr_utils.run`` imports this module, and
importing it changes nothing: the real download path (Keras' ``get_file``, which checks the
real file's hash) is untouched unless a test or a benchmark asks for the route below. It serves
tests/test_imagenet_standin.py and benchmarks/imagenet_path.py (and benchmarks/extended_memory.py,
which borrows the stand-in), so that the paper's setting, ``weights="imagenet"``, runs on a
machine without a network:

- ``make_standin(folder)``: a seeded ResNet50 with ``weights=None`` saved in the format and under
  the name Keras downloads (``KERAS_FILE``, a Keras 2 HDF5 weights file that
  ``keras.applications.ResNet50`` reads with ``load_weights``). Not ImageNet: the same layers,
  shapes and arithmetic, meaningless numbers.
- ``write_site(folder)``: a folder holding a ``sitecustomize.py``; a Python process started with
  it first on its ``PYTHONPATH`` and ``route_environment``'s variables (papermill's kernels, in
  particular) gets Keras' request for exactly ``KERAS_FILE`` from exactly Keras' address answered
  with the stand-in, every other download refused, and every connection leaving the machine
  refused; each of these is one line of the route's log (``ROUTED``, ``REFUSED``, ``NETWORK``),
  counted by ``route_counts``. The route is installed lazily, as Keras' download module is first
  imported, so that a kernel starts as fast as without it (importing Keras in sitecustomize
  delays a kernel's first answer, past papermill's start timeout on a busy machine).
"""

from __future__ import annotations

import os
from pathlib import Path

KERAS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
LOG_VARIABLE, FILE_VARIABLE = "CXR_STANDIN_LOG", "CXR_STANDIN_FILE"

SITECUSTOMIZE = '''
"""Started with every Python process on this PYTHONPATH: Keras' ImageNet download answered by the
stand-in file, every call logged, connections off this machine refused. Written by
cxr_utils.standin_weights.write_site (a test and benchmark aid); see that module."""
import importlib.machinery
import os
import socket
import sys

_LOG = os.environ["%(log)s"]
_NAME = "%(name)s"
_MODULE = "keras.src.utils.file_utils"


def _log(line):
    with open(_LOG, "a") as handle:
        handle.write(line + "\\n")


_connect = socket.socket.connect


def _local_only(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
        _log(f"NETWORK {address!r}")
        raise OSError(f"network access refused by the ImageNet stand-in route: {address!r}")
    return _connect(self, address)


socket.socket.connect = _local_only


def _get_file(fname=None, origin=None, *args, **kwargs):
    from keras.src.applications import resnet

    if fname == _NAME and origin == resnet.BASE_WEIGHTS_PATH + _NAME:
        _log(f"ROUTED {fname} {origin}")
        return os.environ["%(file)s"]
    _log(f"REFUSED {fname} {origin}")
    raise RuntimeError(f"unexpected download under the ImageNet stand-in route: {fname!r} from {origin!r}")


class _RouteOnImport:
    """Finds Keras' download module as Python would, and replaces its get_file once it has run."""

    def find_spec(self, name, path=None, target=None):
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            module.get_file = _get_file

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _RouteOnImport())
''' % {"name": KERAS_FILE, "log": LOG_VARIABLE, "file": FILE_VARIABLE}


def keras_origin() -> str:
    """The address Keras downloads ``KERAS_FILE`` from (imports Keras)."""
    from keras.src.applications import resnet

    return f"{resnet.BASE_WEIGHTS_PATH}{KERAS_FILE}"


def make_standin(folder) -> Path:
    """``folder/KERAS_FILE``: a seeded ResNet50 with ``weights=None`` (seed 0), no top, saved as the
    Keras 2 HDF5 weights file Keras downloads for ImageNet. Not ImageNet: the same arithmetic,
    meaningless numbers. Imports Keras and h5py."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(include_top=False, weights=None)
    path = Path(folder) / KERAS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return path


def write_site(folder) -> Path:
    """``folder`` holding the routing ``sitecustomize.py``: put it first on the PYTHONPATH of the
    processes to route (``route_environment``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def route_environment(site, log_path, weights_file, pythonpath: str | None = None) -> dict[str, str]:
    """The environment variables that route a process started with them: ``site`` first on
    ``PYTHONPATH`` (before ``pythonpath``, by default this process's), the log and the stand-in."""
    pythonpath = os.environ.get("PYTHONPATH") if pythonpath is None else pythonpath
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), pythonpath])),
            LOG_VARIABLE: str(log_path), FILE_VARIABLE: str(weights_file)}


def route_lines(log_path) -> list[str]:
    """The route's log: one line per routed download, refused download or refused connection."""
    path = Path(log_path)
    return path.read_text().splitlines() if path.is_file() else []


def route_counts(log_path) -> dict[str, int]:
    """How often the routed processes asked Keras for the ImageNet file (routed), for another
    file (refused), and tried the network (refused), from the route's log."""
    lines = route_lines(log_path)
    return {"downloads_routed": sum(line.startswith("ROUTED ") for line in lines),
            "downloads_refused": sum(line.startswith("REFUSED ") for line in lines),
            "network_refused": sum(line.startswith("NETWORK ") for line in lines)}
