"""Cutting data into parts: records into training and held-out sets by prompt
(``split_records``), and scores into equal-size preference levels by rank (``quantise``).

Apart from ``loaders`` because neither reads anything: both are deterministic functions
of values already loaded, shared by the ``scores`` and ``attributes`` kinds (levels) and
by every recipe and the evaluation (the split).
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from dataclasses import replace

from ctrlalign.data.records import PreferenceData, Record


def split_records(
    data: PreferenceData, eval_fraction: float, seed: int
) -> tuple[PreferenceData, PreferenceData]:
    """Split into (train, eval) by prompt, reproducibly for a given ``seed``.

    Distinct prompts are shuffled with ``random.Random(seed)`` and the first
    ``round(eval_fraction * prompts)`` go to eval, so records sharing a prompt (several
    responses to one post, one record per attribute) stay on one side and evaluation never
    sees a training prompt. Record order is kept within each part; both parts keep the
    loading metadata, ``dropped`` included.
    """
    if not 0 <= eval_fraction <= 1:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    prompts = list(dict.fromkeys(record.messages for record in data.records))
    random.Random(seed).shuffle(prompts)
    held_out = set(prompts[: round(eval_fraction * len(prompts))])

    def part(records: list[Record]) -> PreferenceData:
        return replace(
            data,
            records=records,
            preferences=list(data.preferences),
            dropped=dict(data.dropped),
        )

    return (
        part([r for r in data.records if r.messages not in held_out]),
        part([r for r in data.records if r.messages in held_out]),
    )


def quantise(scores: list[float], levels: int) -> list[int]:
    """Each score's level 0..levels-1 by rank over all scores.

    Like Quark, which sorts rewards and cuts them into equal groups, but tied scores share
    a level: a tie group goes where its middle rank falls, so levels stay about equal in
    size without giving identical scores different labels.
    """
    ordered, count = sorted(scores), len(scores)
    return [
        levels * (bisect_left(ordered, s) + bisect_right(ordered, s) - 1) // (2 * count)
        for s in scores
    ]
