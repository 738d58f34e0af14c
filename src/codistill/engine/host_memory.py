"""Host allocator settings: training reuses freed memory, serving returns large blocks."""

from __future__ import annotations

import ctypes
import os

# mallopt(3) parameter numbers, and the largest block glibc lets the heap serve.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20
NEVER_TRIM = 2**31 - 1


def glibc_version() -> str | None:
    """The running glibc's version string, or None under another C library."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None


def reuse_freed_host_memory() -> bool:
    """Make glibc keep freed blocks up to 32 MiB on the heap; True if both settings took.

    By default glibc serves large blocks by mmap (its threshold only rises after such a block
    is freed) and returns freed heap memory to the kernel, so each training step page-faults
    and zero-fills much of its activation memory again. With these settings the step reuses
    the same memory; in exchange, the process keeps its peak resident size until it exits.
    A no-op (False) under any other C library.
    """
    if glibc_version() is None:
        return False
    mmap_set = _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    trim_set = _mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)
    return mmap_set and trim_set


def return_large_blocks(threshold: int) -> bool:
    """Make glibc map every block of ``threshold`` bytes or more and unmap it when freed.

    By default glibc raises its threshold to the size of the first such block freed, and later
    ones stay in the heap of the thread that freed them: a server that reads each request body
    on a thread of its own kept a body's size per connection. True if the setting took; a
    no-op (False) under any other C library.
    """
    return glibc_version() is not None and _mallopt(M_MMAP_THRESHOLD, threshold)


def _mallopt(parameter: int, value: int) -> bool:
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt(parameter, value) == 1
