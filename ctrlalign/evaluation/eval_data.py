"""The evaluation set: which prompts the runs answer, and how a judge reads a prompt.

A win rate only means something on prompts no run trained on, so the set leaves out every
prompt in the training part of the runs' data (``DataSplit``: their data, load options,
preferences, seed and eval fraction, the same split training made). With HH-RLHF's one
test file as both training and evaluation data, that leaves exactly the held-out split;
with TL;DR's pairs for training and its posts for evaluation, it leaves the posts no pair
was built from.
A file meant to hold only unseen prompts (``refuse_overlap``, what ``experiment
--eval-data`` asks) is refused instead when it holds a training prompt: there, an overlap
means the wrong file, not posts to skip.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from ctrlalign.data import DataError, Record, load_preference_data
from ctrlalign.training.splits import DataSplit

Turns = tuple[tuple[str, str], ...]


def prompts_trained_on(splits: Iterable[DataSplit]) -> tuple[set[Turns], list[str]]:
    """Prompts of the training part of every split the runs made, split exactly as
    training split it, and a note for each data spec that could not be read (its prompts
    cannot be left out)."""
    seen: set[Turns] = set()
    notes = []
    for split in sorted(set(splits), key=str):
        try:
            train, _ = split.split()
        except (DataError, ValueError, OSError) as err:
            notes.append(
                f"could not read training data {split.data!r} to leave its prompts out: {err}"
            )
            continue
        seen |= {record.messages for record in train.records}
    return seen, notes


def eval_set_apart_from_training(
    spec: str,
    max_examples: int | None,
    splits: Iterable[DataSplit],
    refuse_overlap: bool,
) -> tuple[EvalSet, list[str]]:
    """``load_eval_set`` without (or, ``refuse_overlap``, refusing) the training prompts of
    ``splits``, and the notes of training data that could not be read; with
    ``refuse_overlap`` those are an error too, as an overlap could not be checked."""
    exclude, notes = prompts_trained_on(splits)
    if refuse_overlap and notes:
        raise DataError("; ".join(notes))
    return load_eval_set(spec, max_examples, exclude, refuse_overlap), notes


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
    spec: str,
    max_examples: int | None = None,
    exclude: Collection[Turns] = (),
    refuse_overlap: bool = False,
) -> EvalSet:
    """Distinct prompts of ``spec`` in file order, without ``exclude``, at most ``max_examples``;
    with ``refuse_overlap``, a prompt in ``exclude`` is an error naming where it is.

    Pairwise files repeat a prompt when it has several pairs; it is answered once.
    """
    data = load_preference_data(spec)
    if refuse_overlap:
        shared = [record for record in data.records if record.messages in exclude]
        if shared:
            raise DataError(
                f"{spec}: {len(shared)} of its {len(data.records)} prompts are training "
                f"prompts of the runs (the first at {shared[0].source}); evaluation prompts "
                "must be ones no run trained on"
            )
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
