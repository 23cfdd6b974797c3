"""The instrument inside a ``torch.distributed`` run: each process measures its share.

Every process holds the whole measurement set and the same parameters; the work is cut by
chunks of the set (chunk i goes to rank i mod world size), the same chunks a single process
would read, so every per-sample loss is bitwise the single process's (batch norm in "train"
mode normalises by the same chunks). What the ranks computed is then combined:

- the paired moments of a segment (count, sums, centred co-moments) are gathered and merged
  in rank order, identically on every rank, after every look of precision-targeted
  measurement, so every rank takes the same stopping decision and makes the same record;
- Hessian-vector products and gradients are summed (all-reduce), so Lanczos, started from
  the same seeded vector on every rank, sees the same vectors everywhere;
- the batch quotients of the sharpness's standard error are summed into a vector with one
  slot per part, each filled by the one rank that owns the part.

Only the order of the float64 sums differs from a single process's (rank by rank instead of
chunk by chunk), and the float32 Hessian-vector products are summed over ranks instead of
over chunks: the records agree with a single process's to rounding (tests/test_distributed.py
names the tolerance).

Batch norm's "recompute" mode re-estimates its statistics over the whole set on every
process (not shared out): each process then holds exactly the single process's statistics,
at the price of that pass running everywhere. In "eval" mode every process measures with
process 0's running statistics (``from_first``), held while it measures: each process's
own were moved by its own share of the minibatch, and DistributedDataParallel hands process
0's to the others only at the next forward (and a checkpoint saves process 0's). Measured
with their own, the processes' chunks were losses of different networks, merged into one
record (found by a second pair of eyes: segment losses off by up to 7e-3 relative).

The tracker measures the module inside ``DistributedDataParallel`` (``wrappers.unwrapped``): a
forward through the wrapper would take part in DDP's gradient reduction and broadcast its
buffers, collectives that the ranks' measurements would call in a different number than training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sgdwalk.instrument.paired import PairedLossMoments


@dataclass(frozen=True)
class Shard:
    """This process's place among the processes that measure together.

    ``Shard()`` is a single process (nothing is sent anywhere); ``Shard.current()`` is this
    process in the default (or the given) process group when one is initialised.
    """

    rank: int = 0
    world_size: int = 1
    group: Any = None

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} does not lie in a world of {self.world_size}")

    @classmethod
    def current(cls, group: Any = None) -> Shard:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(group), dist.get_world_size(group), group)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Whether this process writes files (rank 0 only: one run directory, one log)."""
        return self.rank == 0

    def owns(self, part: int) -> bool:
        """Whether part (chunk) number ``part`` is this process's to evaluate."""
        return part % self.world_size == self.rank

    # ---------------------------------------------------------------- collectives
    def _device(self) -> torch.device:
        import torch.distributed as dist

        # NCCL sends CUDA tensors only; gloo (CPU runs) sends CPU tensors.
        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def summed(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over the processes (the same on every one), on ``tensor``'s device."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        total = tensor.detach().to(self._device()).clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.group)
        return total.to(tensor.device)

    def from_first(self, tensor: torch.Tensor) -> torch.Tensor:
        """Process 0's ``tensor`` (a copy, on ``tensor``'s device), the same on every process."""
        if not self.distributed:
            return tensor.detach().clone()
        import torch.distributed as dist

        copy = tensor.detach().to(self._device()).clone()
        dist.broadcast(copy, group_src=0, group=self.group)
        return copy.to(tensor.device)

    def gathered(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """``tensor`` of every process, in rank order (same shape on every process)."""
        if not self.distributed:
            return [tensor]
        import torch.distributed as dist

        local = tensor.detach().to(self._device()).contiguous()
        pieces = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(pieces, local, group=self.group)
        return [piece.to(tensor.device) for piece in pieces]

    def merged_moments(self, moments: PairedLossMoments) -> PairedLossMoments:
        """The moments of every process's samples together, merged in rank order (so every
        process gets bitwise the same); ``moments`` itself for a single process."""
        if not self.distributed:
            return moments
        merged = PairedLossMoments(moments.num_points)
        for piece in self.gathered(moments.packed()):
            merged.merge(PairedLossMoments.unpacked(piece, moments.num_points))
        return merged


#: A single process: what the instrument uses outside ``torch.distributed``.
SINGLE_PROCESS = Shard()
