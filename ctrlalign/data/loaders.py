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
  ``reference``; see ``readers.exchange`` for the string and chat-message shapes accepted.
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

Files may be JSON Lines or one JSON list, optionally gzip-compressed (``.gz``); reading
them (and every field) is ``readers``'s job, cutting scores into levels ``partition``'s.
Reading files writes nothing. Text is stripped of surrounding whitespace. Rows are left out, and
counted in ``PreferenceData.dropped`` under the reason, when a pair's two prompts differ
(``prompt_mismatch``), a response is empty (``empty_response``: the public HH-RLHF and
UltraFeedback files hold a few) or a record repeats an earlier one (``duplicate``); only
reasons that occurred appear. Pointwise preference lists run from the highest level to the
lowest.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from ctrlalign.data.partition import quantise
from ctrlalign.data.readers import (
    Drop,
    Row,
    Turns,
    exchange,
    file_rows,
    hh_side,
    hub_rows,
    kept_response,
    number_field,
    parse_spec,
    prompt_turns,
    reference_of,
    scored_response,
    string_field,
)
from ctrlalign.data.records import DataError, PreferenceData, Record, blend_parts

_T = TypeVar("_T")


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
    kind, target = parse_spec(spec)
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    if not chosen or not rejected or chosen == rejected:
        raise ValueError(f"chosen and rejected must be two names, got {chosen!r}, {rejected!r}")
    if attributes is not None and (kind != "attributes" or not attributes):
        raise ValueError("attributes= must name attributes, and only for attributes: specs")
    if joint and kind != "attributes":
        raise ValueError(f"joint attributes need attributes: data, not {kind}:")
    if kind == "hf":
        kind, rows = hub_rows(target)
    else:
        rows = file_rows(Path(target))

    if kind in ("hh-rlhf", "pairwise"):
        side = hh_side if kind == "hh-rlhf" else exchange
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


# --- Records per kind -----------------------------------------------------------------


def _parse_all(rows: Iterable[Row], parse: Callable[[Row], _T]) -> tuple[list[_T], Counter]:
    parsed, dropped = [], Counter()
    for row in rows:
        try:
            parsed.append(parse(row))
        except Drop as drop:
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
    row: Row, side: Callable[[Row, str], tuple[Turns, str]], chosen: str, rejected: str
) -> Record:
    (prompt, good), (other_prompt, bad) = side(row, "chosen"), side(row, "rejected")
    reference = reference_of(row)
    if prompt != other_prompt:
        raise Drop("prompt_mismatch")
    return Record(
        prompt, {chosen: kept_response(good), rejected: kept_response(bad)}, reference, row.source
    )


def _keyed(row: Row) -> Record:
    responses = row.get("responses")
    if not isinstance(responses, dict) or not responses:
        raise row.error("responses", "must be an object mapping preference names to responses")
    texts = {
        str(p): kept_response(string_field(row, t, f"responses.{p}")) for p, t in responses.items()
    }
    return Record(prompt_turns(row), texts, reference_of(row), row.source)


def _prompt_only(row: Row) -> Record:
    return Record(prompt_turns(row), {}, reference_of(row), row.source)


def _labelled(row: Row, chosen: str, rejected: str) -> Record:
    label = row.get("label")
    if not isinstance(label, bool):
        raise row.error("label", f"must be true or false, got {json.dumps(label)}")
    prompt, response = exchange(row, "messages" if "messages" in row.data else "completion")
    return Record(
        prompt, {chosen if label else rejected: kept_response(response)}, None, row.source
    )


def _quantised_scores(rows: list[Row], levels: int) -> PreferenceData:
    def parse(row: Row) -> tuple[Row, Turns, str, float]:
        score = number_field(row, row.get("score"), "score")
        prompt, response = exchange(row, "response")
        return row, prompt, kept_response(response), score

    items, dropped = _parse_all(rows, parse)
    names = [f"level-{level}" for level in range(levels)]
    records = [
        Record(prompt, {names[level]: response}, None, row.source)
        for (row, prompt, response, _), level in zip(
            items, quantise([score for *_, score in items], levels), strict=True
        )
    ]
    return _finish(records, dropped, names[::-1], False, names[-1], names[0])


def _quantised_attributes(
    rows: list[Row], levels: int, wanted: list[str] | None, joint: bool = False
) -> PreferenceData:
    items, dropped = _parse_all(rows, scored_response)
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
    level_of = {name: quantise([item.scores[name] for item in items], levels) for name in names}
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
