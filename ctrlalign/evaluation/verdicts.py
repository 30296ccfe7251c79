"""Win / tie / lose verdicts and the win-rate summary every table row is built from.

The paper (seed 002, section 4.3 and appendix C) compares a candidate (MEET) against a
baseline (CoH, DPO) one prompt at a time. A reward model gives a tie when the Bradley-Terry
probability sigmoid(r1 - r2) is close to one half; an LLM judge is asked in both orders
to cancel its position bias and the two answers are combined. Both judges end in the same
``Verdict`` so the summary and the report code are shared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

DEFAULT_TIE_BAND = (0.45, 0.55)


class Verdict(Enum):
    """The outcome of one comparison, always from the candidate's point of view."""

    WIN = "win"
    TIE = "tie"
    LOSE = "lose"


@dataclass(frozen=True)
class Comparison:
    """One prompt with the candidate's and the baseline's answers: what any judge reads."""

    prompt: str
    candidate: str
    baseline: str


def sigmoid(x: float) -> float:
    """Logistic function that does not overflow for large reward gaps."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def probability_verdict(
    p_candidate_better: float, band: tuple[float, float] = DEFAULT_TIE_BAND
) -> Verdict:
    """Tie when the probability lies in ``band`` (edges included), else the likelier wins."""
    low, high = band
    if low <= p_candidate_better <= high:
        return Verdict.TIE
    return Verdict.WIN if p_candidate_better > high else Verdict.LOSE


def reward_verdict(
    r_candidate: float, r_baseline: float, band: tuple[float, float] = DEFAULT_TIE_BAND
) -> Verdict:
    """The paper's reward-model rule: tie when sigmoid(r1 - r2) is in [0.45, 0.55]."""
    return probability_verdict(sigmoid(r_candidate - r_baseline), band)


def combine_orders(first: Verdict, second: Verdict) -> Verdict:
    """Combine a pair judged in both orders (both verdicts already from the candidate's view).

    Appendix C: win = wins twice or wins once and ties once; lose is symmetric; everything
    else (two ties, or one win and one loss: pure position bias) is a tie.
    """
    verdicts = {first, second}
    if Verdict.WIN in verdicts and Verdict.LOSE not in verdicts:
        return Verdict.WIN
    if Verdict.LOSE in verdicts and Verdict.WIN not in verdicts:
        return Verdict.LOSE
    return Verdict.TIE


@dataclass(frozen=True)
class WinRate:
    """Percentages as the paper reports them, plus a bootstrap 95% interval of delta.

    ``delta`` = win% - lose%; the interval tells a reader whether a +3% delta on a few
    hundred prompts means anything.
    """

    win: float
    lose: float
    tie: float
    delta: float
    n: int
    ci_low: float
    ci_high: float

    @classmethod
    def from_verdicts(
        cls, verdicts: Sequence[Verdict], n_boot: int = 2000, seed: int = 0
    ) -> WinRate:
        """Summarise verdicts; the interval is a percentile bootstrap seeded for repeatability."""
        n = len(verdicts)
        if n == 0:
            raise ValueError("cannot compute a win rate from zero verdicts")
        counts = np.array([sum(v is kind for v in verdicts) for kind in Verdict], dtype=float)
        win, tie, lose = 100.0 * counts / n
        # Resampling n verdicts with replacement is a multinomial draw of the three counts;
        # drawing the counts directly costs O(n_boot) instead of O(n_boot * n).
        rng = np.random.default_rng(seed)
        boot = rng.multinomial(n, counts / n, size=n_boot)
        deltas = 100.0 * (boot[:, 0] - boot[:, 2]) / n
        ci_low, ci_high = np.percentile(deltas, [2.5, 97.5])
        return cls(
            win=float(win),
            lose=float(lose),
            tie=float(tie),
            delta=float(win - lose),
            n=n,
            ci_low=float(ci_low),
            ci_high=float(ci_high),
        )


def bootstrap_mean(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its percentile bootstrap 95% interval, resampling the
    values with replacement (seeded, so a rerun gives the same interval)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("cannot take the mean of zero values")
    picks = np.random.default_rng(seed).integers(0, data.size, size=(n_boot, data.size))
    low, high = np.percentile(data[picks].mean(axis=1), [2.5, 97.5])
    return float(data.mean()), float(low), float(high)
