import ctypes
import subprocess
import sys

import pytest

from codistill.engine.host_memory import glibc_version

# A child process allocates 16 MiB with malloc and reports how many bytes glibc served by mmap;
# "primed", after it allocated and freed such a block once.
PROBE = """
import ctypes, sys
from codistill.engine.host_memory import return_large_blocks, reuse_freed_host_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
settings = {"reuse": reuse_freed_host_memory, "return": lambda: return_large_blocks(2**20)}
took = settings[sys.argv[1]]() if sys.argv[1] in settings else None
if sys.argv[2] == "primed":
    libc.free(libc.malloc(16 * 2**20))
before = libc.mallinfo2().hblkhd
block = libc.malloc(16 * 2**20)
print(took, libc.mallinfo2().hblkhd - before)
libc.free(block)
"""


def mmapped_bytes_of_a_16_mib_block(mode: str, primed: bool = False) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode, "primed" if primed else "fresh"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    took, grown = result.stdout.split()
    return took, int(grown)


needs_mallinfo2 = pytest.mark.skipif(
    glibc_version() is None or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="needs glibc 2.33 or later (mallinfo2)",
)


@needs_mallinfo2
def test_large_blocks_come_from_the_reused_heap_after_the_setting():
    default_took, default_grown = mmapped_bytes_of_a_16_mib_block("default")
    reuse_took, reuse_grown = mmapped_bytes_of_a_16_mib_block("reuse")
    assert default_took == "None" and default_grown >= 16 * 2**20  # glibc's default: an mmap
    assert reuse_took == "True" and reuse_grown == 0


@needs_mallinfo2
def test_a_server_maps_every_large_block_even_after_freeing_one():
    # glibc's default raises its threshold to a freed block's size: the next one stays in a heap
    default_took, default_grown = mmapped_bytes_of_a_16_mib_block("default", primed=True)
    return_took, return_grown = mmapped_bytes_of_a_16_mib_block("return", primed=True)
    assert default_took == "None" and default_grown == 0
    assert return_took == "True" and return_grown >= 16 * 2**20
