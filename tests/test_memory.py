"""The allocator setting that keeps CPU training out of the kernel (genrec/memory.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# a step that allocates and frees large tensors the way a forward/backward pass does
PROBE = textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)  # one arena: the count does not depend on which thread freed what
    if sys.argv[1] == "keep":
        from genrec.memory import keep_freed_memory
        assert keep_freed_memory()
    def minflt():
        return int(open("/proc/self/stat").read().split()[9])
    x = torch.ones(2**20)
    def step():
        a = torch.ones(16 * 2**20)              # 64 MiB, an activation
        b = (a * 2).sum() + x.sum()             # a 64 MiB temporary, freed at once
        c = torch.ones(12 * 2**20) + b          # 48 MiB twice
        return float(c[0])
    step()
    start = minflt()
    for _ in range(10):
        step()
    print(minflt() - start)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc only")
def test_freed_large_blocks_are_reused_instead_of_faulted_in_again():
    def page_faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    default, kept = page_faults("default"), page_faults("keep")
    assert default > 10 * (64 + 64 + 48) * 2**20 // 4096  # glibc unmaps each block: its pages fault again
    assert kept < default / 5
