"""The ``Judge`` interface every judge kind implements, and what judges share.

The runner asks every judge the same question, "candidate or baseline?", for many answer
pairs, over reruns and kills, so every judge caches what it decided in the report folder.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ctrlalign.evaluation.verdicts import DEFAULT_TIE_BAND, Comparison, Verdict

HUB = ("huggingface.co", 443)


class JudgeSpecError(ValueError):
    """A judge spec that cannot work: unknown kind, missing model, unreachable endpoint."""


@dataclass
class Decisions:
    """A judge's verdicts for a list of comparisons; None where it could not decide."""

    verdicts: list[Verdict | None]
    notes: list[str] = field(default_factory=list)

    def decided(self) -> list[Verdict]:
        return [verdict for verdict in self.verdicts if verdict is not None]


@dataclass(frozen=True)
class JudgeOptions:
    """Settings a judge kind may read (each kind takes the ones it needs)."""

    #: which of the paper's LLM-judge prompts: ``summary`` (TL;DR) or ``dialogue``
    task: str = "dialogue"
    #: the model name sent to an ``llm:`` endpoint
    judge_model: str | None = None
    #: a reward-model tie: sigmoid(r1 - r2) inside this band
    band: tuple[float, float] = DEFAULT_TIE_BAND
    batch_size: int = 8
    #: where a reward model scores (the policy's device, by default)
    device: str = "cpu"


class Judge(Protocol):
    """What the evaluation runner needs from a judge; nothing loads before ``check``."""

    kind: str
    name: str

    def check(self) -> None:
        """Fail now (``JudgeSpecError``) if the judge cannot work, before any generation."""

    def describe(self) -> str:
        """One line for the report: what this judge is and how far to trust it."""

    def judge(self, comparisons: Sequence[Comparison]) -> Decisions:
        """A verdict per comparison, from the candidate's point of view."""


class ReplyCache:
    """Judge replies in a JSON-lines file, appended as they arrive.

    Appending one line per reply keeps what an interrupted run already paid for; a torn last
    line (the process killed mid-write) is skipped on load and the pair is asked again.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._replies: dict[str, str] = {}
        if self.path is not None and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self._replies[entry["key"]] = entry["reply"]

    def get(self, key: str) -> str | None:
        return self._replies.get(key)

    def put(self, key: str, reply: str) -> None:
        self._replies[key] = reply
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n")


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
