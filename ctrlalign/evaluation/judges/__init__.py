"""Judges: ``KIND:TARGET`` specs, the ``JUDGES`` registry (kind to builder), and the kinds.

- ``rm:DIR_OR_HF_ID``: a reward model, the paper's tie band (``rm.py``);
- ``llm:URL``: the paper's GPT-4 prompts sent to an OpenAI-compatible endpoint (``llm.py``);
- ``attr:NAME``: a measured attribute of each answer, offline (``attr.py``).

A new kind is a module with a class implementing ``base.Judge`` and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ctrlalign.evaluation.judges.attr import ATTRIBUTES, AttributeJudge
from ctrlalign.evaluation.judges.base import (
    Decisions,
    Judge,
    JudgeOptions,
    JudgeSpecError,
    hub_model_available,
)
from ctrlalign.evaluation.judges.llm import CachedLLMJudge
from ctrlalign.evaluation.judges.rm import CachedRewardJudge, RewardModelJudge

Scorer = RewardModelJudge | AttributeJudge


@dataclass(frozen=True)
class JudgeKind:
    usage: str
    #: (target, folder for its cache, options) -> a judge that has loaded nothing yet
    build: Callable[[str, Path, JudgeOptions], Judge]
    #: (target, device) -> a scorer of single answers (``alpha-sweep``); None for the
    #: pairwise-only kinds
    scorer: Callable[[str, torch.device | str], Scorer] | None = None


def _attribute_scorer(target: str, device: torch.device | str) -> AttributeJudge:
    judge = AttributeJudge(target)
    judge.check()
    return judge


JUDGES: dict[str, JudgeKind] = {
    "rm": JudgeKind(
        "rm:DIR_OR_HF_ID",
        lambda target, cache, o: CachedRewardJudge(
            target, cache / "rm_rewards.jsonl", o.band, o.batch_size, o.device
        ),
        lambda target, device: RewardModelJudge(target, device=device),
    ),
    "llm": JudgeKind(
        "llm:URL",
        lambda target, cache, o: CachedLLMJudge(
            target, o.judge_model, o.task, cache / "llm_replies.jsonl"
        ),
    ),
    "attr": JudgeKind(
        f"attr:{'|'.join(ATTRIBUTES)}",
        lambda target, c, o: AttributeJudge(target),
        _attribute_scorer,
    ),
}


def judge_usages(scoring: bool = False) -> str:
    """``rm:DIR_OR_HF_ID or llm:URL or ...`` from ``JUDGES`` (for help and errors, so a new
    kind is listed everywhere); ``scoring``: only the kinds that score single answers."""
    return " or ".join(k.usage for k in JUDGES.values() if not scoring or k.scorer is not None)


def parse_judge_spec(spec: str) -> tuple[str, str]:
    """``KIND:TARGET`` -> (kind, target), with KIND a key of ``JUDGES``."""
    kind, sep, target = spec.partition(":")
    if not sep or kind not in JUDGES or not target:
        raise JudgeSpecError(
            f"judge {spec!r}: expected {judge_usages()} (kinds: {', '.join(JUDGES)})"
        )
    return kind, target


def build_judge(spec: str, cache_dir: Path, options: JudgeOptions | None = None) -> Judge:
    """A judge for ``spec``; nothing is loaded or contacted until ``check`` or ``judge``."""
    kind, target = parse_judge_spec(spec)
    return JUDGES[kind].build(target, cache_dir, options or JudgeOptions())


def reward_scorer(spec: str | None, device: torch.device | str = "cpu") -> Scorer | None:
    """A scorer of single answers (``alpha-sweep``) for ``spec``, of a kind with a
    ``scorer`` (``rm:``, a reward model; ``attr:``, the attribute); None -> no scores.
    Pairwise-only kinds (``llm:``) cannot score one answer."""
    if spec is None:
        return None
    kind, _, target = spec.partition(":")
    entry = JUDGES.get(kind)
    if entry is None or entry.scorer is None or not target:
        raise JudgeSpecError(f"--judge must be {judge_usages(scoring=True)}, got {spec!r}")
    return entry.scorer(target, device)


__all__ = [
    "ATTRIBUTES",
    "JUDGES",
    "Decisions",
    "Judge",
    "JudgeOptions",
    "JudgeSpecError",
    "build_judge",
    "hub_model_available",
    "judge_usages",
    "parse_judge_spec",
    "reward_scorer",
]
