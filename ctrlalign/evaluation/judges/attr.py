"""Attribute judges (``attr:NAME``): a measured property of each answer, no model, offline.

A control named "concise" or "warm" promises to move one property of the answers; these
judges measure it, so a table can say how far a control moved its own attribute and how
far the others. Each scores one answer at a time (``score``, what ``alpha-sweep`` plots);
as a pairwise judge, the answer with more of the attribute wins and equal values tie, so
"win %" reads "more words / warmer / easier to read than the baseline".

- ``length``: words (whitespace-separated);
- ``sentiment``: VADER's compound score in [-1, 1] (the lexicon ships with vaderSentiment);
- ``readability``: Flesch reading ease, 206.835 - 1.015 words/sentence - 84.6
  syllables/word, syllables from Pyphen's hyphenation dictionary. textstat computes the
  same formula but, for English, first downloads NLTK's CMU dictionary at run time, which
  an offline machine cannot; Pyphen is textstat's own fallback for words outside it;
- ``offensive``: alt-profanity-check's probability that the text is offensive, in [0, 1]
  (a linear SVM over word n-grams, trained on human-labelled tweets and Wikipedia comments,
  shipped inside the package: no download).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from ctrlalign.evaluation.judges.base import Decisions, JudgeSpecError
from ctrlalign.evaluation.verdicts import Comparison, Verdict


def words(text: str) -> float:
    return float(len(text.split()))


@cache
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(text: str) -> float:
    return float(_vader().polarity_scores(text)["compound"])


def offensive(text: str) -> float:
    from profanity_check import predict_prob

    return float(predict_prob([text])[0])


@cache
def _hyphenator():
    import pyphen

    return pyphen.Pyphen(lang="en_US")


_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")


def syllables(word: str) -> int:
    """Pyphen's hyphenation points plus one: the count textstat falls back to."""
    return len(_hyphenator().positions(word.lower())) + 1


def flesch_reading_ease(text: str) -> float:
    """Higher is easier (90-100: a child reads it; below 30: academic prose); an answer
    without words scores 0 rather than a division by zero."""
    found = _WORD.findall(text)
    if not found:
        return 0.0
    sentences = max(1, len(_SENTENCE_END.findall(text.strip())))
    per_sentence = len(found) / sentences
    per_word = sum(syllables(w) for w in found) / len(found)
    return 206.835 - 1.015 * per_sentence - 84.6 * per_word


@dataclass(frozen=True)
class Attribute:
    #: what the number is, for reports and plot axes
    unit: str
    measure: Callable[[str], float]


ATTRIBUTES: dict[str, Attribute] = {
    "length": Attribute("words", words),
    "sentiment": Attribute("VADER compound, -1 to 1", sentiment),
    "readability": Attribute("Flesch reading ease", flesch_reading_ease),
    "offensive": Attribute("P(offensive), 0 to 1", offensive),
}


class AttributeJudge:
    """``attr:NAME``: more of the attribute wins; cheap enough to need no cache."""

    kind = "attr"

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute
        self.name = f"attr:{attribute}"

    def check(self) -> None:
        if self.attribute not in ATTRIBUTES:
            raise JudgeSpecError(
                f"judge {self.name!r}: no attribute {self.attribute!r}; "
                f"choose from {', '.join(ATTRIBUTES)}"
            )
        self.score(["check"], ["A short and happy answer."])  # its package loads now

    @property
    def unit(self) -> str:
        return ATTRIBUTES[self.attribute].unit

    def describe(self) -> str:
        return (
            f"{self.name}: {self.unit}, measured, not a quality judge: win % is the share "
            "of answers with more of it than the baseline's"
        )

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        """The attribute of each answer (the prompt is not read)."""
        measure = ATTRIBUTES[self.attribute].measure
        return [measure(answer) for answer in answers]

    def judge(self, comparisons: Sequence[Comparison]) -> Decisions:
        mine = self.score([], [c.candidate for c in comparisons])
        theirs = self.score([], [c.baseline for c in comparisons])
        verdicts = [
            Verdict.WIN if a > b else Verdict.LOSE if a < b else Verdict.TIE
            for a, b in zip(mine, theirs, strict=True)
        ]
        return Decisions(list(verdicts))
