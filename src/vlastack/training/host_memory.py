"""Keep freed host memory in the process while training on a CPU (glibc malloc).

glibc hands large freed blocks back to the kernel: chunks above its mmap threshold are unmapped
and the top of the heap is trimmed past its trim threshold. A training step frees and allocates
the same tens of megabytes every step (activations, fresh gradients, autocast's weight copies),
so every step touches new pages and pays a page fault per 4 KiB: ~7,000 faults per step for ACT
on a ResNet-18 at 96², batch 8, 10-20% of the step on the 2-core machine (BENCHMARKS.md). With
both thresholds raised, freed memory stays in the heap and the next step reuses pages that are
already mapped; what a jemalloc/tcmalloc preload does for PyTorch CPU training, without a
preload. Process-wide and not undone: the resident size stays near the run's peak.

Written here because glibc's knobs are reachable only through ``mallopt`` (or environment
variables read before the process starts).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_applied = False


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); False where the C library is
    not glibc (macOS, musl) and nothing changed."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = (
        # allocations up to 1 GiB come from the heap, so freeing them keeps their pages
        mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
        # never shrink the heap top; grow it 64 MiB at a time
        and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
        and mallopt(_M_TOP_PAD, 64 << 20) == 1
    )
    _applied = ok
    return ok
