"""Process-wide allocator settings that keep CPU training from spending its time in the kernel.

glibc serves every allocation above 32 MiB with a fresh `mmap` and returns it with `munmap` when
the tensor dies. A training step allocates and frees logits, activations and gradients of that
size dozens of times, so each step page-faults gigabytes of new zeroed pages: measured here, a
5.8M-parameter Llama step (16 x 512 tokens, bf16 autocast) spent 37% of its CPU time in the
kernel and took 3.4 s; with freed memory kept for reuse it took 1.7-1.9 s. This is the same
effect that makes PyTorch's CPU tuning guide recommend jemalloc or tcmalloc; `mallopt` gets it
from glibc itself, with nothing to preload.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the kernel at once.

    Large blocks come from the heap rather than one `mmap` each, and the heap is trimmed only when
    2 GiB lie free at its top. The resident size then stays near its peak instead of shrinking
    between steps. Returns False (changing nothing) where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
