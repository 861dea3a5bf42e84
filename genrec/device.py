"""Where a stage computes: the `device` settings (`train.device`, `dense.*.device`, `generate.device`).

    resolve_device("auto", "train.device")   # cuda when a CUDA GPU is visible, else cpu
    resolve_device("cuda", "train.device")   # GenrecError naming the setting on a machine without one

A device says where the arithmetic runs, never what is computed: no fingerprint includes it, so a
run started on a CPU resumes on a GPU and a dense model trained on either is reused by the other.
"""

from __future__ import annotations

import re

from genrec.errors import GenrecError

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"  # what a config's device setting may say


def resolve_device(setting: str, name: str):
    """The torch device `setting` ("auto", "cpu", "cuda" or "cuda:N") names here; `name` (the config key,
    e.g. "dense.sasrec.device") is what a one-line error names when no such GPU is visible."""
    import torch

    if not re.match(DEVICE_PATTERN, setting or ""):
        raise GenrecError(f"{name} {setting!r}: expected auto, cpu, cuda or cuda:N")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GenrecError(
                f"{name} {setting}: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                "set it to auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GenrecError(f"{name} {setting}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device
