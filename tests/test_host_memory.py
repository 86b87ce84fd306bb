"""Importing cxr_utils limits glibc's malloc arenas (cxr_utils.MALLOC_ARENAS): the threads started
after it (TensorFlow's) share two heaps instead of taking one each, so freed training batches go
back to the system. Counted with glibc's own malloc_info, in fresh processes, with and without
the import."""

import platform
import re
import subprocess
import sys

import pytest

import cxr_utils

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="malloc arenas are glibc's")

# Eight threads each allocate (a bytearray of 1 MB goes to malloc, not Python's small-object
# allocator) while the others hold theirs, then the process reports its heaps.
ARENAS = """
import ctypes, ctypes.util, sys, threading
{imports}
libc = ctypes.CDLL(ctypes.util.find_library("c"))
barrier = threading.Barrier(8)
def allocate():
    block = bytearray(2**20)
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads: thread.start()
for thread in threads: thread.join()
libc.fopen.restype = ctypes.c_void_p
handle = libc.fopen(sys.argv[1].encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(handle))
libc.fclose(ctypes.c_void_p(handle))
"""


def _heaps(tmp_path, imports: str) -> int:
    report = tmp_path / "malloc_info.xml"
    subprocess.run([sys.executable, "-c", ARENAS.format(imports=imports), str(report)], check=True)
    return len(re.findall(r'<heap nr="\d+">', report.read_text()))


def test_importing_cxr_utils_limits_the_heaps_threads_take(tmp_path):
    assert _heaps(tmp_path, "") > cxr_utils.MALLOC_ARENAS  # glibc's default: a heap per thread here
    assert _heaps(tmp_path, "import cxr_utils") <= cxr_utils.MALLOC_ARENAS
    assert cxr_utils.MALLOC_ARENAS_LIMITED
