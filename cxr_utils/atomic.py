"""Atomic file writing: a file the project writes appears complete, or not at all.

One implementation for every file written: manifest CSVs and the image cache
(``cxr_utils.data``), JSON records, verdict pages and benchmark tables
(``cxr_utils.runtime.write_text``, which is built on this and re-exports it as
``runtime.atomic_write``). It is a module of its own because ``runtime`` imports Keras, and
``cxr_utils.data`` must stay importable without Keras.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` by calling ``write(temporary)``, then renaming the temporary file to ``path``.

    The temporary file lies next to the target (same file system, so the rename is atomic):
    readers see the earlier file or the complete new one, and a failure (disk full, Ctrl-C)
    leaves no half-written file behind and the earlier file in place. The new file gets the
    permissions a plain ``open()`` would give it, not ``mkstemp``'s private 0600. Parent folders
    are created. Returns ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    # mkstemp creates the file private (0600); give it the permissions a plain open() would.
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
    import shutil

    staging, final = Path(staging), Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old)
    else:
        staging.rename(final)
    return final
