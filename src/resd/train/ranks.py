"""The processes of a run and the two collectives the loop needs.

With several processes (DDP through accelerate; gloo on a CPU) the rollouts are sharded over
ranks and gathered, rank 0 runs the context engine and everyone takes its answer, and each rank
updates on its share of the samples. In a single process both helpers return their input, so the
loop has no `world > 1` branches of its own.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


class Ranks:
    """This process's place among the run's processes (from an `accelerate.Accelerator`)."""

    def __init__(self, accelerator: Any) -> None:
        self.acc = accelerator
        self.rank: int = accelerator.process_index
        self.world: int = accelerator.num_processes
        self.main: bool = accelerator.is_main_process

    def from_main(self, value: T) -> T:
        """Rank 0's `value` on every rank (whatever the others passed)."""
        if self.world == 1:
            return value
        from accelerate.utils import broadcast_object_list

        holder = [value]
        broadcast_object_list(holder, from_process=0)
        return holder[0]

    def gather(self, values: list[T]) -> list[T]:
        """Every rank's `values`, concatenated in rank order, on every rank."""
        if self.world == 1:
            return list(values)
        from accelerate.utils import gather_object

        return list(gather_object(list(values)))

    def share(self, items: list[T]) -> list[T]:
        """This rank's share of `items` (round robin, so every rank's share differs by at most one)."""
        return items[self.rank::self.world]

    def barrier(self) -> None:
        self.acc.wait_for_everyone()
