"""Process-wide memory settings that keep CPU training fast and its resident size bounded.

glibc serves every allocation above 32 MiB with a fresh `mmap` and returns it with `munmap` when
the tensor dies. A training step allocates and frees logits, activations and gradients of that
size dozens of times, so each step page-faults gigabytes of new zeroed pages (`bench/allocator.py`
measures the step time and kernel share with and without this setting). This is the same
effect that makes PyTorch's CPU tuning guide recommend jemalloc or tcmalloc; `mallopt` gets it
from glibc itself, with nothing to preload.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
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


def limit_onednn_cache(capacity: int = 8) -> None:
    """Keep oneDNN's cache of compiled kernels small (unless the user set its size).

    bf16 matmuls on the CPU run through oneDNN, which compiles one primitive per input shape and
    keeps up to 1024 of them with their buffers. Length-bucketed training batches have a new shape
    at nearly every step, so the cache only grows (docs/experiments.md has the figures). It must
    run before the first bf16 matmul: oneDNN reads the variable once.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))
