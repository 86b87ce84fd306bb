"""Atomic file writing: a file the project writes appears complete, or not at all; and the
records it wrote, read back.

One implementation for every file written (``cxr_utils.data``'s CSVs and image cache,
``runtime.write_text``'s records and pages). A module of its own because ``runtime`` imports
Keras, and ``cxr_utils.data`` must stay importable without Keras.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` by calling ``write(temporary)``, then renaming the temporary file to ``path``.

    The temporary file lies next to the target (same file system, so the rename is atomic):
    readers see the earlier file or the complete new one, and a failure (disk full, Ctrl-C)
    leaves the earlier file in place. The new file gets a plain ``open()``'s permissions, not
    ``mkstemp``'s private 0600. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def replace_folder(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Put the complete folder ``staging`` where ``final`` is: the previous ``final`` stays in
    place until the new one has been moved in, then it is removed."""
    staging, final = Path(staging), Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old)
    else:
        staging.rename(final)
    return final


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON record the project wrote, or None when it is missing or unreadable (a run that
    stopped before writing it)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
