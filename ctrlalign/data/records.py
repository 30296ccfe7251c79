"""The one record every loader produces and every recipe consumes.

A record is a prompt plus one response per preference it has evidence for. Pairwise data
(HH-RLHF, TL;DR, UltraFeedback) gives ``{"good": chosen, "bad": rejected}``; pointwise data
gives one response labelled with its quantised level; the demo gives ``concise`` and
``detailed``; jointly read attributes give one response under the key of all its levels
at once, ``helpfulness-3+verbosity-1`` (``blend_parts``). Keeping responses keyed by
preference lets MEET train any number of controls, while DPO reads the same record as a
(chosen, rejected) pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

Message = dict[str, str]


class DataError(ValueError):
    """Bad input data; the message names the file, line and field."""


@dataclass(frozen=True)
class Record:
    """One prompt (as chat messages) with responses keyed by preference name."""

    messages: tuple[tuple[str, str], ...]
    responses: dict[str, str]
    reference: str | None = None
    source: str = ""

    @property
    def chat(self) -> list[Message]:
        return [{"role": role, "content": content} for role, content in self.messages]

    @property
    def prompt_text(self) -> str:
        """The last user turn: what a judge or a table shows as "the prompt"."""
        users = [content for role, content in self.messages if role == "user"]
        return users[-1] if users else self.messages[-1][1]

    def key(self) -> tuple:
        return (self.messages, tuple(sorted(self.responses.items())))


def blend_parts(key: str, known: Sequence[str] = ()) -> list[str]:
    """The preferences a response key stands for: the key itself when it is a preference
    (``known``), else the parts of a joint key ``a+b``."""
    return [key] if key in known else key.split("+")


@dataclass
class PreferenceData:
    """Records plus what a user must know about how they were read.

    ``pairwise`` is true when every record holds exactly a chosen and a rejected response
    (the only shape DPO and reward-model training accept). ``dropped`` counts records left
    out, by reason, so a CLI can report them instead of losing them silently.
    """

    records: list[Record]
    preferences: list[str]
    pairwise: bool
    chosen: str | None = None
    rejected: str | None = None
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)


#: how TL;DR prompts end (OpenAI's summarize-from-feedback layout, which the TL;DR data use)
SUMMARY_CUE = "TL;DR:"


def data_task(records: list[Record]) -> str:
    """``summary`` when every prompt is a post ending in the TL;DR cue, else ``dialogue``.

    The task picks defaults that depend on what is being answered (CoH's "A good summary
    is" against "A good conversation is"), so a TL;DR run gets the paper's texts unasked.
    """
    if records and all(r.prompt_text.rstrip().endswith(SUMMARY_CUE) for r in records):
        return "summary"
    return "dialogue"


_SPEAKERS = {"user": "Human", "assistant": "Assistant", "system": "System"}


def judge_prompt(record: Record) -> str:
    """The prompt as judges (and ``train-rm``) read it: the post, or the whole dialogue.

    A single message (a TL;DR post) is shown as it is. A dialogue keeps every turn, labelled
    as HH-RLHF writes them, because its last user turn alone ("I'll use some just in case")
    does not say what a good answer is.
    """
    if len(record.messages) == 1:
        return record.messages[0][1]
    return "\n\n".join(
        f"{_SPEAKERS.get(role, role.capitalize())}: {content}" for role, content in record.messages
    )
