"""`ctrlalign serve` as a user meets it: a real server process on 127.0.0.1 with an API
key, driven by the official ``openai`` client (sync, async, streaming), and schemathesis
generating bodies from the server's own OpenAPI schema: none may get a 5xx."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai
import pytest
import schemathesis
import torch
from conftest import big_init
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from ctrlalign.inference.generation import GenerationConfig, alpha_row, generate_rows
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.controls import build_control
from ctrlalign.model.loading import load_model
from ctrlalign.model.rundir import Run, save_run

KEY = "test-key"
CAP = 16


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(run, base url): the tiny MEET LoRA run saved, then served by `ctrlalign serve`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    lm, tok = load_model("tiny")
    big_init(lm)
    control = build_control("lora", ["good", "bad"], lora_rank=2)
    lm = control.attach(lm, tok)
    big_init(lm, std=0.3, seed=1)
    info = {"method": "meet-lora", "control": "lora", "preferences": ["good", "bad"]}
    run = Run(ControlledLM(lm, control), tok, {**info, "lora_rank": 2, "chosen": "good"})
    directory = tmp_path_factory.mktemp("served") / "run"
    save_run(directory, run.model, run.tokenizer, run.info, {}, save_lm=True)
    cmd = [sys.executable, "-m", "ctrlalign.cli", "serve", "--run", str(directory), "--port", "0"]
    cmd += ["--max-new-tokens", str(CAP), "--max-n", "3", "--batch-wait-ms", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CTRLALIGN_API_KEY": KEY}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        url = proc.stdout.readline().split()[3].removesuffix("/v1")
        deadline = time.monotonic() + 120
        while _health(url) != 200:
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
            time.sleep(0.1)
        yield run, url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        torch.set_num_threads(before)


def _health(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def expected(run: Run, prompt: str, preference: str = "good", tokens: int = CAP) -> str:
    row = alpha_row(prompt, 1.0, preference)
    return generate_rows(run.model, run.tokenizer, [row], GenerationConfig(tokens))[0]


def client(url: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, **kw)


def test_sync_client(server):
    run, url = server
    api = client(url)
    assert [m.id for m in api.models.list().data] == ["run", "run:good", "run:bad"]
    messages = [{"role": "user", "content": "Hi!"}]
    reply = api.chat.completions.create(model="run", messages=messages, max_tokens=8)
    assert reply.choices[0].message.content == expected(run, "Hi!", tokens=8)
    assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0
    bad = api.chat.completions.create(model="run:bad", messages=messages, max_tokens=8)
    extra = api.chat.completions.create(
        model="run", messages=messages, max_tokens=8, extra_body={"preference": "bad"}
    )
    assert bad.choices[0].message.content == extra.choices[0].message.content
    assert bad.choices[0].message.content == expected(run, "Hi!", "bad", 8)
    dial = api.chat.completions.create(
        model="run",
        messages=messages,
        max_tokens=8,
        n=2,
        temperature=0.9,
        seed=3,
        stop=["\n\n"],
        extra_body={"preference": "good", "against": "bad", "alpha": 1.5},
    )
    assert len(dial.choices) == 2 and dial.model == "run"
    scored = api.chat.completions.create(
        model="run", messages=messages, max_tokens=4, logprobs=True, top_logprobs=2
    )
    entries = scored.choices[0].logprobs.content
    assert len(entries) == scored.usage.completion_tokens
    assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries)
    text = api.completions.create(model="run:good", prompt="Once upon a time", max_tokens=5)
    assert text.object == "text_completion" and text.usage.completion_tokens <= 5


def test_blends_per_request(server):
    """A blend in ``preference`` (a mapping, or text), composed natively or by logits, is
    answered as ``dial_row`` and the generator answer it; bad ones name their field."""
    from ctrlalign.inference.dial import DialRequest, dial_row

    run, url = server
    api = client(url)
    messages = [{"role": "user", "content": "Hi!"}]
    for blend, compose in [({"good": 1.0, "bad": 0.5}, None), ("good+bad=3", "logits")]:
        body = {"preference": blend} | ({"compose": compose} if compose else {})
        reply = api.chat.completions.create(
            model="run", messages=messages, max_tokens=8, extra_body=body
        )
        row = dial_row(run, DialRequest(messages, blend, compose=compose or "native"))
        want = generate_rows(run.model, run.tokenizer, [row], GenerationConfig(8))[0]
        assert reply.choices[0].message.content == want
    for body, param in [
        ({"preference": {"good": -1}}, "preference"),
        ({"preference": "good+ugly"}, "preference"),
        ({"preference": "good+bad", "compose": "sum"}, "compose"),
    ]:
        with pytest.raises(openai.BadRequestError) as err:
            api.chat.completions.create(model="run", messages=messages, extra_body=body)
        assert err.value.param == param, body


def test_errors_reach_the_client_as_openai_errors(server):
    _, url = server
    api = client(url)
    messages = [{"role": "user", "content": "Hi!"}]
    with pytest.raises(openai.BadRequestError) as err:
        api.chat.completions.create(model="run", messages=messages, extra_body={"alpha": "x"})
    assert err.value.param == "alpha"
    with pytest.raises(openai.BadRequestError) as err:
        api.chat.completions.create(model="run", messages=messages, presence_penalty=1.0)
    assert err.value.param == "presence_penalty"
    with pytest.raises(openai.BadRequestError) as err:
        api.chat.completions.create(model="run", messages=messages, max_tokens=CAP + 1)
    assert err.value.param == "max_tokens"
    with pytest.raises(openai.NotFoundError) as err:
        api.chat.completions.create(model="run:ugly", messages=messages)
    assert err.value.code == "model_not_found"
    wrong = openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_streaming_sync(server):
    run, url = server
    api = client(url)
    messages = [{"role": "user", "content": "Tell me about dogs."}]
    stream = api.chat.completions.create(
        model="run", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected(run, "Tell me about dogs.")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert len(finish) == 1 and finish[0] in ("stop", "length")
    raw = api.completions.create(model="run", prompt="The dog", max_tokens=6, stream=True)
    whole = api.completions.create(model="run", prompt="The dog", max_tokens=6)
    assert "".join(c.choices[0].text for c in raw) == whole.choices[0].text


def test_async_clients_concurrently(server):
    run, url = server
    prompts = ["Hi!", "What is two plus two?", "Tell me about dogs.", "Name a colour."]
    cases = [(p, pref) for p in prompts for pref in ("good", "bad")]

    async def main():
        api = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)

        async def one(prompt, pref):
            return await api.chat.completions.create(
                model=f"run:{pref}", messages=[{"role": "user", "content": prompt}], max_tokens=10
            )

        async def streamed(prompt):
            stream = await api.chat.completions.create(
                model="run",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=10,
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream])

        replies = await asyncio.gather(*(one(p, pref) for p, pref in cases))
        streams = await asyncio.gather(*(streamed(p) for p in prompts))
        await api.close()
        return replies, streams

    replies, streams = asyncio.run(main())
    for (prompt, pref), reply in zip(cases, replies, strict=True):
        assert reply.choices[0].message.content == expected(run, prompt, pref, 10)
    for prompt, text in zip(prompts, streams, strict=True):
        assert text == expected(run, prompt, "good", 10)


def test_no_generated_body_gets_a_server_error(server):
    """Schemathesis draws bodies that fit the schema and bodies that do not, for every
    operation; each must get an answer below 500 (bounded: a few seconds per operation)."""
    _, url = server
    auth = {"Authorization": f"Bearer {KEY}"}
    schema = schemathesis.openapi.from_url(url + "/openapi.json", headers=auth)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions"}
    failures, calls = [], {}

    def run_cases(operation, mode) -> None:
        """Up to 30 drawn requests (5 for a GET) against the live server, 5xx recorded."""
        key = (operation.method.upper(), operation.path, str(mode))

        @settings(
            max_examples=30 if key[0] == "POST" else 5,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case):
            response = case.call(base_url=url, headers=auth, timeout=60)
            calls[key] = calls.get(key, 0) + 1
            if response.status_code >= 500:
                failures.append((key, case.body, response.text[:300]))

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid (a GET without parameters)
            assert mode == GenerationMode.NEGATIVE and key[0] == "GET", key

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_cases(operation, mode)
    assert not failures, failures[:5]
    for path in ("/v1/chat/completions", "/v1/completions"):
        for mode in GenerationMode:
            assert calls[("POST", path, str(mode))] >= 10, calls
