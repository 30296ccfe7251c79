"""Judge specs (``rm:DIR_OR_ID``, ``llm:URL``) and judges that remember what they decided.

The runner asks every judge the same question, "candidate or baseline?", for many answer
pairs, over reruns and kills. Both judges here cache in the report folder: the LLM judge
its replies (``llm_judge.ReplyCache``), the reward-model judge each answer's reward, keyed
by the model, the prompt and the answer, so a baseline answer is scored once however many
candidates meet it, and a rerun scores nothing it scored before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ctrlalign.evaluation.llm_judge import LLMJudge, ReplyCache
from ctrlalign.evaluation.verdicts import DEFAULT_TIE_BAND, Comparison, Verdict, reward_verdict

log = logging.getLogger(__name__)

JUDGE_KINDS = ("rm", "llm")
HUB = ("huggingface.co", 443)


class JudgeSpecError(ValueError):
    """A judge spec that cannot work: unknown kind, missing model, unreachable endpoint."""


def parse_judge_spec(spec: str) -> tuple[str, str]:
    """``KIND:TARGET`` -> (kind, target), with KIND one of ``JUDGE_KINDS``."""
    kind, sep, target = spec.partition(":")
    if not sep or kind not in JUDGE_KINDS or not target:
        raise JudgeSpecError(
            f"judge {spec!r}: expected rm:DIR_OR_HF_ID or llm:URL (kinds: {', '.join(JUDGE_KINDS)})"
        )
    return kind, target


def hub_model_available(model_id: str, timeout: float = 3.0) -> bool:
    """Whether a hub id can load here: in the local HF cache, or the hub answers at all.

    Without this check an offline ``from_pretrained`` spends about a minute in retries
    before failing.
    """
    from huggingface_hub import try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
            return True
    except ValueError:  # not shaped like a hub id at all
        return False
    try:
        socket.create_connection(HUB, timeout=timeout).close()
    except OSError:
        return False
    return True


@dataclass
class Decisions:
    """A judge's verdicts for a list of comparisons; None where it could not decide."""

    verdicts: list[Verdict | None]
    notes: list[str] = field(default_factory=list)

    def decided(self) -> list[Verdict]:
        return [verdict for verdict in self.verdicts if verdict is not None]


class CachedRewardJudge:
    """``RewardModelJudge`` plus a per-answer reward cache; the model loads on first need."""

    kind = "rm"

    def __init__(
        self,
        target: str,
        cache_path: Path,
        band: tuple[float, float] = DEFAULT_TIE_BAND,
        batch_size: int = 8,
    ) -> None:
        self.target = target
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
        return (
            f"{self.name}: trained with `ctrlalign train-rm` on {values.get('train_pairs')} "
            f"pairs; held-out pairwise accuracy {100 * accuracy:.1f}% on "
            f"{values.get('eval_pairs')} pairs, {100 * values.get('tie_band_share', 0):.1f}% "
            "of them in the tie band"
        )

    def _model(self):
        if self._judge is None:
            from ctrlalign.evaluation.rm_judge import RewardModelJudge

            self._judge = RewardModelJudge(self.target, batch_size=self.batch_size)
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


class CachedLLMJudge:
    """``LLMJudge`` with its reply cache in the report folder; undecided pairs stay None."""

    kind = "llm"

    def __init__(self, url: str, model: str | None, task: str, cache_path: Path) -> None:
        try:
            self.llm = LLMJudge(task, base_url=url, model=model, cache_path=cache_path)
        except ValueError as err:
            raise JudgeSpecError(
                f"judge llm:{url}: {err} (on the command line: --judge-model NAME)"
            ) from err
        self.name = f"llm:{self.llm.model}"

    def check(self) -> None:
        try:
            self.llm.check_reachable()
        except ConnectionError as err:
            raise JudgeSpecError(str(err)) from err

    def describe(self) -> str:
        return (
            f"{self.name}: {self.llm.task} prompt of the paper's appendix C at {self.llm.base_url}"
        )

    def judge(self, comparisons: Sequence[Comparison]) -> Decisions:
        run = self.llm.judge(comparisons)
        return Decisions([pair.verdict for pair in run.pairs], [run.summary()])


Judge = CachedRewardJudge | CachedLLMJudge


def build_judge(
    spec: str,
    cache_dir: Path,
    task: str,
    judge_model: str | None = None,
    band: tuple[float, float] = DEFAULT_TIE_BAND,
    batch_size: int = 8,
) -> Judge:
    """A judge for ``spec``; nothing is loaded or contacted until ``check`` or ``judge``."""
    kind, target = parse_judge_spec(spec)
    if kind == "rm":
        return CachedRewardJudge(target, cache_dir / "rm_rewards.jsonl", band, batch_size)
    return CachedLLMJudge(target, judge_model, task, cache_dir / "llm_replies.jsonl")
