"""Read every preference-data layout the field publishes into one ``PreferenceData``.

Why this module exists: MEET, the baselines and the evaluation harness all consume
``Record`` objects, but public preference data arrives in half a dozen layouts (HH-RLHF
whole dialogues, prompt/chosen/rejected pairs holding strings or chat messages, pointwise
scores, KTO desirable/undesirable labels, several scored attributes per response). Parsing
them here, once, keeps recipes free of file handling, and a bad file fails before training
with one message naming the file, the line (or list index) and the field.

A spec is ``KIND:PATH_OR_ID``:

- ``hh-rlhf:PATH`` rows with ``chosen``/``rejected`` dialogues ``\\n\\nHuman: ...\\n\\nAssistant:
  ...``; each is split at its last ``\\n\\nAssistant:`` into prompt turns and response.
- ``pairwise:PATH`` rows with ``prompt``, ``chosen``, ``rejected`` and an optional
  ``reference``; see ``_exchange`` for the string and chat-message shapes accepted.
- ``preferences:PATH`` rows with ``prompt`` and ``responses``, an object mapping each
  preference name to its response (any number of preferences, e.g. the demo's ``concise``
  and ``detailed``); ``chosen``/``rejected`` name two of them when they exist, and when
  every record holds exactly those two the data are pairs too (DPO, CLM). A key
  joining names with ``+`` (``concise+warm``) is a joint record: its response answers all
  those preferences at once, and each of them is a preference of the data.
- ``prompts:PATH`` rows with ``prompt`` and an optional ``reference``: records without
  responses, for generation and evaluation.
- ``scores:PATH`` rows with ``prompt``, ``response`` and a numeric ``score``, quantised into
  ``levels`` preferences ``level-0`` (lowest) .. ``level-{K-1}`` (highest), as Quark does.
- ``labels:PATH`` KTO data: LLaMA-Factory's ``messages`` + boolean ``label`` or TRL's
  ``prompt``, ``completion``, ``label``; true gives the ``chosen`` name, false ``rejected``.
- ``attributes:PATH`` several scores per response, as SteerLM uses: USR Topical-Chat
  (``source`` dialogue, ``system_output``, ``scores``), the generic ``prompt``, ``response``,
  ``scores`` or NeMo-Aligner's regression reward-model layout (HelpSteer2's ``text`` and
  ``label``). Each attribute is quantised on its own into ``{attribute}-{level}`` names and
  every response gives one record per attribute, or with ``joint`` one record whose key
  is the blend of all its levels (``helpfulness-3+verbosity-1``), trained with all those
  controls at once so that inference may ask for any combination.
- ``hf:DATASET_ID[:SPLIT]`` a Hugging Face dataset (split ``train`` by default) read with
  ``datasets.load_dataset``, which caches it as usual; columns ``prompt``/``chosen``/
  ``rejected`` are read as ``pairwise``, ``chosen``/``rejected`` alone as ``hh-rlhf``.

Files may be JSON Lines or one JSON list, optionally gzip-compressed (``.gz``). Reading
files writes nothing. Text is stripped of surrounding whitespace. Rows are left out, and
counted in ``PreferenceData.dropped`` under the reason, when a pair's two prompts differ
(``prompt_mismatch``), a response is empty (``empty_response``: the public HH-RLHF and
UltraFeedback files hold a few) or a record repeats an earlier one (``duplicate``); only
reasons that occurred appear. Pointwise preference lists run from the highest level to the
lowest.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ctrlalign.data.records import DataError, PreferenceData, Record, blend_parts

Turns = tuple[tuple[str, str], ...]
_T = TypeVar("_T")

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


class _Drop(Exception):
    """A row left out on purpose; ``reason`` is its key in ``PreferenceData.dropped``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Row:
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


class _Scored(NamedTuple):
    row: _Row
    prompt: Turns
    response: str
    scores: dict[str, float]
    scores_field: str


def load_preference_data(
    spec: str,
    *,
    levels: int = 2,
    attributes: list[str] | None = None,
    chosen: str = "good",
    rejected: str = "bad",
    joint: bool = False,
) -> PreferenceData:
    """Load ``KIND:PATH_OR_ID`` (see the module docstring) into records.

    ``levels`` is the number of quantised levels for ``scores`` and ``attributes`` data;
    ``attributes`` keeps only those attributes of ``attributes`` data, ``joint`` gives each
    of its responses one record under the blend of all its levels; ``chosen`` and
    ``rejected`` name the two preferences of pairwise and ``labels`` data. Raises
    ``DataError`` for a bad spec, a missing file or bad rows.
    """
    kind, target = _parse_spec(spec)
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    if not chosen or not rejected or chosen == rejected:
        raise ValueError(f"chosen and rejected must be two names, got {chosen!r}, {rejected!r}")
    if attributes is not None and (kind != "attributes" or not attributes):
        raise ValueError("attributes= must name attributes, and only for attributes: specs")
    if joint and kind != "attributes":
        raise ValueError(f"joint attributes need attributes: data, not {kind}:")
    if kind == "hf":
        kind, rows = _hub_rows(target)
    else:
        rows = _file_rows(Path(target))

    if kind in ("hh-rlhf", "pairwise"):
        side = _hh_side if kind == "hh-rlhf" else _exchange
        records, dropped = _parse_all(rows, lambda row: _pair(row, side, chosen, rejected))
        return _finish(records, dropped, [chosen, rejected], True, chosen, rejected)
    if kind == "preferences":
        records, dropped = _parse_all(rows, _keyed)
        names = list(dict.fromkeys(p for r in records for k in r.responses for p in blend_parts(k)))
        pair = chosen in names and rejected in names
        # every record holding exactly the two: pairs as well (DPO, CLM, reward models)
        pairs = pair and all(set(r.responses) == {chosen, rejected} for r in records)
        return _finish(records, dropped, names, pairs, *((chosen, rejected) if pair else ()))
    if kind == "prompts":
        records, dropped = _parse_all(rows, _prompt_only)
        return _finish(records, dropped, [], False)
    if kind == "labels":
        records, dropped = _parse_all(rows, lambda row: _labelled(row, chosen, rejected))
        return _finish(records, dropped, [chosen, rejected], False, chosen, rejected)
    if kind == "scores":
        return _quantised_scores(rows, levels)
    return _quantised_attributes(rows, levels, attributes, joint)


def split_records(
    data: PreferenceData, eval_fraction: float, seed: int
) -> tuple[PreferenceData, PreferenceData]:
    """Split into (train, eval) by prompt, reproducibly for a given ``seed``.

    Distinct prompts are shuffled with ``random.Random(seed)`` and the first
    ``round(eval_fraction * prompts)`` go to eval, so records sharing a prompt (several
    responses to one post, one record per attribute) stay on one side and evaluation never
    sees a training prompt. Record order is kept within each part; both parts keep the
    loading metadata, ``dropped`` included.
    """
    if not 0 <= eval_fraction <= 1:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    prompts = list(dict.fromkeys(record.messages for record in data.records))
    random.Random(seed).shuffle(prompts)
    held_out = set(prompts[: round(eval_fraction * len(prompts))])

    def part(records: list[Record]) -> PreferenceData:
        return replace(
            data,
            records=records,
            preferences=list(data.preferences),
            dropped=dict(data.dropped),
        )

    return (
        part([r for r in data.records if r.messages not in held_out]),
        part([r for r in data.records if r.messages in held_out]),
    )


# --- Where rows come from -------------------------------------------------------------


def _parse_spec(spec: str) -> tuple[str, str]:
    kind, sep, target = spec.partition(":")
    if not sep or kind not in KINDS:
        raise DataError(f"{spec!r}: expected KIND:PATH_OR_ID with KIND one of {', '.join(KINDS)}")
    if not target:
        raise DataError(f"{spec!r}: nothing after '{kind}:'")
    return kind, target


def _file_rows(path: Path) -> list[_Row]:
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


def _json_lines(path: Path, text: str) -> list[_Row]:
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


def _json_list(path: Path, text: str) -> list[_Row]:
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


def _object(data: Any, where: str, source: str) -> _Row:
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a JSON object, got {_json_type(data)}")
    return _Row(data, where, source)


def _hub_rows(target: str) -> tuple[str, list[_Row]]:
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
        _Row(dict(item), f"hf:{name} row {index}", f"{name}[{index}]")
        for index, item in enumerate(table)
    ]


# --- Fields ---------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _text(row: _Row, value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise row.error(field, f"must be a string, got {_json_type(value)}")
    return value.strip()


def _number(row: _Row, value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise row.error(field, f"must be a finite number, got {json.dumps(value)}")
    return float(value)


def _messages(row: _Row, value: list, field: str) -> Turns:
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
                _text(row, message["role"], f"{path}.role"),
                _text(row, message["content"], f"{path}.content"),
            )
        )
    return tuple(turns)


def _nonempty(row: _Row, turns: Turns, field: str) -> Turns:
    if not any(content for _, content in turns):
        raise row.error(field, "has an empty prompt")
    return turns


def _prompt(row: _Row, field: str = "prompt") -> Turns:
    value = row.get(field)
    if isinstance(value, str):
        turns: Turns = (("user", value.strip()),)
    elif isinstance(value, list):
        turns = _messages(row, value, field)
    else:
        raise row.error(field, f"must be a string or a list of messages, got {_json_type(value)}")
    return _nonempty(row, turns, field)


def _exchange(row: _Row, field: str) -> tuple[Turns, str]:
    """The prompt turns and the response that ``field`` holds.

    A string is a reply to ``prompt``. A message list must end with the assistant reply:
    when it holds earlier turns too (UltraFeedback's [user, assistant], LLaMA-Factory's
    ``messages``) they are the prompt and a ``prompt`` field is ignored; a lone reply (TRL's
    explicit-prompt format) answers ``prompt``. The response may be empty; callers drop it.
    """
    value = row.get(field)
    if isinstance(value, str):
        return _prompt(row), value.strip()
    if not isinstance(value, list):
        raise row.error(field, f"must be a string or a list of messages, got {_json_type(value)}")
    turns = _messages(row, value, field)
    if not turns or turns[-1][0] != "assistant":
        raise row.error(field, "must end with an assistant message")
    prompt = _nonempty(row, turns[:-1], field) if len(turns) > 1 else _prompt(row)
    return prompt, turns[-1][1]


def _hh_side(row: _Row, field: str) -> tuple[Turns, str]:
    """Split an HH-RLHF dialogue at its last assistant turn into prompt turns and reply."""
    head, sep, response = _text(row, row.get(field), field).rpartition("\n\nAssistant:")
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


def _response(text: str) -> str:
    if not text:
        raise _Drop("empty_response")
    return text


def _reference(row: _Row) -> str | None:
    value = row.data.get("reference")
    return None if value is None else _text(row, value, "reference") or None


# --- Records per kind -----------------------------------------------------------------


def _parse_all(rows: Iterable[_Row], parse: Callable[[_Row], _T]) -> tuple[list[_T], Counter]:
    parsed, dropped = [], Counter()
    for row in rows:
        try:
            parsed.append(parse(row))
        except _Drop as drop:
            dropped[drop.reason] += 1
    return parsed, dropped


def _finish(
    records: list[Record],
    dropped: Counter,
    preferences: list[str],
    pairwise: bool,
    chosen: str | None = None,
    rejected: str | None = None,
) -> PreferenceData:
    unique: dict[tuple, Record] = {}
    for record in records:
        if record.key() in unique:
            dropped["duplicate"] += 1
        else:
            unique[record.key()] = record
    return PreferenceData(
        list(unique.values()), preferences, pairwise, chosen, rejected, dict(dropped)
    )


def _pair(
    row: _Row, side: Callable[[_Row, str], tuple[Turns, str]], chosen: str, rejected: str
) -> Record:
    (prompt, good), (other_prompt, bad) = side(row, "chosen"), side(row, "rejected")
    reference = _reference(row)
    if prompt != other_prompt:
        raise _Drop("prompt_mismatch")
    return Record(
        prompt, {chosen: _response(good), rejected: _response(bad)}, reference, row.source
    )


def _keyed(row: _Row) -> Record:
    responses = row.get("responses")
    if not isinstance(responses, dict) or not responses:
        raise row.error("responses", "must be an object mapping preference names to responses")
    texts = {str(p): _response(_text(row, t, f"responses.{p}")) for p, t in responses.items()}
    return Record(_prompt(row), texts, _reference(row), row.source)


def _prompt_only(row: _Row) -> Record:
    return Record(_prompt(row), {}, _reference(row), row.source)


def _labelled(row: _Row, chosen: str, rejected: str) -> Record:
    label = row.get("label")
    if not isinstance(label, bool):
        raise row.error("label", f"must be true or false, got {json.dumps(label)}")
    prompt, response = _exchange(row, "messages" if "messages" in row.data else "completion")
    return Record(prompt, {chosen if label else rejected: _response(response)}, None, row.source)


def _quantise(scores: list[float], levels: int) -> list[int]:
    """Each score's level 0..levels-1 by rank over all scores.

    Like Quark, which sorts rewards and cuts them into equal groups, but tied scores share
    a level: a tie group goes where its middle rank falls, so levels stay about equal in
    size without giving identical scores different labels.
    """
    ordered, count = sorted(scores), len(scores)
    return [
        levels * (bisect_left(ordered, s) + bisect_right(ordered, s) - 1) // (2 * count)
        for s in scores
    ]


def _quantised_scores(rows: list[_Row], levels: int) -> PreferenceData:
    def parse(row: _Row) -> tuple[_Row, Turns, str, float]:
        score = _number(row, row.get("score"), "score")
        prompt, response = _exchange(row, "response")
        return row, prompt, _response(response), score

    items, dropped = _parse_all(rows, parse)
    names = [f"level-{level}" for level in range(levels)]
    records = [
        Record(prompt, {names[level]: response}, None, row.source)
        for (row, prompt, response, _), level in zip(
            items, _quantise([score for *_, score in items], levels), strict=True
        )
    ]
    return _finish(records, dropped, names[::-1], False, names[-1], names[0])


def _quantised_attributes(
    rows: list[_Row], levels: int, wanted: list[str] | None, joint: bool = False
) -> PreferenceData:
    items, dropped = _parse_all(rows, _scored)
    names = list(wanted or (items[0].scores if items else []))
    if joint:
        for name in names:
            if "+" in name:
                raise DataError(f"attribute {name!r}: a joint record's key joins names with '+'")
    for item in items:
        for name in names:
            if name not in item.scores:
                raise item.row.error(
                    item.scores_field,
                    f"has no score for '{name}' (it has: {', '.join(item.scores)})",
                )
    level_of = {name: _quantise([item.scores[name] for item in items], levels) for name in names}
    keys = [[f"{name}-{level_of[name][index]}" for name in names] for index in range(len(items))]
    records = [
        Record(item.prompt, {key: item.response}, None, item.row.source)
        for item, item_keys in zip(items, keys, strict=True)
        for key in (["+".join(item_keys)] if joint else item_keys)
    ]
    preferences = [f"{name}-{level}" for name in names for level in reversed(range(levels))]
    if len(names) == 1:
        return _finish(records, dropped, preferences, False, preferences[0], preferences[-1])
    return _finish(records, dropped, preferences, False)


def _scored(row: _Row) -> _Scored:
    """One response with its attribute scores, from any of the three layouts."""
    if "system_output" in row.data:  # USR Topical-Chat
        scores = _score_dict(row, "scores")
        prompt = _dialogue(row, "source")
        response = _text(row, row.get("system_output"), "system_output")
        return _Scored(row, prompt, _response(response), scores, "scores")
    if "text" in row.data:  # NeMo-Aligner regression reward-model rows (HelpSteer2)
        scores = _helpsteer_scores(row)
        prompt, response = _nemo_chat(row)
        return _Scored(row, prompt, _response(response), scores, "label")
    scores = _score_dict(row, "scores")
    prompt, response = _exchange(row, "response")
    return _Scored(row, prompt, _response(response), scores, "scores")


def _score_dict(row: _Row, field: str) -> dict[str, float]:
    value = row.get(field)
    if not isinstance(value, dict) or not value:
        raise row.error(field, f"must be a non-empty object of numbers, got {json.dumps(value)}")
    return {name: _number(row, score, f"{field}.{name}") for name, score in value.items()}


def _dialogue(row: _Row, field: str) -> Turns:
    """Topical-Chat context, one turn a line, as chat turns ending with the user's."""
    lines = [line.strip() for line in _text(row, row.get(field), field).split("\n")]
    lines = [line for line in lines if line]
    roles = ("user", "assistant")
    turns = tuple((roles[(len(lines) - 1 - i) % 2], line) for i, line in enumerate(lines))
    return _nonempty(row, turns, field)


def _nemo_chat(row: _Row) -> tuple[Turns, str]:
    """``<extra_id_0>System\\n..<extra_id_1>User\\n..<extra_id_1>Assistant\\n..<extra_id_2>``."""
    text = _text(row, row.get("text"), "text")
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


def _helpsteer_scores(row: _Row) -> dict[str, float]:
    label = row.get("label")
    if not isinstance(label, list) or len(label) != 9:
        raise row.error("label", f"must be a list of 9 numbers, got {json.dumps(label)}")
    return {
        name: _number(row, label[slot], f"label[{slot}]")
        for slot, name in _HELPSTEER_SLOTS.items()
        if label[slot] != _HELPSTEER_MASK
    }
