"""Every optimiser step trains on the same examples whatever the number of processes
(``training.batching``); the runs themselves are compared in ``test_distributed.py``."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from accelerate.data_loader import SeedableRandomSampler

from ctrlalign.training.batching import (
    Dummy,
    StepBatchSampler,
    StepDataset,
    collate_steps,
    mask_labels,
)


def steps(n: int, micro: int, batch: int, world: int, epoch: int = 0) -> list[Counter]:
    """The examples of each optimiser step, over all processes, with the copies that count
    for nothing left out; checks that every process takes as many micro-batches."""
    accumulation = batch // (micro * world)
    ranks = []
    for rank in range(world):
        sampler = StepBatchSampler(n, micro, accumulation, world, rank, seed=7)
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(0 < len(b) <= micro for b in batches)
        ranks.append(batches)
    assert len({len(batches) for batches in ranks}) == 1
    out = []
    for start in range(0, len(ranks[0]), accumulation):
        step = Counter()
        for batches in ranks:
            for b in batches[start : start + accumulation]:
                step.update(i for i in b if not isinstance(i, tuple))
        out.append(step)
    return out


@pytest.mark.parametrize("n", [16, 12, 9, 3, 1])
@pytest.mark.parametrize("world", [2, 4])
def test_processes_take_the_steps_of_one(n, world):
    """12 examples in batches of 8 end each epoch in a short step of 4; 9 in one of 1, fewer
    examples than processes: each example once an epoch, in the same step as one process."""
    for epoch in (0, 1):
        one = steps(n, 2, 8, 1, epoch)
        assert steps(n, 2, 8, world, epoch) == one
        assert sum(one, Counter()) == Counter(range(n))


def test_one_process_keeps_accelerates_order():
    """A one-process run takes the batches accelerate's seedable sampler gave it before."""
    for epoch in (0, 1):
        sampler = SeedableRandomSampler(range(12), data_seed=7)
        sampler.set_epoch(epoch)
        ours = StepBatchSampler(12, 4, 2, 1, 0, seed=7)
        ours.set_epoch(epoch)
        assert [i for b in ours for i in b] == list(sampler)


def test_a_copy_that_counts_for_nothing_has_no_label():
    sampler = StepBatchSampler(9, 4, 1, 2, 1, seed=0)
    data = StepDataset([{"labels": torch.tensor([[1, 2]])}] * 9)
    last = [data[key] for key in list(sampler)[-1]]
    assert all(isinstance(item, Dummy) for item in last)
    batch = collate_steps(lambda xs: xs[0], mask_labels, last)
    assert batch["labels"].eq(-100).all()


def test_sequential_sampling_keeps_the_dataset_order():
    """``train_sampling_strategy="sequential"`` reaches our sampler: file order, each step's
    examples dealt over processes as in the shuffled order."""
    one = [i for step in StepBatchSampler(10, 2, 2, 1, 0, seed=7, shuffle=False) for i in step]
    assert one == list(range(10))
    dealt = [
        [i for step in StepBatchSampler(8, 2, 1, 2, rank, seed=7, shuffle=False) for i in step]
        for rank in (0, 1)
    ]
    assert sorted(dealt[0] + dealt[1]) == list(range(8))
    assert dealt[0][:2] + dealt[1][:2] == [0, 1, 2, 3]  # step 1 holds the first 4 examples
