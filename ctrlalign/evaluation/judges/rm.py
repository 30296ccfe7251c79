"""A reward model as judge: the paper's rule, tie when sigmoid(r1 - r2) is in [0.45, 0.55].

``RewardModelJudge`` is a ``RewardModel`` that also compares answers. ``CachedRewardJudge``
adds a per-answer reward cache in the report folder, keyed by the model, the prompt and the
answer, so a baseline answer is scored once however many candidates meet it, and a rerun
scores nothing it scored before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ctrlalign.evaluation.judges.base import (
    Decisions,
    JudgeSpecError,
    ReplyCache,
    hub_model_available,
)
from ctrlalign.evaluation.verdicts import (
    DEFAULT_TIE_BAND,
    Comparison,
    Verdict,
    WinRate,
    probability_verdict,
    reward_verdict,
    sigmoid,
)
from ctrlalign.model.reward import RewardModel


@dataclass(frozen=True)
class RewardJudgement:
    """Rewards of both sides of every comparison and the verdicts they imply."""

    candidate_rewards: list[float]
    baseline_rewards: list[float]
    verdicts: list[Verdict]

    def win_rate(self, n_boot: int = 2000, seed: int = 0) -> WinRate:
        return WinRate.from_verdicts(self.verdicts, n_boot=n_boot, seed=seed)


class RewardModelJudge(RewardModel):
    """A reward model that judges comparisons with the paper's tie band."""

    def judge(
        self, comparisons: Sequence[Comparison], band: tuple[float, float] = DEFAULT_TIE_BAND
    ) -> RewardJudgement:
        """Score both answers of every comparison and apply the paper's tie band."""
        prompts = [comp.prompt for comp in comparisons]
        answers = [comp.candidate for comp in comparisons] + [c.baseline for c in comparisons]
        rewards = self.score(prompts + prompts, answers)
        candidate, baseline = rewards[: len(comparisons)], rewards[len(comparisons) :]
        verdicts = [reward_verdict(c, b, band) for c, b in zip(candidate, baseline, strict=True)]
        return RewardJudgement(candidate, baseline, verdicts)


class CachedRewardJudge:
    """``RewardModelJudge`` plus a per-answer reward cache; the model loads on first need."""

    kind = "rm"

    def __init__(
        self,
        target: str,
        cache_path: Path,
        band: tuple[float, float] = DEFAULT_TIE_BAND,
        batch_size: int = 8,
        device: str = "cpu",
    ) -> None:
        self.target = target
        self.device = device
        path = Path(target).expanduser()
        self.name = f"rm:{path.name}" if path.is_dir() else f"rm:{target}"
        self.identity = str(path.resolve()) if path.is_dir() else target
        self.cache = ReplyCache(cache_path)
        self.band = band
        self.batch_size = batch_size
        self._judge = None

    def check(self) -> None:
        """Load the model now, so a bad folder or an unreachable hub id fails before any work."""
        if not Path(self.target).expanduser().exists() and not hub_model_available(self.target):
            raise JudgeSpecError(
                f"reward model {self.target!r} is neither a folder nor reachable on the "
                "Hugging Face hub (offline?); train one with `ctrlalign train-rm` and pass "
                "its folder"
            )
        try:
            self._model()
        except (OSError, ValueError) as err:
            raise JudgeSpecError(str(err)) from err

    def describe(self) -> str:
        """What a reader must know about this judge: a train-rm model's held-out accuracy."""
        metrics = Path(self.target) / "metrics.json"
        if not metrics.is_file():
            return f"{self.name}: reward model {self.target}"
        values = json.loads(metrics.read_text())
        accuracy = values.get("pairwise_accuracy")
        if accuracy is None:
            return f"{self.name}: trained with train-rm (no held-out pairs)"
        gaps = values.get("eval_reward_gaps", [])
        ties = sum(probability_verdict(sigmoid(gap), self.band) is Verdict.TIE for gap in gaps)
        return (
            f"{self.name}: trained with `ctrlalign train-rm` on {values.get('train_pairs')} "
            f"pairs; held-out pairwise accuracy {100 * accuracy:.1f}% on "
            f"{values.get('eval_pairs')} pairs, {100 * ties / max(len(gaps), 1):.1f}% "
            f"of them in the tie band {list(self.band)}"
        )

    def _model(self):
        if self._judge is None:
            self._judge = RewardModelJudge(
                self.target, batch_size=self.batch_size, device=self.device
            )
        return self._judge

    def _key(self, prompt: str, answer: str) -> str:
        text = json.dumps([self.identity, prompt, answer], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def rewards(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        """Cached rewards; only (prompt, answer) pairs never scored go through the model."""
        keys = [self._key(p, a) for p, a in zip(prompts, answers, strict=True)]
        missing = list(
            {key: i for i, key in enumerate(keys) if self.cache.get(key) is None}.values()
        )
        chunks = range(0, len(missing), self.batch_size * 4)
        for start in tqdm(chunks, desc=f"scoring ({self.name})", disable=not missing):
            chunk = missing[start : start + self.batch_size * 4]
            scores = self._model().score([prompts[i] for i in chunk], [answers[i] for i in chunk])
            for i, score in zip(chunk, scores, strict=True):
                self.cache.put(keys[i], repr(score))
        return [float(self.cache.get(key)) for key in keys]

    def judge(self, comparisons: Sequence[Comparison]) -> Decisions:
        prompts = [comp.prompt for comp in comparisons]
        candidate = self.rewards(prompts, [comp.candidate for comp in comparisons])
        baseline = self.rewards(prompts, [comp.baseline for comp in comparisons])
        verdicts = [
            reward_verdict(c, b, self.band) for c, b in zip(candidate, baseline, strict=True)
        ]
        return Decisions(list(verdicts))
