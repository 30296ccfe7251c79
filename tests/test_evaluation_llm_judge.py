"""The LLM judge against a real local HTTP server speaking the OpenAI chat-completions format.

The stub judge prefers the answer containing MARKER, returns a reply without a verdict when
an answer contains GARBLE, and can be told to fail with HTTP 500 a number of times. Without
a clear preference it shows position bias (summary task: always "A"), which is exactly what
judging in both orders must cancel.
"""

from __future__ import annotations

import re

import pytest
from openai_server import SUMMARY_ANSWERS as _SUMMARY_ANSWERS
from openai_server import StubServer, closed_port_url

from ctrlalign.evaluation.judges.llm import (
    DIALOGUE_SYSTEM_PROMPT,
    SUMMARY_PROMPT,
    JudgeUnreachableError,
    LLMJudge,
    parse_choice,
)
from ctrlalign.evaluation.verdicts import Comparison, Verdict

FAST = {"backoff": 0.001, "timeout": 10.0}


@pytest.fixture
def stub():
    server = StubServer()
    yield server
    server.close()


def judge_for(stub: StubServer, task: str = "summary", **options) -> LLMJudge:
    return LLMJudge(task, base_url=stub.url, model="stub-judge", api_key="k", **(FAST | options))


PAIRS = [
    Comparison("Post about a cat.", "The cat MARKER sleeps.", "A cat."),
    Comparison("Post about a dog.", "A dog.", "The dog MARKER runs."),
    Comparison("Post about a bird.", "A bird.", "Birds."),
]


def test_both_orders_are_sent_and_combined(stub):
    run = judge_for(stub).judge(PAIRS)

    assert [pair.verdict for pair in run.pairs] == [Verdict.WIN, Verdict.LOSE, Verdict.TIE]
    assert (run.requests_sent, run.cache_hits, run.unparseable, run.failed) == (6, 0, 0, 0)
    assert len(stub.requests) == 6
    shown = [
        _SUMMARY_ANSWERS.search(r["body"]["messages"][0]["content"]).groups() for r in stub.requests
    ]
    for comp in PAIRS:
        assert (comp.candidate, comp.baseline) in shown
        assert (comp.baseline, comp.candidate) in shown
    # Position bias with no preference: A wins each time, so the candidate wins once, loses once.
    bird = run.pairs[2]
    assert (bird.candidate_first.verdict, bird.candidate_second.verdict) == (
        Verdict.WIN,
        Verdict.LOSE,
    )
    request = stub.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == "stub-judge"
    assert request["body"]["temperature"] == 0.0
    assert request["headers"]["Authorization"] == "Bearer k"
    content = request["body"]["messages"][0]["content"]
    assert content.startswith("Which of the following summaries does a better job of summarizing")
    assert "Post:\nPost about" in content


def test_dialogue_prompt_and_ties(stub):
    pairs = [
        Comparison("How do I boil an egg?", "Boil it MARKER 8 min.", "Eggs are round."),
        Comparison("Hi?", "Hello MARKER.", "Hey MARKER."),
        Comparison("Hi?", "Hello.", "Hey."),
    ]
    run = judge_for(stub, task="dialogue").judge(pairs)

    assert [pair.verdict for pair in run.pairs] == [Verdict.WIN, Verdict.TIE, Verdict.TIE]
    assert run.pairs[1].candidate_first.choice == "C"
    messages = stub.requests[0]["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == DIALOGUE_SYSTEM_PROMPT
    assert messages[1]["content"].startswith("[User Question]\n")
    rate = run.win_rate()
    assert (rate.n, rate.win, rate.tie) == (3, pytest.approx(100 / 3), pytest.approx(200 / 3))


def test_rerun_hits_cache_and_sends_nothing(stub, tmp_path):
    cache = tmp_path / "judge_cache.jsonl"
    first = judge_for(stub, cache_path=cache).judge(PAIRS)
    assert len(cache.read_text().splitlines()) == 6

    again = judge_for(stub, cache_path=cache).judge(PAIRS)
    assert (again.requests_sent, again.cache_hits) == (0, 6)
    assert len(stub.requests) == 6
    assert [p.verdict for p in again.pairs] == [p.verdict for p in first.pairs]

    # A fully cached run needs no server at all.
    offline = LLMJudge("summary", base_url=closed_port_url(), model="stub-judge", cache_path=cache)
    assert [p.verdict for p in offline.judge(PAIRS).pairs] == [p.verdict for p in first.pairs]

    # The key includes the judge model: another model is asked afresh.
    other = LLMJudge("summary", base_url=stub.url, model="other-judge", cache_path=cache, **FAST)
    assert other.judge(PAIRS[:1]).requests_sent == 2


def test_garbled_verdict_is_counted_not_tied(stub, tmp_path):
    pairs = [*PAIRS, Comparison("Post.", "GARBLE me", "fine")]
    run = judge_for(stub, cache_path=tmp_path / "c.jsonl").judge(pairs)

    assert run.unparseable == 2 and run.failed == 0
    garbled = run.pairs[3]
    assert garbled.verdict is None
    assert garbled.candidate_first.unparseable and garbled.candidate_first.reply
    assert run.undecided == 1
    assert run.win_rate().n == 3
    assert "2 unparseable" in run.summary()
    # The unparseable reply was cached too: a rerun reports it again without asking.
    again = judge_for(stub, cache_path=tmp_path / "c.jsonl").judge(pairs)
    assert (again.requests_sent, again.unparseable) == (0, 2)


def test_server_errors_are_retried(stub):
    stub.fail_next = 2
    run = judge_for(stub, concurrency=1, retries=3).judge(PAIRS[:1])

    assert run.failed == 0
    assert run.pairs[0].verdict is Verdict.WIN
    assert run.requests_sent == 4  # two failures, then one success for each order
    assert len(stub.requests) == 4


def test_server_that_always_fails_is_reported_as_failed(stub, tmp_path):
    stub.fail_next = 10**6
    cache = tmp_path / "c.jsonl"
    run = judge_for(stub, retries=2, cache_path=cache).judge(PAIRS[:1])

    assert run.failed == 2 and run.unparseable == 0
    assert run.requests_sent == 6 == len(stub.requests)
    pair = run.pairs[0]
    assert pair.verdict is None and pair.candidate_first.failed
    assert "HTTP 500" in pair.candidate_first.error and "3 attempts" in pair.candidate_first.error
    assert not cache.exists()  # failures are not cached: a rerun tries again
    with pytest.raises(ValueError, match="zero verdicts"):
        run.win_rate()


def test_unreachable_endpoint_names_the_url():
    url = closed_port_url()
    judge = LLMJudge("summary", base_url=url, model="m", retries=0)
    with pytest.raises(JudgeUnreachableError, match=re.escape(url)):
        judge.judge(PAIRS)


def test_configuration_from_environment(stub, monkeypatch):
    monkeypatch.setenv("CTRLALIGN_JUDGE_URL", stub.url)
    monkeypatch.setenv("CTRLALIGN_JUDGE_MODEL", "env-judge")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    run = LLMJudge("summary", **FAST).judge(PAIRS[:1])
    assert run.pairs[0].verdict is Verdict.WIN
    assert stub.requests[0]["body"]["model"] == "env-judge"
    assert "Authorization" not in stub.requests[0]["headers"]


def test_missing_configuration_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("CTRLALIGN_JUDGE_URL", raising=False)
    monkeypatch.delenv("CTRLALIGN_JUDGE_MODEL", raising=False)
    with pytest.raises(ValueError, match="CTRLALIGN_JUDGE_URL"):
        LLMJudge("summary", model="m")
    with pytest.raises(ValueError, match="CTRLALIGN_JUDGE_MODEL"):
        LLMJudge("summary", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="unknown judge task"):
        LLMJudge("poetry", base_url="http://127.0.0.1:1/v1", model="m")


@pytest.mark.parametrize(
    ("task", "reply", "expected"),
    [
        ("summary", "Comparison: B is tighter.\nPreferred: B", "B"),
        ("summary", 'Comparison: fine.\nPreferred: "A"', "A"),
        ("summary", "Comparison: x\n**Preferred:** A", "A"),
        ("summary", 'Format says Preferred: <"A" or "B">.\nPreferred: B', "B"),
        ("summary", "I like both.", None),
        ("summary", "Preferred: Assistant", None),
        ("dialogue", "A is better. [[A]]", "A"),
        ("dialogue", 'Use "[[A]]" or "[[B]]"... final: [[C]]', "C"),
        ("dialogue", "Verdict: A", None),
    ],
)
def test_parse_choice(task, reply, expected):
    assert parse_choice(task, reply) == expected


def test_prompts_are_the_papers():
    assert "A good summary is both precise and concise." in SUMMARY_PROMPT
    assert 'state only "A" or "B" to indicate your choice' in SUMMARY_PROMPT
    assert "Avoid any positional biases" in DIALOGUE_SYSTEM_PROMPT
    assert '"[[C]]" for a tie.' in DIALOGUE_SYSTEM_PROMPT
