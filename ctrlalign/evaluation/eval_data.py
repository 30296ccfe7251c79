"""The evaluation set: which prompts the runs answer, and how a judge reads a prompt.

A win rate only means something on prompts no run trained on, so the set leaves out every
prompt in the training part of the runs' data (``split_records`` with their seed and
eval fraction, the same split training made). With HH-RLHF's one test file as both
training and evaluation data, that leaves exactly the held-out split; with TL;DR's pairs
for training and its posts for evaluation, it leaves the posts no pair was built from.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from ctrlalign.data import DataError, Record, load_preference_data, split_records

Turns = tuple[tuple[str, str], ...]


def training_prompts(spec: str, eval_fraction: float, seed: int, **load_options) -> set[Turns]:
    """Prompts of the training part of ``spec``, split exactly as training split it."""
    data = load_preference_data(spec, **load_options)
    train, _ = split_records(data, eval_fraction, seed)
    return {record.messages for record in train.records}


@dataclass(frozen=True)
class EvalSet:
    """The prompts to answer; ``seen_in_training`` counts prompts left out for that reason."""

    spec: str
    records: list[Record]
    seen_in_training: int

    @property
    def has_references(self) -> bool:
        return all(record.reference for record in self.records)


def load_eval_set(
    spec: str, max_examples: int | None = None, exclude: Collection[Turns] = ()
) -> EvalSet:
    """Distinct prompts of ``spec`` in file order, without ``exclude``, at most ``max_examples``.

    Pairwise files repeat a prompt when it has several pairs; it is answered once.
    """
    data = load_preference_data(spec)
    records: dict[Turns, Record] = {}
    seen: set[Turns] = set()
    for record in data.records:
        if record.messages in exclude:
            seen.add(record.messages)
        else:
            records.setdefault(record.messages, record)
    chosen = list(records.values())[:max_examples]
    if not chosen:
        reason = f" ({len(seen)} were training prompts)" if seen else ""
        raise DataError(f"{spec}: no evaluation prompts left{reason}")
    return EvalSet(spec, chosen, len(seen))
