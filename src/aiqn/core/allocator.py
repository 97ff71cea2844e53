"""Keep freed host memory in the process instead of handing it back to the OS (glibc malloc).

By default glibc serves every allocation above 128 KiB-32 MiB with a fresh `mmap` and unmaps it
when freed, so each new activation of a small network's training step page-faults its memory in
again: on the digits PixelCNN about 2,900 minor faults and 11 ms of kernel time per step (of ~100
ms). Raising the mmap threshold and the trim threshold keeps those blocks in the heap for reuse;
the faults go to zero (docs/benchmarks.md). The price is that a process keeps its peak heap until
it exits, which is what a training or sampling job wants.

`keep_freed_memory()` is called once by the CLI before any verb runs; on a C library other than
glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc <malloc.h>
MMAP_THRESHOLD = 32 * 2**20  # glibc's upper limit on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**30
TOP_PAD = 64 * 2**20


def keep_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed blocks up to 32 MiB and not to trim the heap; True if it took."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): leave the allocator as it is
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(mallopt(option, value) == 1 for option, value in settings)
