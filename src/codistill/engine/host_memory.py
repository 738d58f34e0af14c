"""Host allocator settings for CPU training: reuse freed activation memory in the process."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt(3) parameter numbers and the largest block glibc lets the heap serve.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20
NEVER_TRIM = 2**31 - 1


def reuse_freed_host_memory() -> bool:
    """Make glibc keep freed blocks up to 32 MiB on the heap; True if the settings took.

    By default every activation of a few MiB is a fresh mmap that the kernel zero-fills page
    by page and unmaps on free, so each training step pays page faults for all of its large
    tensors. Kept on the heap, the same memory is reused step after step; the resident size
    stays at the step's peak. A no-op (False) where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
        mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)
    )
