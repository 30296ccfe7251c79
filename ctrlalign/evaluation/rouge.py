"""ROUGE against reference summaries, reported the way the paper's Tables 1 and 2 are.

The paper reports ROUGE-L and the average of ROUGE-1/2/L F-measures, in percent, of
generated TL;DR summaries against the human reference. Offline this is the one quality
measure that needs no judge model, so missing references are an error, never a zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rouge_score import rouge_scorer

from ctrlalign.data.records import Record

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
    scorer = rouge_scorer.RougeScorer(list(_TYPES), use_stemmer=True)
    totals = dict.fromkeys(_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)
        for name in _TYPES:
            totals[name] += scores[name].fmeasure
    mean = {name: 100.0 * total / len(predictions) for name, total in totals.items()}
    return RougeScores(mean["rouge1"], mean["rouge2"], mean["rougeL"], n=len(predictions))


def rouge_for_records(predictions: Sequence[str], records: Sequence[Record]) -> RougeScores:
    """ROUGE of generations against each record's ``reference`` (TL;DR's human summary)."""
    return rouge(predictions, [record.reference for record in records])
