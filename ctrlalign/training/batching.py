"""Which examples each process trains on at each optimiser step, the same for any number of
processes.

A distributed run must take the optimiser steps of a one-process run of the same global
batch. accelerate's default sharding (``BatchSamplerShard`` with ``even_batches``) deals
micro-batches round-robin and, where an epoch's last global batch is short, fills it with
examples from the start of the epoch: those are trained twice in that step, and a full
fine-tune then lands about one learning-rate step away from the one-process run (0.4% of
the data at 12 examples, batch 8, on two processes). Here an epoch is the shuffled order
cut into global batches; a full one is dealt to processes and accumulation micro-batches as
accelerate deals it, a short one is split as evenly as possible over the processes (each
takes the same number of micro-batches, so collectives stay in step). A process left with
no example (a short batch of fewer examples than processes) runs a copy of one that counts
for nothing (``mask``: no label, zero weight), as FSDP needs every process in each forward.
The losses are sums over the global batch divided by its gathered count, so micro-batches of
unequal sizes add up to the one-process loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from ctrlalign.model.logprobs import IGNORE_INDEX


@dataclass(frozen=True)
class Dummy:
    """A copy of ``example`` that must not count in the loss."""

    example: Any


class StepDataset(Dataset):
    """``examples`` indexed by ``StepBatchSampler``'s keys: an index, or ``(index, None)``
    for a copy that counts for nothing."""

    def __init__(self, examples: Sequence):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key: int | tuple[int, None]):
        if isinstance(key, tuple):
            return Dummy(self.examples[key[0]])
        return self.examples[key]


def even_split(items: list, parts: int) -> list[list]:
    """``items`` in order, cut into ``parts`` runs whose lengths differ by at most one."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for p in range(parts):
        end = start + size + (p < extra)
        out.append(items[start:end])
        start = end
    return out


class StepBatchSampler:
    """This process's micro-batches of an epoch (see the module docstring).

    The order is a permutation seeded by ``seed + epoch``, the one accelerate's seedable
    sampler draws, so a one-process run takes the batches it took before this sampler; with
    ``shuffle=False`` it is the dataset's own order (``train_sampling_strategy=
    "sequential"``, as benchmarks that compare trainers on the same examples need)."""

    def __init__(
        self,
        n: int,
        micro: int,
        accumulation: int,
        world: int,
        rank: int,
        seed: int,
        shuffle: bool = True,
    ) -> None:
        self.n, self.micro, self.accumulation = n, micro, accumulation
        self.world, self.rank, self.seed = world, rank, seed
        self.shuffle = shuffle
        self.epoch = 0

    @property
    def global_batch(self) -> int:
        return self.micro * self.accumulation * self.world

    def _tail_micro_batches(self, short: int) -> int:
        return math.ceil(short / (self.world * self.micro))

    def __len__(self) -> int:
        full, short = divmod(self.n, self.global_batch)
        return full * self.accumulation + (self._tail_micro_batches(short) if short else 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list]:
        order = list(range(self.n))
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=generator).tolist()
        for start in range(0, self.n, self.global_batch):
            step = order[start : start + self.global_batch]
            if len(step) == self.global_batch:
                count = self.accumulation
            else:
                count = self._tail_micro_batches(len(step))
            parts = even_split(step, self.world * count)
            for a in range(count):
                part = parts[a * self.world + self.rank]
                yield part or [(step[0], None)]
        self.epoch += 1  # as accelerate's sampler: the next pass is the next epoch


def collate_steps(
    collator: Callable[[list], dict], mask: Callable[[dict], dict], items: list
) -> dict[str, torch.Tensor]:
    """``collator`` over ``StepDataset`` items; a micro-batch of copies is ``mask``ed."""
    dummies = [isinstance(item, Dummy) for item in items]
    batch = collator([item.example if d else item for item, d in zip(items, dummies, strict=True)])
    if any(dummies):
        if not all(dummies):
            raise AssertionError("a micro-batch mixes examples and copies that count for nothing")
        batch = mask(batch)
    return batch


def mask_labels(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of the conditional LM loss that counts for nothing: no token has a label, so
    it adds zero to the loss and to the gathered token count."""
    return {**batch, "labels": torch.full_like(batch["labels"], IGNORE_INDEX)}
