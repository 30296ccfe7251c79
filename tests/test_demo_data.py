"""Tests for the committed concise/detailed demo preference data and its generator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "ctrlalign" / "demo_data" / "concise_detailed.jsonl"
TONE = ROOT / "ctrlalign" / "demo_data" / "length_tone.jsonl"
SCRIPT = ROOT / "scripts" / "make_demo_data.py"
FIELDS = ("prompt", "concise", "detailed")

# A sentence ends at . ! or ? followed by whitespace and a capital, digit or quote.
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9'\"])")


def sentences(text: str) -> list[str]:
    return [part for part in SENTENCE_BREAK.split(text.strip()) if part]


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def records() -> list[dict[str, str]]:
    assert DATA.is_file(), f"missing demo data file {DATA}"
    lines = DATA.read_text(encoding="utf-8").splitlines()
    parsed = []
    for number, line in enumerate(lines, start=1):
        record = json.loads(line)
        assert isinstance(record, dict), f"line {number} is not a JSON object"
        assert set(record) == {"prompt", "responses"}, f"line {number}: {sorted(record)}"
        parsed.append({"prompt": record["prompt"], **record["responses"]})
    return parsed


def test_file_exists_and_every_line_parses(records):
    raw = DATA.read_bytes()
    assert raw.endswith(b"\n")
    assert raw.count(b"\n") == len(records)
    for record in records:
        assert tuple(record) == FIELDS


def test_has_at_least_200_records(records):
    assert len(records) >= 200


def test_fields_are_non_empty_strings(records):
    for record in records:
        for name in FIELDS:
            value = record[name]
            assert isinstance(value, str), (name, record)
            assert value.strip() == value and value, (name, record)
            assert "\n" not in value


def test_prompts_are_unique_questions(records):
    normalized = [r["prompt"].strip().lower() for r in records]
    duplicates = [p for p, n in Counter(normalized).items() if n > 1]
    assert not duplicates
    assert all(r["prompt"].endswith("?") for r in records)


def test_detailed_answers_are_at_least_three_times_longer_on_average(records):
    mean_concise = sum(words(r["concise"]) for r in records) / len(records)
    mean_detailed = sum(words(r["detailed"]) for r in records) / len(records)
    assert mean_detailed / mean_concise >= 3.0
    # Every single pair, not just the average, points the same way.
    assert all(words(r["detailed"]) > 2 * words(r["concise"]) for r in records)


def test_concise_answers_are_single_short_sentences(records):
    for record in records:
        concise = record["concise"]
        assert len(sentences(concise)) == 1, concise
        assert concise[0].isupper() and concise.endswith("."), concise
        assert 6 <= words(concise) <= 25, concise


def test_detailed_answers_extend_the_concise_answer(records):
    for record in records:
        detailed = record["detailed"]
        parts = sentences(detailed)
        assert 3 <= len(parts) <= 5, detailed
        assert parts[0] == record["concise"]
        assert 45 <= words(detailed) <= 100, detailed


def test_no_markdown_and_plain_ascii(records):
    for record in records:
        for value in record.values():
            assert value.isascii()
            assert not re.search(r"[*#`_]|\[|\]|^\s*-\s", value), value


def test_connecting_phrases_vary(records):
    # The sentence after the example (the tip) must not start the same way everywhere,
    # or a model could learn "detailed" as one fixed suffix.
    tip_leads = Counter(" ".join(sentences(r["detailed"])[-1].split()[:3]) for r in records)
    assert len(tip_leads) >= 5
    assert max(tip_leads.values()) <= 0.3 * len(records)
    last_sentences = Counter(sentences(r["detailed"])[-1] for r in records)
    assert max(last_sentences.values()) <= 4


def run_generator(output: Path, tone: Path | None = None) -> subprocess.CompletedProcess[str]:
    tone = tone or output.with_name("tone-" + output.name)
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(output), "--tone-output", str(tone)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )


def test_regenerating_gives_byte_identical_files(tmp_path):
    output = tmp_path / "nested" / "concise_detailed.jsonl"
    tone = tmp_path / "nested" / "length_tone.jsonl"
    result = run_generator(output, tone)
    assert "records" in result.stdout
    assert output.read_bytes() == DATA.read_bytes()
    assert tone.read_bytes() == TONE.read_bytes()
    # Written atomically: nothing but the outputs is left behind in their folder.
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name, tone.name]


def test_generator_is_deterministic_across_runs(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    run_generator(first)
    run_generator(second)
    assert first.read_bytes() == second.read_bytes()


def test_tone_file_pairs_every_length_with_both_tones_but_the_held_out_one(records):
    """length_tone.jsonl: the concise/detailed facts, neutral as they are or warm (an
    opener and a closer around the same text); detailed+warm in no record, so asking for
    it tests composition; warm answers score higher on VADER's sentiment than neutral."""
    from ctrlalign.data import load_preference_data
    from ctrlalign.evaluation.judges.attr import ATTRIBUTES

    data = load_preference_data(f"preferences:{TONE}")
    assert data.preferences == ["concise", "neutral", "warm", "detailed"]
    assert [r.prompt_text for r in data.records] == [r["prompt"] for r in records]
    sentiment = ATTRIBUTES["sentiment"].measure
    lifts = []
    for record, plain in zip(data.records, records, strict=True):
        answers = record.responses
        assert set(answers) == {"concise+neutral", "concise+warm", "detailed+neutral"}
        assert answers["concise+neutral"] == plain["concise"]
        assert answers["detailed+neutral"] == plain["detailed"]
        opener, _, closer = answers["concise+warm"].partition(plain["concise"])
        assert opener.endswith("! ") and closer.startswith(" ") and closer.endswith("!")
        lifts.append(sentiment(answers["concise+warm"]) - sentiment(plain["concise"]))
    assert min(lifts) > 0, "every warm answer reads warmer than its neutral one"
