"""`ctrlalign serve` over real HTTP (uvicorn in a thread, the CLI in its own process):
continuous batching answers every request exactly as one-by-one generation would, each row
with its own preference, alpha, max_tokens, sampling and stop strings; the OpenAI surface
(errors, streaming, /v1/completions, n, limits) behaves as OpenAI-compatible servers do."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import torch
from conftest import big_init

from ctrlalign.inference.decode import encode_text
from ctrlalign.inference.generation import (
    GenerationConfig,
    Row,
    alpha_row,
    decode,
    generate_ids,
    generate_rows,
)
from ctrlalign.inference.jobs import EngineClosed, Event, Handle, QueueFull
from ctrlalign.inference.serving.app import build_app
from ctrlalign.inference.serving.server import ServerThread
from ctrlalign.inference.serving.service import Service
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.controls import build_control
from ctrlalign.model.identity_layer import insert_identity_layer
from ctrlalign.model.layout import encode_prompt
from ctrlalign.model.loading import load_model
from ctrlalign.model.rundir import Run, save_run

PROMPTS = ["What is two plus two?", "Hi!", "Tell me about dogs."]
CAP = 400  # the fixtures' --max-new-tokens
LONG = "Tell me a long story about dogs."  # any prompt: the endless run answers at length


def start(run: Run, **kw) -> tuple[Service, ServerThread]:
    kw.setdefault("max_new_tokens", CAP)
    kw.setdefault("batch_wait_s", 0.0)
    app_kw = {k: kw.pop(k) for k in ("api_key", "max_body_bytes") if k in kw}
    service = Service(run, "test-run", **kw)
    return service, ServerThread(build_app(service, **app_kw))


def call(url: str, path: str, body: object = None, raw: bytes | None = None, headers=None):
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data)
    request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            payload = resp.read()
            return resp.status, json.loads(payload) if payload[:1] in (b"{", b"[") else payload
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def chat(prompt: str, **extra) -> dict:
    return {"model": "test-run", "messages": [{"role": "user", "content": prompt}], **extra}


def sse(url: str, path: str, body: dict) -> list[dict]:
    """The data payloads of a streamed answer, ``[DONE]`` checked and dropped."""
    with requests.post(url + path, json={**body, "stream": True}, stream=True, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines(decode_unicode=True) if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def alone(run: Run, body: dict, config: GenerationConfig | None = None) -> list[int]:
    """What one-by-one generation gives for a chat body (the run's default preference)."""
    row = alpha_row(
        body["messages"][0]["content"],
        body.get("alpha", 1.0),
        body.get("preference", "good") if run.model.control is not None else None,
        body.get("against"),
    )
    limit = body.get("max_tokens", CAP)
    config = config or GenerationConfig(max_new_tokens=CAP)
    row = Row(row.messages, row.streams, row.weights, limit)
    return generate_ids(run.model, run.tokenizer, [row], config)[0]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def meet_run() -> Run:
    lm, tok = load_model("tiny")
    big_init(lm)
    control = build_control("lora", ["good", "bad"], lora_rank=2)
    lm = control.attach(lm, tok)
    big_init(lm, std=0.3, seed=1)
    info = {"method": "meet-lora", "control": "lora", "preferences": ["good", "bad"]}
    return Run(ControlledLM(lm, control), tok, {**info, "lora_rank": 2, "chosen": "good"})


@pytest.fixture(scope="module")
def meet_server():
    run = meet_run()
    service, server = start(run)
    yield run, service, server.url
    server.stop()


@pytest.fixture(scope="module")
def clm_server():
    lm, tok = load_model("tiny")
    layer = insert_identity_layer(lm)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    info = {"method": "clm", "clm": True, "control": None, "preferences": [], "chosen": "good"}
    run = Run(ControlledLM(lm), tok, info)
    service, server = start(run)
    yield run, service, server.url
    server.stop()


def endless_run() -> Run:
    """``meet_run`` that never ends an answer, so a request runs to its ``max_tokens``:
    tests of long requests build that precondition rather than hope some prompt gets a
    long answer (and skip, silently off, when none does). The head is tied to the input
    embeddings, so an end token whose row is zero has logit 0 at every step, and two
    tokens with opposite rows put one logit above 0 at every step: greedy decoding (any
    blend of streams too) never picks an end token."""
    run = meet_run()
    embeddings = run.model.base.get_input_embeddings().weight
    assert run.model.base.get_output_embeddings().weight is embeddings
    with torch.no_grad():
        embeddings[run.model.end_ids(run.tokenizer)] = 0
        embeddings[-1] = -embeddings[-2]
    return run


@pytest.fixture(scope="module")
def endless_server():
    run = endless_run()
    ids = alone(run, chat(LONG, max_tokens=300))
    assert len(ids) == 300 and not set(ids) & set(run.model.end_ids(run.tokenizer))
    service, server = start(run)
    yield run, service, server.url
    server.stop()


def test_concurrent_requests_join_one_batch_and_equal_one_by_one(meet_server):
    run, service, url = meet_server
    bodies = [
        chat(PROMPTS[0]),  # the run's chosen preference
        chat(PROMPTS[0], preference="bad", max_tokens=5),
        chat(PROMPTS[1], model="test-run:bad"),  # the preference named as the model
        chat(PROMPTS[1], preference="good", against="bad", alpha=1.5, max_tokens=7),
        chat(PROMPTS[2], preference="good", against="bad", alpha=-0.5, max_tokens=30),
        chat(PROMPTS[2], preference="good", max_tokens=3),
    ]
    before = service.stats()
    service.engine.stats["max_rows"] = 0
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda body: call(url, "/v1/chat/completions", body), bodies))
    assert all(status == 200 for status, _ in replies), replies
    after = service.stats()
    assert after["requests"] - before["requests"] == len(bodies)
    assert after["max_rows"] > 1  # they shared decode steps
    for body, (_, reply) in zip(bodies, replies, strict=True):
        if body.get("model") == "test-run:bad":
            body = {**body, "preference": "bad"}
        ids = alone(run, body)
        answer = reply["choices"][0]
        assert answer["message"] == {
            "role": "assistant",
            "content": decode(run.tokenizer, ids, GenerationConfig()),
        }
        assert reply["usage"]["completion_tokens"] == len(ids) <= body.get("max_tokens", CAP)
        stopped = ids[-1] == run.tokenizer.eos_token_id
        assert answer["finish_reason"] == ("stop" if stopped else "length")
        assert reply["object"] == "chat.completion"
        assert reply["usage"]["total_tokens"] == (
            reply["usage"]["prompt_tokens"] + reply["usage"]["completion_tokens"]
        )
    assert replies[0][1]["model"] == "test-run" and replies[2][1]["model"] == "test-run:bad"
    assert replies[0][1]["preference"] == "good" and replies[1][1]["preference"] == "bad"


def test_a_short_request_does_not_wait_for_a_long_one(endless_server):
    run, service, url = endless_server
    prompt = LONG
    finished: dict[str, float] = {}
    started = threading.Event()

    def long_request():
        body = {**chat(prompt, max_tokens=300), "stream": True}
        with requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=120) as r:
            for line in r.iter_lines():
                if b'"content"' in line:
                    started.set()
        finished["long"] = time.monotonic()

    thread = threading.Thread(target=long_request)
    thread.start()
    assert started.wait(60)
    status, reply = call(url, "/v1/chat/completions", chat(PROMPTS[1], max_tokens=3))
    finished["short"] = time.monotonic()
    thread.join(120)
    assert status == 200 and reply["usage"]["completion_tokens"] <= 3
    assert "long" in finished and finished["short"] < finished["long"]
    expected = decode(run.tokenizer, alone(run, chat(PROMPTS[1], max_tokens=3)), GenerationConfig())
    assert reply["choices"][0]["message"]["content"] == expected


def test_a_burst_joins_over_several_steps_under_a_prefill_budget(meet_server):
    """With room for one prompt per step, requests sent together (gathered by a long
    batch wait, which would put them in one prefill) join one by one, the earlier ones
    decoding meanwhile, and still answer as one-by-one generation does."""
    run, _, _ = meet_server
    service, server = start(run, max_prefill_tokens=1, batch_wait_s=0.5)
    bodies = [chat(p, max_tokens=12) for p in PROMPTS]
    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            replies = list(pool.map(lambda b: call(server.url, "/v1/chat/completions", b), bodies))
    finally:
        server.stop()
    assert service.stats()["prefills"] == len(bodies)
    for body, (status, reply) in zip(bodies, replies, strict=True):
        assert status == 200
        expected = decode(run.tokenizer, alone(run, body), GenerationConfig())
        assert reply["choices"][0]["message"]["content"] == expected


def test_clm_alpha_per_row_in_one_batch(clm_server):
    """Rows at alpha 0 (around the CLM layer), 0.5 (both streams), 1 and 2 decode together,
    join and leave at different steps, and each equals its one-by-one answer."""
    run, service, url = clm_server
    bodies = [
        chat(PROMPTS[i % 3], alpha=a, max_tokens=4 + 3 * i) for i, a in enumerate([0, 0.5, 1, 2, 0])
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda b: call(url, "/v1/chat/completions", b), bodies))
    for body, (status, reply) in zip(bodies, replies, strict=True):
        assert status == 200, reply
        ids = alone(run, body)
        assert reply["choices"][0]["message"]["content"] == decode(
            run.tokenizer, ids, GenerationConfig()
        )
    status, reply = call(url, "/v1/chat/completions", chat(PROMPTS[2], max_tokens=10))
    default = decode(
        run.tokenizer, alone(run, chat(PROMPTS[2], alpha=1, max_tokens=10)), GenerationConfig()
    )
    assert reply["choices"][0]["message"]["content"] == default  # no alpha: the aligned model
    one = generate_rows(run.model, run.tokenizer, [alpha_row(PROMPTS[0], 0)], GenerationConfig(8))
    aligned = generate_rows(
        run.model, run.tokenizer, [alpha_row(PROMPTS[0], 1)], GenerationConfig(8)
    )
    assert one != aligned  # the dial changes the answer, so the comparison above means something
    status, reply = call(url, "/v1/chat/completions", chat("x", preference="good"))
    assert status == 400 and "CLM run" in reply["error"]["message"]


def test_seeded_sampling_is_per_row_and_n_choices_differ(meet_server):
    run, _, url = meet_server
    body = chat(PROMPTS[2], temperature=1.0, top_p=0.9, seed=7, max_tokens=10, n=2)
    noise = chat(PROMPTS[0], temperature=1.3, seed=1, max_tokens=10)
    with ThreadPoolExecutor(2) as pool:
        reply, _ = pool.map(lambda b: call(url, "/v1/chat/completions", b)[1], [body, noise])
    assert [c["index"] for c in reply["choices"]] == [0, 1]
    texts = [c["message"]["content"] for c in reply["choices"]]
    for choice, text in enumerate(texts):
        config = GenerationConfig(max_new_tokens=CAP, temperature=1.0, top_p=0.9, seed=7 + choice)
        ids = alone(run, body, config)
        assert text == decode(run.tokenizer, ids, GenerationConfig())
    assert texts[0] != texts[1]
    again = call(url, "/v1/chat/completions", body)[1]
    assert [c["message"]["content"] for c in again["choices"]] == texts
    unseeded = [
        call(url, "/v1/chat/completions", {**body, "seed": None, "n": 1})[1] for _ in range(3)
    ]
    assert len({r["choices"][0]["message"]["content"] for r in unseeded}) > 1


def test_stop_strings_end_the_answer_streamed_or_not(meet_server):
    run, _, url = meet_server
    full = call(url, "/v1/chat/completions", chat(PROMPTS[2], max_tokens=40))[1]
    text = full["choices"][0]["message"]["content"]
    assert len(text) > 12, text
    stop = text[8:11]
    cut = text[: text.find(stop)].strip()
    reply = call(url, "/v1/chat/completions", chat(PROMPTS[2], max_tokens=40, stop=[stop, "@@@@"]))[
        1
    ]
    assert reply["choices"][0]["message"]["content"] == cut
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] < full["usage"]["completion_tokens"]
    chunks = sse(url, "/v1/chat/completions", chat(PROMPTS[2], max_tokens=40, stop=stop))
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == cut
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_streaming_chunks_follow_openai_and_add_up_to_the_answer(meet_server):
    _, _, url = meet_server
    body = chat(PROMPTS[0], max_tokens=20, n=2, stream_options={"include_usage": True})
    plain = call(
        url, "/v1/chat/completions", {k: v for k, v in body.items() if k != "stream_options"}
    )[1]
    chunks = sse(url, "/v1/chat/completions", body)
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    first = [c for c in chunks if c["choices"] and "role" in c["choices"][0]["delta"]]
    assert sorted(c["choices"][0]["index"] for c in first) == [0, 1]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks[:-1] if c["choices"][0]["index"] == index]
        text = "".join(ch["delta"].get("content", "") for ch in mine)
        assert text == plain["choices"][index]["message"]["content"]
        assert [ch["finish_reason"] for ch in mine if ch["finish_reason"]] == [
            plain["choices"][index]["finish_reason"]
        ]


def test_completions_endpoint(meet_server):
    run, _, url = meet_server
    body = {"model": "test-run", "prompt": ["Once upon a time", "The dog"], "max_tokens": 9, "n": 2}
    status, reply = call(url, "/v1/completions", body)
    assert status == 200 and reply["object"] == "text_completion"
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2, 3]
    for c in reply["choices"]:
        prompt = body["prompt"][c["index"] // 2]
        ex = encode_text(run.tokenizer, run.model.control, prompt, "good")
        lm_ids = generate_ids_raw(run, ex, 9)
        stop = {run.tokenizer.eos_token_id}
        lm_ids = lm_ids[:-1] if lm_ids and lm_ids[-1] in stop else lm_ids
        assert c["text"] == run.tokenizer.decode(lm_ids, skip_special_tokens=True)
    prompt_tokens = sum(len(run.tokenizer(p).input_ids) for p in body["prompt"])
    assert reply["usage"]["prompt_tokens"] == prompt_tokens
    chunks = sse(url, "/v1/completions", {**body, "prompt": "Once upon a time", "n": 1})
    assert "".join(c["choices"][0]["text"] for c in chunks) == reply["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == reply["choices"][0]["finish_reason"]


def test_logprobs_chat_streamed_and_completions(meet_server):
    run, _, url = meet_server
    body = chat(PROMPTS[0], max_tokens=6, logprobs=True, top_logprobs=3)
    reply = call(url, "/v1/chat/completions", body)[1]
    content = reply["choices"][0]["logprobs"]["content"]
    assert len(content) == reply["usage"]["completion_tokens"]
    for entry in content:
        assert len(entry["top_logprobs"]) == 3 and entry["logprob"] <= 0
        assert entry["top_logprobs"][0]["token"] == entry["token"]  # greedy: the top token
        assert entry["logprob"] == pytest.approx(entry["top_logprobs"][0]["logprob"])
        assert entry["bytes"] == list(entry["token"].encode())
    # the first token's log-probability, recomputed by a plain forward under the control
    example = encode_prompt(run.tokenizer, run.model.control, body["messages"], "good")
    with torch.no_grad(), run.model.control.use("good"):
        logits = run.model.lm(input_ids=torch.tensor([example.input_ids])).logits[0, -1]
    first = torch.log_softmax(logits.float(), dim=-1).max()
    assert content[0]["logprob"] == pytest.approx(float(first), abs=1e-4)
    chunks = sse(url, "/v1/chat/completions", body)
    streamed = [
        entry
        for c in chunks
        if c["choices"] and c["choices"][0]["logprobs"]
        for entry in c["choices"][0]["logprobs"]["content"]
    ]
    assert [e["token"] for e in streamed] == [e["token"] for e in content]
    prompt = "Once upon a time"
    reply = call(url, "/v1/completions", {"prompt": prompt, "max_tokens": 5, "logprobs": 2})[1]
    logprobs = reply["choices"][0]["logprobs"]
    tokens = reply["usage"]["completion_tokens"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == tokens
    assert len(logprobs["top_logprobs"]) == tokens
    assert all(1 <= len(alternatives) <= 2 for alternatives in logprobs["top_logprobs"])
    assert logprobs["text_offset"][0] == len(prompt)
    assert reply["choices"][0]["text"].startswith(logprobs["tokens"][0])


def generate_ids_raw(run: Run, example, limit: int) -> list[int]:
    """Greedy ids for an already encoded prompt, through plain HF-style decoding with the
    control's adapter active: an independent check of the raw completions path."""
    model = run.model
    ids = torch.tensor([example.input_ids])
    out: list[int] = []
    with torch.no_grad(), model.control.use("good"):
        for _ in range(limit):
            logits = model.lm(input_ids=ids).logits[0, -1]
            token = int(logits.argmax())
            out.append(token)
            if token == run.tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[token]])], dim=-1)
    return out


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        (chat("x", preference="ugly"), "ugly", "preference"),
        (chat("x", preference="good", against="ugly", alpha=0.5), "ugly", "against"),
        (chat("x", alpha="lots"), "valid number", "alpha"),
        (chat("x", alpha=0.5), "`alpha` needs a CLM run", None),
        (chat("x", max_tokens=0), "max_tokens", "max_tokens"),
        (chat("x", max_tokens=CAP + 1), f"over this server's --max-new-tokens {CAP}", "max_tokens"),
        (chat("x", temperature=-1), "temperature", "temperature"),
        (chat("x", temperature="0.5"), "temperature", "temperature"),
        (chat("x", n=9), "--max-n 8", "n"),
        (chat("x", stop=["a", "b", "c", "d", "e"]), "up to 4", "stop"),
        (chat("x", stop=""), "non-empty", "stop"),
        (chat("x", frequency_penalty=0.5), "frequency_penalty", "frequency_penalty"),
        (chat("x", top_logprobs=2), "needs `logprobs: true`", "top_logprobs"),
        (chat("x", logprobs=True, top_logprobs=21), "top_logprobs", "top_logprobs"),
        (chat("x", tools=[{"type": "function"}]), "tool", "tools"),
        (chat("x", best_of=3), "unknown field `best_of`", "best_of"),
        (chat("x", stream_options={"include_usage": True}), "stream: true", "stream_options"),
        (chat("x", model="test-run:bad", preference="good"), "names preference", "preference"),
        ({"messages": []}, "messages", "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "messages"),
        ([1, 2], "JSON object", None),
    ],
)
def test_bad_requests_get_400_naming_the_field(meet_server, body, message, param):
    _, service, url = meet_server
    before = service.stats()
    status, reply = call(url, "/v1/chat/completions", body)
    assert status == 400, reply
    assert message in reply["error"]["message"]
    assert reply["error"]["param"] == param
    assert reply["error"]["type"] == "invalid_request_error"
    assert service.stats()["requests"] == before["requests"]  # refused before the engine


def test_context_model_and_route_errors(meet_server):
    run, _, url = meet_server
    long = " ".join(["dog"] * 1100)  # the tiny model's context is 1024 tokens
    status, reply = call(url, "/v1/chat/completions", chat(long, max_tokens=2))
    assert status == 400 and reply["error"]["code"] == "context_length_exceeded"
    assert reply["error"]["param"] == "messages"
    status, reply = call(url, "/v1/completions", {"prompt": " dog" * 900, "max_tokens": 300})
    assert status == 400 and reply["error"]["param"] == "max_tokens"
    status, reply = call(url, "/v1/chat/completions", chat("x", model="gpt-4"))
    assert status == 404 and reply["error"]["code"] == "model_not_found"
    assert reply["error"]["param"] == "model"
    status, reply = call(url, "/v1/embeddings", {})
    assert status == 404 and reply["error"]["code"] == "unknown_url"
    assert set(reply["error"]) == {"message", "type", "param", "code"}
    status, reply = call(url, "/v1/chat/completions", raw=b"{not json")
    assert status == 400 and "not JSON" in reply["error"]["message"]
    assert call(url, "/health") == (200, {"status": "ok"})
    status, models = call(url, "/v1/models")
    ids = [card["id"] for card in models["data"]]
    assert ids == ["test-run", "test-run:good", "test-run:bad"]
    assert models["data"][0]["preferences"] == ["good", "bad"]
    assert models["data"][0]["default_preference"] == "good"
    assert call(url, "/v1/models/test-run:bad")[1]["preference"] == "bad"
    assert call(url, "/v1/models/nope")[0] == 404


def test_metrics_count_requests_tokens_and_batches(meet_server):
    _, _, url = meet_server
    reply = call(url, "/v1/chat/completions", chat(PROMPTS[1], max_tokens=4))[1]
    text = requests.get(url + "/metrics", timeout=30).text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    key = 'ctrlalign_requests_total{route="/v1/chat/completions",status="200"}'
    assert values[key] >= 1
    assert values["ctrlalign_generation_tokens_total"] >= reply["usage"]["completion_tokens"]
    assert values["ctrlalign_batch_rows_count"] >= 1
    assert values["ctrlalign_time_to_first_token_seconds_count"] >= 1
    assert "ctrlalign_queue_length" in values and "ctrlalign_request_latency_seconds_sum" in values


def test_body_limit_api_key_and_full_queue():
    run = endless_run()
    service, server = start(
        run, max_batch_size=1, max_queue=1, api_key="sekrit", max_body_bytes=2000
    )
    url, auth = server.url, {"Authorization": "Bearer sekrit"}
    try:
        assert call(url, "/health") == (200, {"status": "ok"})  # probes need no key
        for path in ("/v1/models", "/metrics", "/v1/nothing"):
            status, reply = call(url, path)
            assert status == 401 and reply["error"]["code"] == "invalid_api_key"
        status, _ = call(url, "/v1/models", headers={"Authorization": "Bearer wrong"})
        assert status == 401
        assert call(url, "/v1/models", headers=auth)[0] == 200
        big = chat("dog " * 1000)
        status, reply = call(url, "/v1/chat/completions", big, headers=auth)
        assert status == 413 and reply["error"]["code"] == "request_too_large"
        # a body sent in chunks, without Content-Length, is cut off as it streams in
        chunks = (json.dumps(big)[i : i + 500].encode() for i in range(0, 5000, 500))
        r = requests.post(url + "/v1/chat/completions", data=chunks, headers=auth, timeout=30)
        assert r.status_code == 413

        prompt = LONG
        started = threading.Event()

        def long_request():
            body = {**chat(prompt, max_tokens=200), "stream": True}
            with requests.post(
                url + "/v1/chat/completions", json=body, headers=auth, stream=True, timeout=120
            ) as r:
                for line in r.iter_lines():
                    if b'"content"' in line:
                        started.set()

        running = threading.Thread(target=long_request)
        running.start()
        assert started.wait(60)
        with ThreadPoolExecutor(1) as pool:
            hi = chat("Hi", max_tokens=2)
            waiting = pool.submit(call, url, "/v1/chat/completions", hi, None, auth)
            deadline = time.monotonic() + 30
            while service.engine.queue_length < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            status, reply = call(
                url, "/v1/chat/completions", chat("Hi", max_tokens=2), headers=auth
            )
            assert status == 429 and reply["error"]["type"] == "rate_limit_error"
            assert waiting.result()[0] == 200  # the queued one is answered once there is room
        running.join(120)
    finally:
        server.stop()


def test_a_failed_step_is_reported_and_the_server_goes_on(meet_server, monkeypatch):
    _, service, url = meet_server

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(service.engine.batch, "_forward", broken)
    status, reply = call(url, "/v1/chat/completions", chat(PROMPTS[0]))
    assert status == 500 and "out of memory" in reply["error"]["message"]
    assert reply["error"]["type"] == "server_error"
    chunks = sse(url, "/v1/chat/completions", chat(PROMPTS[0]))
    assert "out of memory" in chunks[-1]["error"]["message"]
    monkeypatch.undo()
    status, reply = call(url, "/v1/chat/completions", chat(PROMPTS[0], max_tokens=4))
    assert status == 200 and reply["usage"]["completion_tokens"] <= 4


def test_a_client_that_disconnects_cancels_its_row(endless_server):
    run, service, url = endless_server
    prompt = LONG
    for stream in (True, False):
        before = service.stats()["tokens"]
        body = json.dumps({**chat(prompt, max_tokens=300), "stream": stream}).encode()
        host, port = url.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=60)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        if stream:
            seen = b""
            while b'"content"' not in seen:
                seen += sock.recv(4096)
        else:
            deadline = time.monotonic() + 30
            while service.engine.active_rows == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
        sock.close()  # the client goes away mid-answer
        deadline = time.monotonic() + 30
        while service.engine.active_rows and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.engine.active_rows == 0
        assert service.stats()["tokens"] - before < 300  # it did not decode to the end


def test_cli_serves_a_run_directory_and_drains_on_sigterm(endless_server, tmp_path):
    """`ctrlalign serve` in its own process, on a free port it reports, from a saved run;
    SIGTERM lets the request in flight finish, then the process exits with status 0."""
    run, _, _ = endless_server
    save_run(tmp_path / "run", run.model, run.tokenizer, run.info, {}, save_lm=True)
    cmd = [sys.executable, "-m", "ctrlalign.cli", "serve", "--run", str(tmp_path / "run")]
    for flag, value in (
        ("--max-batch-size", "0"),
        ("--tensor-parallel-size", "0"),
        ("--gpu-memory-utilization", "1.5"),
        ("--engine", "tgi"),
    ):
        bad = subprocess.run([*cmd, flag, value], capture_output=True, text=True)
        assert bad.returncode == 2 and flag in bad.stderr, (flag, bad.stderr)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*cmd, "--port", "0", "--max-new-tokens", str(CAP)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving run on http://127.0.0.1:"), line
        url = line.split()[3].removesuffix("/v1")
        deadline = time.monotonic() + 120
        while call_or_none(url) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        status, reply = call(
            url, "/v1/chat/completions", chat(PROMPTS[0], max_tokens=4, model="run")
        )
        assert status == 200 and reply["model"] == "run"
        expected = generate_rows(
            run.model, run.tokenizer, [alpha_row(PROMPTS[0], 1.0, "good")], GenerationConfig(4)
        )[0]
        assert reply["choices"][0]["message"]["content"] == expected
        prompt = LONG
        with ThreadPoolExecutor(1) as pool:
            body = chat(prompt, max_tokens=300, model="run")
            flight = pool.submit(call, url, "/v1/chat/completions", body)
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            status, reply = flight.result(timeout=120)
        assert status == 200 and reply["usage"]["completion_tokens"] == 300
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def call_or_none(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


class RecordingEngine:
    """A second ``ServingEngine``, as a vLLM engine would be: it answers every choice with
    the job it was given (its streams, weights and cap as text), refuses when told to, and
    reports through the sinks it was handed. The service and the app must need nothing else."""

    def __init__(self):
        self.stats = {"requests": 0}
        self.jobs = []
        self.refuse: Exception | None = None
        self.closed = False
        self.alive = True

    @property
    def queue_length(self) -> int:
        return 0

    @property
    def active_rows(self) -> int:
        return 0

    def submit(self, job, sink):
        if self.refuse is not None:
            raise self.refuse
        self.jobs.append(job)
        self.stats["requests"] += 1
        text = f"{[s.preference for s in job.streams]} {list(job.weights)} {job.max_new_tokens}"
        for choice in range(job.n):
            sink(Event("finish", choice, text, text, "length", job.max_new_tokens))
        return Handle(job, sink)

    def close(self, timeout=None):
        self.closed = True


def test_a_second_engine_plugs_into_the_same_service_and_surface():
    """``Service(run, name, engine=...)`` serves any ``ServingEngine``: the request is
    validated and dialled into jobs as for the builtin engine, the engine's events become
    OpenAI's body, its refusals HTTP 429 and 503, and shutdown closes it."""
    engine = RecordingEngine()
    service = Service(meet_run(), "test-run", max_new_tokens=CAP, engine=engine)
    server = ServerThread(build_app(service))
    try:
        body = chat(PROMPTS[0], preference="bad", against="good", alpha=0.5, max_tokens=7, n=2)
        status, reply = call(server.url, "/v1/chat/completions", body)
        assert status == 200, reply
        expected = "['good', 'bad'] [0.5, 0.5] 7"  # low: `against`, high: `preference`
        assert [c["message"]["content"] for c in reply["choices"]] == [expected, expected]
        assert reply["usage"]["completion_tokens"] == 14 and reply["alpha"] == 0.5
        assert len(engine.jobs) == 1 and engine.jobs[0].n == 2
        status, reply = call(server.url, "/v1/chat/completions", chat("x", alpha="high"))
        assert status == 400 and reply["error"]["param"] == "alpha"
        assert len(engine.jobs) == 1  # refused before the engine
        engine.refuse = QueueFull("1 request is already waiting")
        assert call(server.url, "/v1/chat/completions", chat("x"))[0] == 429
        engine.refuse = EngineClosed("shutting down")
        assert call(server.url, "/v1/chat/completions", chat("x"))[0] == 503
        assert call(server.url, "/health")[0] == 200
        engine.alive = False  # its process died: /health says so at once
        status, reply = call(server.url, "/health")
        assert status == 503 and reply["error"]["code"] == "engine_dead"
    finally:
        server.stop()
    assert engine.closed


def test_offline_rows_through_an_engine_equal_the_decode_core():
    """``generate_ids(..., engine=...)`` (how ``--engine vllm`` answers generate, alpha-sweep
    and evaluate) gives the synchronous driver's ids, dial rows included; a queue of one
    makes the driver wait for room (``QueueFull``) instead of failing."""
    from ctrlalign.inference.engine import Engine

    run = meet_run()
    rows = [
        alpha_row(p, alpha, "good", "bad", max_new_tokens=12)
        for p in PROMPTS
        for alpha in (0.0, 0.5, 1.0)
    ]
    config = GenerationConfig(max_new_tokens=12)
    direct = generate_ids(run.model, run.tokenizer, rows, config)
    engine = Engine(run.model, run.tokenizer, max_batch_size=4, max_queue=1)
    try:
        assert generate_ids(run.model, run.tokenizer, rows, config, engine=engine) == direct
    finally:
        engine.close(5)
    assert engine.stats["requests"] == len(rows)
