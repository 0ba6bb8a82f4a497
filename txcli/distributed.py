"""This process's place in a torchrun job, and the few collective operations the trainer needs
(every one a no-op when the job has one process)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass
class Dist:
    """This process's place in a torchrun job; world_size 1 means no process group."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        torch_dist.all_reduce(t)
        return t.tolist()

    def min(self, values: list[float]) -> list[float]:
        """Each value's minimum over the ranks (e.g. the batches of a pool every rank can train)."""
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MIN)
        return t.tolist()

    def from_main(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._device())
        torch_dist.broadcast(t, 0)
        return bool(t.item())

    def gather(self, obj) -> list:
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()

    @staticmethod
    def _device():
        return "cuda" if torch_dist.get_backend() == "nccl" else "cpu"
