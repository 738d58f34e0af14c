"""Host allocator settings for CPU training: reuse freed activation memory in the process."""

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
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
    trim_set = mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    return mmap_set and trim_set
