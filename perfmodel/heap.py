"""Keep the process's heap between a sweep's chunks (glibc only).

A sweep evaluates chunks of CHUNK scenarios (perfmodel.predict), each allocating and freeing a few
hundred temporaries of about 1 MB and, per call, output columns of 8 MB per million scenarios.
glibc's malloc (its defaults: mallopt(3), "M_MMAP_THRESHOLD" and "M_TRIM_THRESHOLD") serves blocks
above a dynamic threshold (128 KB rising to the largest block freed, at most 32 MB) from fresh
mmap regions and gives the free top of each heap back to the kernel once it exceeds twice that
threshold; every block taken again is then page-faulted in and zeroed by the kernel. Measured on
the 2-core CI-class machine (benchmarks/bench_sweep.py's 1e6 scenarios, two worker threads, one
run each): 15,700-22,000 minor faults and 0.04-0.06 s of kernel time per evaluation, 0.14-0.16 s
a sweep; with the thresholds below, no faults, no kernel time, 0.113-0.116 s.

`keep_heap` raises both thresholds once per process: blocks up to MMAP_THRESHOLD come from the heap
and up to TRIM_THRESHOLD of free heap is kept for the next chunk. The cost: the process holds that
much freed memory instead of returning it, and glibc's dynamic threshold stays off. Set
PERFMODEL_KEEP_HEAP=0 to leave glibc's defaults alone (1, the default, raises them; any other value is
an error); other C libraries are never touched.
"""
from __future__ import annotations

import ctypes
import os
import platform
import threading

#: Blocks served from the heap (a chunk's temporaries, 1 MB; a million scenarios' columns, 8 MB).
MMAP_THRESHOLD = 16 << 20
#: Free heap kept rather than handed back to the kernel (a sweep's working set on two threads).
TRIM_THRESHOLD = 256 << 20
#: mallopt(3) parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

_done = False
_lock = threading.Lock()


def keep_heap() -> bool:
    """Raise glibc's mmap and trim thresholds once (module doc); whether they are raised now."""
    global _done
    if _done:
        return True
    with _lock:
        if _done:
            return True
        setting = os.environ.get("PERFMODEL_KEEP_HEAP", "1")
        if setting not in ("0", "1"):
            raise ValueError(f"PERFMODEL_KEEP_HEAP: {setting!r} must be 0 (leave glibc's malloc alone) or 1 (the default)")
        if setting == "0" or platform.libc_ver()[0] != "glibc":
            return False
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:
            return False
        # mallopt returns 1 on success; the mmap threshold first, so no block is mmapped between
        _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        return _done
