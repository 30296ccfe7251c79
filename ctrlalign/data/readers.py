"""Format readers: the rows of a ``KIND:PATH_OR_ID`` source and the fields of each row.

Apart from ``loaders`` (which turns rows into the records of each kind) because this is
the part that knows about files and layouts: JSON Lines or one JSON list, gzip, a
byte-order mark, the hub, and the shapes a field may take (a prompt as a string or chat
messages, an HH-RLHF dialogue, a Topical-Chat context, a NeMo-Aligner ``text``). Every
problem is a ``DataError`` naming the file, the line (or list index) and the field; a row
left out on purpose raises ``Drop`` with its reason.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ctrlalign.data.records import DataError

Turns = tuple[tuple[str, str], ...]

KINDS = ("hh-rlhf", "pairwise", "preferences", "prompts", "scores", "labels", "attributes", "hf")

_JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_NEMO_START, _NEMO_TURN, _NEMO_END = "<extra_id_0>System", "<extra_id_1>", "<extra_id_2>"
_NEMO_ROLES = {"User": "user", "Assistant": "assistant"}
# NeMo-Aligner's 9 regression slots: 4 Open Assistant attributes (masked with -100 in
# HelpSteer2 rows), then HelpSteer2's own five.
_HELPSTEER_SLOTS = {
    4: "helpfulness",
    5: "correctness",
    6: "coherence",
    7: "complexity",
    8: "verbosity",
}
_HELPSTEER_MASK = -100


class Drop(Exception):
    """A row left out on purpose; ``reason`` is its key in ``PreferenceData.dropped``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Row:
    """One raw JSON object and where it came from."""

    data: dict[str, Any]
    where: str  # for errors: "data.jsonl line 3"
    source: str  # for Record.source: "data.jsonl:3"

    def error(self, field: str, problem: str) -> DataError:
        return DataError(f"{self.where}: field '{field}' {problem}")

    def get(self, field: str) -> Any:
        if field not in self.data:
            raise self.error(field, "is missing")
        return self.data[field]


class Scored(NamedTuple):
    row: Row
    prompt: Turns
    response: str
    scores: dict[str, float]
    scores_field: str


# --- Where rows come from -------------------------------------------------------------


def parse_spec(spec: str) -> tuple[str, str]:
    kind, sep, target = spec.partition(":")
    if not sep or kind not in KINDS:
        raise DataError(f"{spec!r}: expected KIND:PATH_OR_ID with KIND one of {', '.join(KINDS)}")
    if not target:
        raise DataError(f"{spec!r}: nothing after '{kind}:'")
    return kind, target


def file_rows(path: Path) -> list[Row]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        # utf-8-sig: a byte-order mark (as Windows editors write) is read as nothing
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8-sig") as stream:
                text = stream.read()
        else:
            text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({error})") from error
    rows = _json_list(path, text) if text.lstrip().startswith("[") else _json_lines(path, text)
    if not rows:
        raise DataError(f"{path}: holds no rows")
    return rows


def _json_lines(path: Path, text: str) -> list[Row]:
    rows = []
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 and similar breaks.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{where}: not valid JSON ({error.msg}, column {error.colno})"
            ) from None
        rows.append(_object(data, where, f"{path.name}:{number}"))
    return rows


def _json_list(path: Path, text: str) -> list[Row]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path} line {error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {_json_type(items)}")
    return [
        _object(item, f"{path} index {index}", f"{path.name}[{index}]")
        for index, item in enumerate(items)
    ]


def _object(data: Any, where: str, source: str) -> Row:
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a JSON object, got {_json_type(data)}")
    return Row(data, where, source)


def hub_rows(target: str) -> tuple[str, list[Row]]:
    """The rows of a Hugging Face dataset split and the file kind its columns match."""
    dataset_id, _, split = target.partition(":")
    split = split or "train"
    import datasets  # imported here: it takes seconds and only this kind needs it

    try:
        table = datasets.load_dataset(dataset_id, split=split)
    except Exception as error:  # missing ids, splits and networks raise many types
        raise DataError(
            f"hf:{dataset_id} split {split!r}: cannot load ({type(error).__name__}: {error})"
        ) from error
    columns = set(table.column_names)
    if {"prompt", "chosen", "rejected"} <= columns:
        kind = "pairwise"
    elif {"chosen", "rejected"} <= columns:
        kind = "hh-rlhf"
    else:
        raise DataError(
            f"hf:{dataset_id}: columns {sorted(columns)} match no layout; expected "
            "'chosen'/'rejected' dialogues (HH-RLHF) or 'prompt'/'chosen'/'rejected'"
        )
    name = f"{dataset_id}:{split}"
    return kind, [
        Row(dict(item), f"hf:{name} row {index}", f"{name}[{index}]")
        for index, item in enumerate(table)
    ]


# --- Fields ---------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def string_field(row: Row, value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise row.error(field, f"must be a string, got {_json_type(value)}")
    return value.strip()


def number_field(row: Row, value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise row.error(field, f"must be a finite number, got {json.dumps(value)}")
    return float(value)


def _messages(row: Row, value: list, field: str) -> Turns:
    turns = []
    for index, message in enumerate(value):
        path = f"{field}[{index}]"
        if not isinstance(message, dict):
            raise row.error(
                path, f"must be an object with role and content, got {_json_type(message)}"
            )
        for key in ("role", "content"):
            if key not in message:
                raise row.error(f"{path}.{key}", "is missing")
        turns.append(
            (
                string_field(row, message["role"], f"{path}.role"),
                string_field(row, message["content"], f"{path}.content"),
            )
        )
    return tuple(turns)


def _nonempty(row: Row, turns: Turns, field: str) -> Turns:
    if not any(content for _, content in turns):
        raise row.error(field, "has an empty prompt")
    return turns


def prompt_turns(row: Row, field: str = "prompt") -> Turns:
    value = row.get(field)
    if isinstance(value, str):
        turns: Turns = (("user", value.strip()),)
    elif isinstance(value, list):
        turns = _messages(row, value, field)
    else:
        raise row.error(field, f"must be a string or a list of messages, got {_json_type(value)}")
    return _nonempty(row, turns, field)


def exchange(row: Row, field: str) -> tuple[Turns, str]:
    """The prompt turns and the response that ``field`` holds.

    A string is a reply to ``prompt``. A message list must end with the assistant reply:
    when it holds earlier turns too (UltraFeedback's [user, assistant], LLaMA-Factory's
    ``messages``) they are the prompt and a ``prompt`` field is ignored; a lone reply (TRL's
    explicit-prompt format) answers ``prompt``. The response may be empty; callers drop it.
    """
    value = row.get(field)
    if isinstance(value, str):
        return prompt_turns(row), value.strip()
    if not isinstance(value, list):
        raise row.error(field, f"must be a string or a list of messages, got {_json_type(value)}")
    turns = _messages(row, value, field)
    if not turns or turns[-1][0] != "assistant":
        raise row.error(field, "must end with an assistant message")
    prompt = _nonempty(row, turns[:-1], field) if len(turns) > 1 else prompt_turns(row)
    return prompt, turns[-1][1]


def hh_side(row: Row, field: str) -> tuple[Turns, str]:
    """Split an HH-RLHF dialogue at its last assistant turn into prompt turns and reply."""
    head, sep, response = string_field(row, row.get(field), field).rpartition("\n\nAssistant:")
    if not sep:
        raise row.error(field, "has no '\\n\\nAssistant:' turn")
    parts = _HH_TURN.split("\n\n" + head.lstrip())
    if parts[0].strip():
        raise row.error(field, "does not start with a 'Human:' turn")
    turns = tuple(
        (_HH_ROLES[role], content.strip())
        for role, content in zip(parts[1::2], parts[2::2], strict=True)
    )
    return _nonempty(row, turns, field), response.strip()


def kept_response(text: str) -> str:
    if not text:
        raise Drop("empty_response")
    return text


def reference_of(row: Row) -> str | None:
    value = row.data.get("reference")
    return None if value is None else string_field(row, value, "reference") or None


# --- Layouts of scored responses (attributes data) ------------------------------------


def scored_response(row: Row) -> Scored:
    """One response with its attribute scores, from any of the three layouts."""
    if "system_output" in row.data:  # USR Topical-Chat
        scores = _score_dict(row, "scores")
        prompt = _dialogue(row, "source")
        response = string_field(row, row.get("system_output"), "system_output")
        return Scored(row, prompt, kept_response(response), scores, "scores")
    if "text" in row.data:  # NeMo-Aligner regression reward-model rows (HelpSteer2)
        scores = _helpsteer_scores(row)
        prompt, response = _nemo_chat(row)
        return Scored(row, prompt, kept_response(response), scores, "label")
    scores = _score_dict(row, "scores")
    prompt, response = exchange(row, "response")
    return Scored(row, prompt, kept_response(response), scores, "scores")


def _score_dict(row: Row, field: str) -> dict[str, float]:
    value = row.get(field)
    if not isinstance(value, dict) or not value:
        raise row.error(field, f"must be a non-empty object of numbers, got {json.dumps(value)}")
    return {name: number_field(row, score, f"{field}.{name}") for name, score in value.items()}


def _dialogue(row: Row, field: str) -> Turns:
    """Topical-Chat context, one turn a line, as chat turns ending with the user's."""
    lines = [line.strip() for line in string_field(row, row.get(field), field).split("\n")]
    lines = [line for line in lines if line]
    roles = ("user", "assistant")
    turns = tuple((roles[(len(lines) - 1 - i) % 2], line) for i, line in enumerate(lines))
    return _nonempty(row, turns, field)


def _nemo_chat(row: Row) -> tuple[Turns, str]:
    """``<extra_id_0>System\\n..<extra_id_1>User\\n..<extra_id_1>Assistant\\n..<extra_id_2>``."""
    text = string_field(row, row.get("text"), "text")
    if not text.startswith(_NEMO_START) or not text.endswith(_NEMO_END):
        raise row.error("text", f"must start with '{_NEMO_START}' and end with '{_NEMO_END}'")
    system, *parts = text[len(_NEMO_START) : -len(_NEMO_END)].split(_NEMO_TURN)
    turns = [("system", system.strip())] if system.strip() else []
    for part in parts:
        role, _, content = part.partition("\n")
        if role.strip() not in _NEMO_ROLES:
            raise row.error("text", f"has a turn by {role.strip()!r}, not User or Assistant")
        turns.append((_NEMO_ROLES[role.strip()], content.strip()))
    if not turns or turns[-1][0] != "assistant":
        raise row.error("text", "must end with an Assistant turn")
    return _nonempty(row, tuple(turns[:-1]), "text"), turns[-1][1]


def _helpsteer_scores(row: Row) -> dict[str, float]:
    label = row.get("label")
    if not isinstance(label, list) or len(label) != 9:
        raise row.error("label", f"must be a list of 9 numbers, got {json.dumps(label)}")
    return {
        name: number_field(row, label[slot], f"label[{slot}]")
        for slot, name in _HELPSTEER_SLOTS.items()
        if label[slot] != _HELPSTEER_MASK
    }
