"""Training in one or many processes through accelerate: one code path for a CPU process, N CPU
processes (DDP over gloo), N GPUs (DDP over NCCL), or FSDP / DeepSpeed chosen in the run config.

A launcher (`genrec train --processes N`, `torchrun`, `accelerate launch`) starts one process per
rank with RANK / WORLD_SIZE / LOCAL_RANK set. Every process builds the same examples and draws the
same global batches (same seed); each trains on its share of every batch (`Processes.share`) and
the gradients are averaged, so the optimizer steps are those of one process seeing the whole
batch. Rank 0 alone validates and writes (checkpoints, the model, reports, progress bars); the
others wait for what it decided (`Processes.broadcast`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

from genrec.config import DistributedConfig
from genrec.device import resolve_device
from genrec.errors import GenrecError


@dataclass
class Processes:
    """This process among the training processes, and the few collective operations training needs.

    Without an accelerator (a direct caller of the training loop) it is the one local CPU process.
    """

    accelerator: Any = None
    strategy: str = "ddp"
    shadows: dict[int, torch.nn.Module] = field(default_factory=dict)  # FSDP/DeepSpeed: rank 0's full copy of a model

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator is not None else 0

    @property
    def world(self) -> int:
        return self.accelerator.num_processes if self.accelerator is not None else 1

    @property
    def main(self) -> bool:
        """True on rank 0, the process that validates and writes."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return self.accelerator.device if self.accelerator is not None else torch.device("cpu")

    @property
    def sharded(self) -> bool:
        """True when no process holds the whole model (FSDP, DeepSpeed)."""
        return self.strategy in ("fsdp", "deepspeed") and self.accelerator is not None

    def share(self, batch: list[int]) -> list[int]:
        """This process's examples of a global batch: every `world`-th, from its rank on. Batches hold
        examples of similar length, so the shares are near-equal in tokens."""
        return batch[self.rank :: self.world]

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        """Place the model on this process's device and wrap it (DDP / FSDP / DeepSpeed) with its optimizer.

        The learning-rate schedule stays on the inner optimizer, stepped once per global step (accelerate's
        scheduler wrapper would step it once per process)."""
        if self.accelerator is None:
            return model, optimizer
        if self.sharded and self.main:
            self.shadows[id(model)] = copy.deepcopy(model).cpu()
        wrapped, optimizer = self.accelerator.prepare(model, optimizer)
        if self.sharded and self.main:
            self.shadows[id(wrapped)] = self.shadows.pop(id(model))
        return wrapped, optimizer

    def unwrap(self, wrapped: torch.nn.Module) -> torch.nn.Module:
        """The model inside its DDP / FSDP / DeepSpeed wrapper."""
        return self.accelerator.unwrap_model(wrapped) if self.accelerator is not None else wrapped

    def full_model(self, wrapped: torch.nn.Module) -> torch.nn.Module | None:
        """On rank 0, a module holding the whole trained model (to validate or export); None elsewhere.

        DDP and one process: the model itself. FSDP / DeepSpeed: every process must call this (the
        weights are gathered), and rank 0 gets its CPU copy loaded with them."""
        if not self.sharded:
            return self.unwrap(wrapped) if self.main else None
        state = self.accelerator.get_state_dict(wrapped)
        if not self.main:
            return None
        shadow = self.shadows[id(wrapped)]
        shadow.load_state_dict(state, strict=False)
        return shadow

    def backward(self, loss: torch.Tensor) -> None:
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def clip(self, params, max_norm: float) -> None:
        """Clip the global gradient norm (after the gradients were averaged: the same on every process)."""
        if self.accelerator is None:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        else:
            self.accelerator.clip_grad_norm_(params, max_norm)

    def no_sync(self, wrapped: torch.nn.Module, skip: bool):
        """Within the block, backward passes accumulate locally without averaging (all micro-batches but the last)."""
        if not skip or self.accelerator is None or self.world == 1:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(wrapped)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every process (any picklable object)."""
        if self.world == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value if self.main else None])[0]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums of `values` over the processes."""
        if self.world == 1:
            return values
        total = self.accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=self.device), "sum")
        return total.tolist()

    def check_same(self, digest: str, what: str) -> None:
        """Fail in one line if this process built other `what` than rank 0 (the batches would then differ)."""
        if self.world == 1:
            return
        reference = self.broadcast(digest)
        if reference != digest:
            raise GenrecError(
                f"rank {self.rank} built other {what} than rank 0; training processes must run the same genrec, "
                "run directory and config"
            )

    def wait(self) -> None:
        """Until every process reaches this point."""
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def release(self) -> None:
        """Drop accelerate's references to the models and optimizers prepared so far (between stages)."""
        self.shadows.clear()
        if self.accelerator is not None:
            self.accelerator.free_memory()

    def finish(self) -> None:
        """Leave the process group (the other ranks exit; rank 0 goes on alone)."""
        if self.accelerator is not None and self.world > 1:
            self.accelerator.wait_for_everyone()
            self.accelerator.end_training()


def digest(rows) -> str:
    """A short hash of tokenised examples (to check that every process built the same ones)."""
    h = hashlib.sha1()
    for row in rows:
        h.update(len(row.input_ids).to_bytes(4, "little"))
        h.update(torch.tensor(row.input_ids, dtype=torch.int32).numpy().tobytes())
    return h.hexdigest()


def check_settings(config: DistributedConfig, world: int, cuda: bool | None = None) -> None:
    """Fail in one line, naming the setting, when `world` processes cannot train with `config` here
    (`cuda`: whether they train on CUDA GPUs; None: when one is visible)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    backend = config.backend or ("nccl" if cuda else "gloo")
    if world > 1 and not torch.distributed.is_available():
        raise GenrecError("train.distributed: this torch build has no torch.distributed; train in one process")
    if world > 1 and not torch.distributed.is_backend_available(backend):
        raise GenrecError(
            f"train.distributed.backend {backend}: not available in this torch build "
            f"(use {'nccl' if cuda else 'gloo'}{'' if cuda else ' on a CPU'}, or leave it unset)"
        )
    if config.strategy != "ddp" and not cuda:
        raise GenrecError(
            f"train.distributed.strategy {config.strategy}: accelerate runs FSDP and DeepSpeed on GPUs only; "
            "use ddp on a CPU"
        )
    if config.strategy == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise GenrecError(
                "train.distributed.strategy deepspeed: the deepspeed package is not installed "
                "(pip install deepspeed, on a CUDA machine)"
            ) from None


def start_processes(config: DistributedConfig, bf16: bool = False, device: str = "auto") -> Processes:
    """Join the training processes a launcher started (or be the only one): the accelerator with the
    strategy and backend of `config`, on CUDA GPUs or CPUs as `device` (`train.device`) says. Settings
    that cannot work here fail in one line naming them."""
    import os

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import InitProcessGroupKwargs

    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = world > 1
    cuda = resolve_device(device, "train.device").type == "cuda"
    check_settings(config, world, cuda)
    backend = config.backend or ("nccl" if cuda else "gloo")
    plugins: dict[str, Any] = {}
    if config.strategy == "fsdp":
        from accelerate.utils import FullyShardedDataParallelPlugin

        plugins["fsdp_plugin"] = FullyShardedDataParallelPlugin(**config.fsdp)
    elif config.strategy == "deepspeed":
        from accelerate.utils import DeepSpeedPlugin

        plugins["deepspeed_plugin"] = DeepSpeedPlugin(**{"gradient_clipping": 1.0, **config.deepspeed})
    # One accelerator per process: a second `train` in the same Python process (tests) starts afresh.
    AcceleratorState._reset_state(reset_partial_state=False)
    try:
        accelerator = Accelerator(
            cpu=not cuda,
            mixed_precision="bf16" if bf16 and config.strategy != "ddp" else "no",
            # (alone, no process group: accelerate would otherwise try to join one)
            kwargs_handlers=[InitProcessGroupKwargs(backend=backend, timeout=timedelta(minutes=config.timeout_minutes))]
            if launched
            else [],
            **plugins,
        )
    except (RuntimeError, ValueError) as exc:
        raise GenrecError(
            f"train.distributed: cannot join the training processes ({str(exc).splitlines()[0]})"
        ) from None
    return Processes(accelerator, config.strategy)
