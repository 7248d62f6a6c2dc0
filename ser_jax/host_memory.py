"""Keeps the C library from handing XLA's large host buffers back to the kernel after every step.

XLA on CPU allocates each executable's temporaries afresh per call (about 150 MB for the recipe's
training step). glibc's malloc serves a block that large with `mmap` and returns it with `munmap`
on free (always, from the arenas of threads other than the main one), so every step page-faults
and zeroes the same 150 MB again: over a quarter of a 2-core machine's time went to the kernel. One
arena that never maps large blocks apart and trims only beyond `TRIM_THRESHOLD` reuses them
instead: the same numbers, the training step about 1.45x faster (benchmarks/train_throughput.py), at
the price of a peak resident size that stays reserved until the process ends.

Only glibc is tuned: other C libraries, and a process that already chose its allocator (`LD_PRELOAD`
of tcmalloc or jemalloc, or glibc's `MALLOC_*` / `GLIBC_TUNABLES` settings), are left as they are.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt(3) parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
TRIM_THRESHOLD = 1 << 30  # Free memory at the top of the heap beyond 1 GiB still goes back.
_USER_SETTINGS = ("LD_PRELOAD", "GLIBC_TUNABLES")  # And any MALLOC_* variable (glibc's older spelling).


def retain_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Sets glibc's malloc to reuse freed large blocks; True if it did.

    Call it first thing in a process, before JAX starts its threads (a thread that already has an
    arena keeps it). A no-op off glibc or when `environ` (default: os.environ) sets the allocator.
    """
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or any(k in _USER_SETTINGS or k.startswith("MALLOC_") for k in environ):
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: their own allocators, their own rules.
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in
               ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
