"""Host (CPU-side) settings that change how fast the same training steps run.

glibc serves every allocation above M_MMAP_THRESHOLD (dynamic, at most 32 MiB) with a fresh mmap
and returns it with munmap when freed. A training step of even a tiny language model allocates
several such buffers (the (b, t, vocab) logits, their log-softmax and gradient: 67 MB each for
8 x 256 x 8192 fp32), so every step page-faults and zeroes them again. Measured on this 2-core
CPU with the tiny GPT-2 (benchmarks/bench_trainer.py's model, one thread): 1.8-2.5 s of system time
per 8 steps against 12.2 s of user time, and 0.0-0.05 s with the thresholds raised, the user
time unchanged. Raising them keeps freed buffers in the heap for the next step's reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 30  # buffers up to 1 GiB come from (and return to) the heap


def keep_freed_buffers() -> bool:
    """Ask glibc to reuse freed large buffers instead of unmapping them; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES)
    )
