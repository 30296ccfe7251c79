"""ROUGE against reference summaries, reported the way the paper's Tables 1 and 2 are.

The paper reports ROUGE-L and the average of ROUGE-1/2/L F-measures, in percent, of
generated TL;DR summaries against the human reference. Offline this is the one quality
measure that needs no judge model, so missing references are an error, never a zero.
Two methods answer the same posts, so they are compared by the paired difference of their
per-post ROUGE-L: post-to-post variation, far larger than the methods' difference, cancels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rouge_score import rouge_scorer, tokenizers

from ctrlalign.data.records import Record
from ctrlalign.evaluation.verdicts import bootstrap_mean

_TYPES = ("rouge1", "rouge2", "rougeL")


class MissingReferenceError(ValueError):
    """Some examples have no reference text, so ROUGE cannot be computed for them."""


@dataclass(frozen=True)
class RougeScores:
    """Mean F-measures in percent over ``n`` examples; ``average`` is the paper's Rouge-Avg."""

    rouge1: float
    rouge2: float
    rouge_l: float
    n: int
    #: ROUGE-L F-measure of each example, in percent, for paired comparisons
    rouge_l_each: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @property
    def average(self) -> float:
        return (self.rouge1 + self.rouge2 + self.rouge_l) / 3


def rouge(predictions: Sequence[str], references: Sequence[str | None]) -> RougeScores:
    """ROUGE-1/2/L F-measure (Porter stemming on) averaged over examples, in percent."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    missing = sum(1 for ref in references if not ref or not ref.strip())
    if missing:
        raise MissingReferenceError(
            f"{missing} of {len(references)} examples have no reference text; ROUGE needs "
            "a reference summary for every example"
        )
    if not predictions:
        raise ValueError("cannot compute ROUGE over zero examples")
    # the scorer's default tokenizer (Porter stemming), passed so it is not logged per call
    tokenizer = tokenizers.DefaultTokenizer(use_stemmer=True)
    scorer = rouge_scorer.RougeScorer(list(_TYPES), tokenizer=tokenizer)
    each = np.array(
        [
            [score.fmeasure for score in (scores[name] for name in _TYPES)]
            for scores in (
                scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)
            )
        ]
    )
    rouge1, rouge2, rouge_l = (100.0 * each.mean(axis=0)).tolist()
    l_each = tuple((100.0 * each[:, 2]).tolist())
    return RougeScores(rouge1, rouge2, rouge_l, n=len(predictions), rouge_l_each=l_each)


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``mine - base`` over the same examples, with a percentile bootstrap 95%
    interval over examples (resampled with replacement, seeded for repeatability)."""

    mean: float
    ci_low: float
    ci_high: float
    n: int

    @classmethod
    def of(
        cls, mine: Sequence[float], base: Sequence[float], n_boot: int = 2000, seed: int = 0
    ) -> PairedDifference:
        if len(mine) != len(base) or not mine:
            raise ValueError(
                f"paired difference needs equal, non-empty lists: {len(mine)}, {len(base)}"
            )
        diff = np.asarray(mine, dtype=float) - np.asarray(base, dtype=float)
        return cls(*bootstrap_mean(diff, n_boot, seed), len(diff))


def rouge_for_records(predictions: Sequence[str], records: Sequence[Record]) -> RougeScores:
    """ROUGE of generations against each record's ``reference`` (TL;DR's human summary)."""
    return rouge(predictions, [record.reference for record in records])
