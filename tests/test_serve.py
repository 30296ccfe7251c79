"""`ctrlalign serve` over real HTTP: concurrent requests with their own preference, alpha and
max_tokens are batched together and answered exactly as one-by-one generation would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import big_init

from ctrlalign.inference import serving
from ctrlalign.inference.generation import (
    GenerationConfig,
    Row,
    alpha_row,
    generate_ids,
    generate_rows,
)
from ctrlalign.inference.serving import Service, make_server
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.controls import build_control
from ctrlalign.model.identity_layer import insert_identity_layer
from ctrlalign.model.loading import load_model
from ctrlalign.model.rundir import Run, save_run

PROMPTS = ["What is two plus two?", "Hi!", "Tell me about dogs."]


def start(run: Run, wait_s: float = 0.0):
    service = Service(run, "test-run", max_new_tokens=12, max_batch_size=16, batch_wait_s=wait_s)
    server = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return service, server, f"http://127.0.0.1:{server.server_address[1]}"


def call(url: str, path: str, body: object = None, raw: bytes | None = None):
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def chat(prompt: str, **extra) -> dict:
    return {"model": "test-run", "messages": [{"role": "user", "content": prompt}], **extra}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def meet_server():
    lm, tok = load_model("tiny")
    big_init(lm)
    control = build_control("lora", ["good", "bad"], lora_rank=2)
    lm = control.attach(lm, tok)
    big_init(lm, std=0.3, seed=1)
    model = ControlledLM(lm, control)
    info = {
        "method": "meet-lora",
        "control": "lora",
        "preferences": ["good", "bad"],
        "lora_rank": 2,
    }
    run = Run(model, tok, {**info, "chosen": "good"})
    service, server, url = start(run, wait_s=0.5)
    yield run, service, url
    server.shutdown()
    server.server_close()
    service.batcher.close()


@pytest.fixture(scope="module")
def clm_server():
    lm, tok = load_model("tiny")
    layer = insert_identity_layer(lm)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    info = {"method": "clm", "clm": True, "control": None, "preferences": [], "chosen": "good"}
    run = Run(ControlledLM(lm), tok, info)
    service, server, url = start(run)
    yield run, service, url
    server.shutdown()
    server.server_close()
    service.batcher.close()


def test_concurrent_requests_are_batched_and_equal_one_by_one(meet_server):
    run, service, url = meet_server
    requests = [
        chat(PROMPTS[0]),  # the run's chosen preference
        chat(PROMPTS[0], preference="bad", max_tokens=5),
        chat(PROMPTS[1], preference="bad"),
        chat(PROMPTS[1], preference="good", against="bad", alpha=1.5, max_tokens=7),
        chat(PROMPTS[2], preference="good", against="bad", alpha=-0.5),
        chat(PROMPTS[2], preference="good", max_tokens=3),
    ]
    before = service.stats()
    with ThreadPoolExecutor(len(requests)) as pool:
        replies = list(pool.map(lambda body: call(url, "/v1/chat/completions", body), requests))

    assert all(status == 200 for status, _ in replies), replies
    after = service.stats()
    assert after["requests"] - before["requests"] == len(requests)
    assert after["batches"] - before["batches"] < len(requests)  # they shared decodes
    config = GenerationConfig(max_new_tokens=12)
    for body, (_, reply) in zip(requests, replies, strict=True):
        prompt = body["messages"][0]["content"]
        row = alpha_row(
            prompt, body.get("alpha", 1.0), body.get("preference", "good"), body.get("against")
        )
        limit = body.get("max_tokens", 12)
        alone = Row(row.messages, row.streams, row.weights, limit)
        ids = generate_ids(run.model, run.tokenizer, [alone], config)[0]
        assert (
            reply["choices"][0]["message"]["content"]
            == generate_rows(run.model, run.tokenizer, [alone], config)[0]
        )
        assert reply["usage"]["completion_tokens"] == len(ids) <= limit
        stopped = ids[-1] == run.tokenizer.eos_token_id
        assert reply["choices"][0]["finish_reason"] == ("stop" if stopped else "length")
        assert reply["object"] == "chat.completion" and reply["model"] == "test-run"
        assert reply["usage"]["total_tokens"] > reply["usage"]["completion_tokens"]
    good, bad = replies[0][1], replies[1][1]
    assert good["preference"] == "good" and bad["preference"] == "bad"
    assert bad["usage"]["completion_tokens"] <= 5


def test_clm_alpha_per_request(clm_server):
    run, service, url = clm_server
    answers = {}
    for alpha in (0, 0.5, 1, 2):
        status, reply = call(url, "/v1/chat/completions", chat(PROMPTS[0], alpha=alpha))
        assert status == 200, reply
        answers[alpha] = reply["choices"][0]["message"]["content"]
        row = alpha_row(PROMPTS[0], alpha)
        expected = generate_rows(run.model, run.tokenizer, [row], GenerationConfig(12))[0]
        assert answers[alpha] == expected
    status, reply = call(url, "/v1/chat/completions", chat(PROMPTS[0]))
    assert reply["choices"][0]["message"]["content"] == answers[1]  # default: aligned
    assert answers[0] != answers[1]


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        (chat("x", preference="ugly"), "ugly", "preference"),
        (chat("x", preference="good", against="ugly", alpha=0.5), "ugly", "against"),
        (chat("x", alpha="lots"), "alpha must be a number", "alpha"),
        (chat("x", alpha=0.5), "`alpha` needs a CLM run", None),
        (chat("x", max_tokens=0), "max_tokens", "max_tokens"),
        (chat("x", max_tokens=13), "over this server's --max-new-tokens 12", "max_tokens"),
        (chat("x", temperature=-1), "temperature", "temperature"),
        (chat("x", stream=True), "streaming", "stream"),
        ({"messages": []}, "messages", "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0]", "messages"),
        ([1, 2], "JSON object", None),
    ],
)
def test_bad_requests_get_400_naming_the_field(meet_server, body, message, param):
    _, service, url = meet_server
    before = service.stats()
    status, reply = call(url, "/v1/chat/completions", body)
    assert status == 400
    assert message in reply["error"]["message"]
    assert reply["error"]["param"] == param
    assert reply["error"]["type"] == "invalid_request_error"
    assert service.stats() == before  # refused before it reached the model


def test_routes_and_malformed_json(meet_server, clm_server):
    _, _, url = meet_server
    assert call(url, "/health") == (200, {"status": "ok"})
    status, models = call(url, "/v1/models")
    card = models["data"][0]
    assert card["id"] == "test-run" and card["preferences"] == ["good", "bad"]
    assert card["default_preference"] == "good"
    status, reply = call(url, "/v1/chat/completions", raw=b"{not json")
    assert status == 400 and "not JSON" in reply["error"]["message"]
    assert call(url, "/v1/embeddings", {})[0] == 404
    _, _, clm_url = clm_server
    status, reply = call(clm_url, "/v1/chat/completions", chat("x", preference="good"))
    assert status == 400 and "CLM run" in reply["error"]["message"]


def test_a_failed_batch_is_reported_and_the_server_goes_on(meet_server, monkeypatch):
    run, _, url = meet_server

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(serving, "generate_ids", broken)
    status, reply = call(url, "/v1/chat/completions", chat(PROMPTS[0]))
    assert status == 500 and "out of memory" in reply["error"]["message"]
    monkeypatch.undo()
    status, reply = call(url, "/v1/chat/completions", chat(PROMPTS[0], max_tokens=4))
    assert status == 200 and reply["usage"]["completion_tokens"] <= 4


def test_cli_serves_a_run_directory(meet_server, tmp_path):
    """`ctrlalign serve` in its own process, on a free port it reports, from a saved run."""
    run, _, _ = meet_server
    save_run(tmp_path / "run", run.model, run.tokenizer, run.info, {}, save_lm=True)
    cmd = [sys.executable, "-m", "ctrlalign.cli", "serve", "--run", str(tmp_path / "run")]
    bad = subprocess.run([*cmd, "--max-batch-size", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--max-batch-size" in bad.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*cmd, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving run on http://127.0.0.1:"), line
        url = line.split()[3].removesuffix("/v1")
        assert call(url, "/health") == (200, {"status": "ok"})
        status, reply = call(url, "/v1/chat/completions", chat(PROMPTS[0], max_tokens=4))
        assert status == 200 and reply["model"] == "run"
        expected = generate_rows(
            run.model, run.tokenizer, [alpha_row(PROMPTS[0], 1.0, "good")], GenerationConfig(4)
        )[0]
        assert reply["choices"][0]["message"]["content"] == expected
    finally:
        proc.terminate()
        proc.wait(timeout=30)
