"""Every file loader, fed random JSON, wrong types, missing fields, empty strings, non-UTF-8
bytes, a BOM, CRLF line ends and very long lines, either loads or raises ``DataError``
naming the file (and, for a bad row, its line or index): never another exception."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctrlalign.data import DataError, PreferenceData, load_preference_data
from ctrlalign.data.io import read_prompts

FIELDS = {
    "hh-rlhf": ("chosen", "rejected"),
    "pairwise": ("prompt", "chosen", "rejected", "reference"),
    "preferences": ("prompt", "responses"),
    "prompts": ("prompt", "reference"),
    "scores": ("prompt", "response", "score"),
    "labels": ("messages", "label", "prompt", "completion"),
    "attributes": ("source", "system_output", "scores", "prompt", "response", "text", "label"),
}

text = st.text(max_size=20) | st.sampled_from(
    ["", " ", "\n\nHuman: hi\n\nAssistant: yo", "Human: x", "\n\nAssistant: only", "a\u2028b"]
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | text
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "robot", ""]), "content": text}
)
json_values = st.recursive(
    scalars | st.lists(message, max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def rows(draw, kind: str) -> list:
    """Rows mostly shaped like the kind's (its fields, random values, some missing)."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 5)) == 0:
            out.append(draw(json_values))
            continue
        fields = draw(st.lists(st.sampled_from(FIELDS[kind]), unique=True))
        out.append(
            {f: draw(json_values | st.dictionaries(text, scalars, max_size=3)) for f in fields}
        )
    return out


@st.composite
def file_bytes(draw, kind: str) -> bytes:
    """The rows as JSON Lines or a JSON list, then one of the byte-level faults."""
    data = draw(rows(kind))
    as_list = draw(st.booleans())
    body = json.dumps(data) if as_list else "\n".join(json.dumps(r) for r in data)
    raw = body.encode()
    fault = draw(st.sampled_from(["none", "bom", "crlf", "latin1", "cut", "long", "blank"]))
    if fault == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif fault == "crlf":
        raw = raw.replace(b"\n", b"\r\n")
    elif fault == "latin1":
        raw = raw[: len(raw) // 2] + b"\xe9\xff" + raw[len(raw) // 2 :]
    elif fault == "cut":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif fault == "long":
        raw += b'\n{"prompt": "' + b"x" * 200_000 + b'", "chosen": "a", "rejected": "b"}'
    elif fault == "blank":
        raw = b"\n \n" + raw + b"\n\n"
    return raw


def check_error(err: DataError, path: Path, raw: bytes) -> None:
    message = str(err)
    assert str(path) in message, message
    lines = raw.count(b"\n") + 1
    for number in re.findall(r" line (\d+)", message):
        assert 1 <= int(number) <= lines, message


def fuzz(kind: str):
    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
    )
    @given(raw=file_bytes(kind))
    def test(raw: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "data.jsonl"
            path.write_bytes(raw)
            try:
                data = load_preference_data(f"{kind}:{path}")
            except DataError as err:
                check_error(err, path, raw)
            else:
                assert isinstance(data, PreferenceData) and data.records

    return test


test_fuzz_hh_rlhf = fuzz("hh-rlhf")
test_fuzz_pairwise = fuzz("pairwise")
test_fuzz_preferences = fuzz("preferences")
test_fuzz_prompts = fuzz("prompts")
test_fuzz_scores = fuzz("scores")
test_fuzz_labels = fuzz("labels")
test_fuzz_attributes = fuzz("attributes")


@settings(max_examples=80, deadline=None, database=None)
@given(raw=file_bytes("prompts"))
def test_fuzz_generation_prompt_files(raw: bytes) -> None:
    """``--prompts FILE`` of ``generate``, ``alpha-sweep``: the same promise."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prompts.jsonl"
        path.write_bytes(raw)
        try:
            prompts = read_prompts(path)
        except DataError as err:
            check_error(err, path, raw)
        else:
            assert prompts and all("prompt" in row for row in prompts)


def test_a_bom_and_crlf_file_loads_like_a_plain_one(tmp_path):
    rows = [{"prompt": "Hi", "chosen": "Hello.", "rejected": "Go away."}] * 2
    rows[1] = {**rows[1], "prompt": "Bye"}
    plain = tmp_path / "plain.jsonl"
    plain.write_text("\n".join(json.dumps(r) for r in rows))
    odd = tmp_path / "odd.jsonl"
    odd.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes().replace(b"\n", b"\r\n"))
    want = load_preference_data(f"pairwise:{plain}").records
    got = load_preference_data(f"pairwise:{odd}").records
    assert [r.messages for r in got] == [r.messages for r in want]
    assert [r.responses for r in got] == [r.responses for r in want]


def value_flags() -> list[tuple[str, str, object]]:
    """(command, flag, parser) for every flag of every command that parses a value."""
    import argparse

    from ctrlalign.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [
        (name, action.option_strings[0], action.type)
        for name, command in sub.choices.items()
        for action in command._actions
        if action.option_strings and callable(action.type)
    ]


def test_every_value_flag_is_fuzzed():
    flags = {(command, flag) for command, flag, _ in value_flags()}
    assert ("train", "--prompt-texts") in flags and ("generate", "--alpha") in flags
    assert ("evaluate", "--temperatures") in flags and ("train", "--lr-second") in flags


@settings(max_examples=300, deadline=None, database=None)
@given(
    index=st.integers(min_value=0),
    raw=st.text(max_size=30) | st.sampled_from(["nan", "-inf", "1e999", "a=", "=b", ",", "0x1"]),
)
def test_fuzz_cli_value_flags(index: int, raw: str) -> None:
    """What argparse does with a flag's text: the parser returns a value (numbers finite)
    or raises one of the errors argparse reports as a usage error naming the flag."""
    import argparse
    import math

    flags = value_flags()
    _, _, parse = flags[index % len(flags)]
    try:
        value = parse(raw)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return
    for number in value if isinstance(value, list | tuple) else [value]:
        if isinstance(number, float):
            assert math.isfinite(number), (parse, raw)
