"""Process tuning for the threaded pipelines: keep glibc from returning chunk buffers to the kernel.

Every chunk passes through several fresh 1-4 MiB buffers (read, compressed, encrypted, decompressed).
glibc serves allocations that size with mmap, or trims them off a thread arena's heap when freed, so each
chunk costs hundreds of page faults plus munmap calls whose TLB shootdowns stall every core; on a VM this
kernel time measured larger than the whole of decompression, decryption and hashing together (restore of
512 MiB: 1.13 s with the defaults, 0.56 s tuned; see docs/benchmarks.md). Raising the mmap and trim
thresholds keeps freed buffers in the arenas for reuse. Resident memory then stays at the pipeline's
high-water mark instead of going back down between chunks, which the bounded window keeps small.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit; above any chunk size we use
_TRIM_THRESHOLD = 256 << 20

_lock = threading.Lock()
_done: bool | None = None


def tune_malloc() -> bool:
    """Apply the allocator settings once per process; True if they are in effect (glibc only).

    ``backup_disk`` and ``iter_disk`` call this; agents may call it at start-up instead.
    """
    global _done
    with _lock:
        if _done is not None:
            return _done
        _done = False
        if not sys.platform.startswith("linux"):
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False  # not glibc (musl has no mallopt): nothing to tune
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        _done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
            mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        )
        return _done
