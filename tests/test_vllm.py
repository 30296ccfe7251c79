"""``--engine vllm`` against a real vLLM, in the serving environment (``make test-vllm``).

Greedy answers from vLLM equal the builtin engine's token for token (fp32) for every control
kind, for a LoRA blend, and for the dial's alphas mixed in one batch (the rows of alpha 0
and 1 decoded by vLLM, the others by the builtin engine beside it); a request gets the same
400 on both engines; a client that goes cancels its answer, close drains, and an engine
process that dies turns /health and new requests into 503.

The model is a two-layer Llama whose heads are 64 wide (vLLM's CPU attention has no kernel
for the 16-wide heads of the suite's usual tiny model), with the suite's large init so that
greedy picks are not decided by float noise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

if os.environ.get("CTRLALIGN_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm", reason="the vLLM tests run in the serving env: make test-vllm")

import openai
import psutil
import requests
import torch
from conftest import big_init
from transformers import LlamaForCausalLM

from ctrlalign.inference.dial import DialRequest, dial_row
from ctrlalign.inference.engine import Engine
from ctrlalign.inference.export import command_parts, export_run
from ctrlalign.inference.generation import GenerationConfig, Row, generate_ids
from ctrlalign.inference.serving.app import build_app
from ctrlalign.inference.serving.engines import offline_engine
from ctrlalign.inference.serving.protocol import ChatCompletionRequest
from ctrlalign.inference.serving.server import ServerThread
from ctrlalign.inference.serving.service import Service
from ctrlalign.inference.vllm_engine import VllmEngine
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.controls import build_control
from ctrlalign.model.identity_layer import insert_identity_layer
from ctrlalign.model.loading import load_tokenizer, tiny_model
from ctrlalign.model.rundir import Run

pytestmark = pytest.mark.vllm

PROMPTS = ["What is two plus two?", "Hi!", "Tell me about dogs.", "Name a colour."]
PREFS = ["good", "bad", "meh"]
TOKENS = 20
#: vLLM on a CPU reserves this fraction of the machine's RAM for weights and KV cache
MEMORY = 0.05


def vllm_tiny() -> tuple[LlamaForCausalLM, object]:
    tok = load_tokenizer("smollm2")
    heads = {"num_attention_heads": 2, "num_key_value_heads": 1}  # 128 / 2: 64 wide
    return big_init(tiny_model(tok, hidden_size=128, intermediate_size=256, **heads)), tok


def meet_run(kind: str) -> Run:
    lm, tok = vllm_tiny()
    control = build_control(kind, PREFS, lora_rank=2, soft_prompt_length=3)
    lm = control.attach(lm, tok)
    if kind == "lora":
        big_init(lm, std=0.3, seed=1)  # B starts at zero: every adapter would be the identity
    elif kind == "soft-prompt":
        with torch.no_grad():
            control.prompts.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    info = {"method": f"meet-{kind}", "control": kind, "preferences": PREFS, "chosen": "good"}
    return Run(ControlledLM(lm, control), tok, info)


def clm_run() -> Run:
    lm, tok = vllm_tiny()
    big_init(insert_identity_layer(lm), std=0.3, seed=2)  # not the identity: alpha matters
    info = {"method": "clm", "clm": True, "control": None, "preferences": []}
    return Run(ControlledLM(lm), tok, info)


def vllm_service(run: Run, folder: Path) -> Service:
    fallback = Engine(run.model, run.tokenizer, max_batch_size=16)
    engine = VllmEngine(
        run, folder, fallback, gpu_memory_utilization=MEMORY, dtype="float32", max_num_seqs=16
    )
    return Service(run, "test-run", max_new_tokens=64, engine=engine)


def body(prompt: str, **fields) -> dict:
    return {"model": "test-run", "messages": [{"role": "user", "content": prompt}], **fields}


def builtin_ids(run: Run, bodies: list[dict]) -> list[list[int]]:
    """One batch of the builtin decode core, the reference answers."""
    rows = []
    for b in bodies:
        request = DialRequest(b["messages"], b.get("preference"), b.get("against"), b.get("alpha"))
        row = dial_row(run, request)
        rows.append(Row(row.messages, row.streams, row.weights, b.get("max_tokens", TOKENS)))
    return generate_ids(run.model, run.tokenizer, rows, GenerationConfig(max_new_tokens=TOKENS))


def engine_ids(service: Service, bodies: list[dict]) -> list[list[int]]:
    """Every body submitted at once (they share the engine's batches), each answer's token
    ids read from its log-probabilities."""
    done, events = threading.Semaphore(0), {}
    for i, b in enumerate(bodies):
        fields = {"max_tokens": TOKENS, "logprobs": True, "top_logprobs": 0, **b}
        (job,) = service.prepare(ChatCompletionRequest(**fields)).jobs

        def sink(event, i=i):
            if event.kind in ("finish", "error"):
                events[i] = event
                done.release()

        service.engine.submit(job, sink)
    for _ in bodies:
        assert done.acquire(timeout=120), "an answer never finished"
    assert all(e.kind == "finish" for e in events.values()), events
    return [[token for token, _, _ in events[i].logprobs] for i in range(len(bodies))]


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    run = meet_run("lora")
    service = vllm_service(run, tmp_path_factory.mktemp("lora") / "vllm")
    server = ServerThread(build_app(service))
    yield run, service, server.url
    server.stop()
    service.close(10)


@pytest.mark.parametrize("kind", ["prompt", "token", "soft-prompt"])
def test_prefix_controls_answer_as_the_builtin_engine(kind, tmp_path):
    """Prompt and token controls as prefix ids, soft prompts as prompt embeddings: each
    preference in one vLLM batch, every answer equal to the builtin engine's."""
    run = meet_run(kind)
    service = vllm_service(run, tmp_path / "vllm")
    try:
        bodies = [body(p, preference=pref) for p in PROMPTS for pref in PREFS]
        got = engine_ids(service, bodies)
        assert got == builtin_ids(run, bodies)
        assert service.engine.stats["vllm_requests"] == len(bodies)
        assert len({tuple(ids) for ids in got}) > len(PROMPTS)  # the preferences differ
        if kind == "token":  # a control's own token is never generated
            assert not set(run.model.control.token_ids) & {t for ids in got for t in ids}
    finally:
        service.close(10)


def test_lora_preferences_blends_and_the_dial_in_one_batch(lora):
    """LoRA preferences, a blend (one adapter of the summed rank) and alphas 0, 0.5, 1 and
    1.5 submitted together: alpha 0 and 1 pay one stream on vLLM, 0.5 and 1.5 mix two on
    the builtin engine; every answer equals the builtin engine's."""
    run, service, _ = lora
    before = dict(service.engine.stats)
    bodies = [body(p, preference=pref) for p in PROMPTS[:2] for pref in PREFS]
    bodies += [body(p, preference={"good": 0.7, "meh": 0.3}) for p in PROMPTS]
    bodies += [
        body(p, preference="good", against="bad", alpha=alpha)
        for p in PROMPTS[:2]
        for alpha in (0, 0.5, 1, 1.5)
    ]
    got = engine_ids(service, bodies)
    assert got == builtin_ids(run, bodies)
    after = service.engine.stats
    assert after["vllm_requests"] - before["vllm_requests"] == 6 + 4 + 4
    assert after["fallback_requests"] - before["fallback_requests"] == 4
    blend = got[6:10]
    assert blend != got[0:1] * 4  # the blend is neither of its parts
    assert len(list((service.engine.folder / "blends").iterdir())) == 1  # built once


def test_offline_generation_answers_through_vllm(lora):
    """``generate_ids(..., engine=...)``, what ``--engine vllm`` runs for generate,
    alpha-sweep, controllability and evaluate: the decode core's ids, dial rows included."""
    run, service, _ = lora
    rows = [
        dial_row(run, DialRequest(p, "good", "bad", alpha))
        for p in PROMPTS
        for alpha in (0.0, 0.5, 1.0, 1.5)
    ]
    config = GenerationConfig(max_new_tokens=TOKENS)
    direct = generate_ids(run.model, run.tokenizer, rows, config)
    assert generate_ids(run.model, run.tokenizer, rows, config, engine=service.engine) == direct


def test_clm_dial_rows_of_every_alpha_in_one_batch(tmp_path):
    """A CLM run through ``offline_engine`` (what ``--engine vllm`` opens for generate and
    evaluate): alpha 1 is the exported aligned model on vLLM; 0, 0.5 and 1.5 need the
    unaligned stream, decoded beside it; all equal the builtin engine."""
    run = clm_run()
    rows = [
        dial_row(run, DialRequest(p, None, None, alpha))
        for p in PROMPTS[:2]
        for alpha in (0, 0.5, 1, 1.5)
    ]
    config = GenerationConfig(max_new_tokens=TOKENS)
    with offline_engine(run, tmp_path, "vllm", batch_size=16, memory=MEMORY) as engine:
        got = generate_ids(run.model, run.tokenizer, rows, config, engine=engine)
        assert engine.stats["vllm_requests"] == 2
    assert got == generate_ids(run.model, run.tokenizer, rows, config)
    assert len({tuple(ids) for ids in got[:4]}) == 4  # the dial moves the answer


def test_the_openai_surface_on_vllm(lora):
    """The OpenAI client against the vLLM engine: a preference named as the model,
    streaming that adds up to the answer, n seeded samples, a stop string, usage; refusals
    are the builtin engine's, field for field."""
    run, service, url = lora
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    messages = [{"role": "user", "content": PROMPTS[0]}]
    whole = client.chat.completions.create(model="test-run:bad", messages=messages, max_tokens=12)
    reference = builtin_ids(run, [body(PROMPTS[0], preference="bad", max_tokens=12)])[0]
    assert (
        whole.choices[0].message.content
        == run.tokenizer.decode(reference, skip_special_tokens=True).strip()
    )
    assert whole.usage.completion_tokens == len(reference)
    chunks = client.chat.completions.create(
        model="test-run:bad", messages=messages, max_tokens=12, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    stop = whole.choices[0].message.content.split()[2]
    cut = client.chat.completions.create(
        model="test-run:bad", messages=messages, max_tokens=12, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert whole.choices[0].message.content.startswith(cut.choices[0].message.content)
    assert stop not in cut.choices[0].message.content
    sampled = [
        client.chat.completions.create(
            model="test-run", messages=messages, max_tokens=8, n=3, temperature=1.0, seed=7
        )
        for _ in range(2)
    ]
    texts = [[c.message.content for c in s.choices] for s in sampled]
    assert texts[0] == texts[1] and len(texts[0]) == 3  # seeded: reproducible
    assert len(set(texts[0])) > 1  # choice i draws from seed + i
    assert requests.get(url + "/health").status_code == 200
    assert "ctrlalign_requests_total" in requests.get(url + "/metrics").text

    builtin = Service(run, "test-run", max_new_tokens=64)
    builtin_server = ServerThread(build_app(builtin))
    try:
        for bad in (
            body("x", alpha="high", preference="good", against="bad"),
            body("x", preference="nope"),
            body("x", max_tokens=1000),
            body("x", preference={"good": 0.5, "bad": 0.5}, against="bad", alpha=0.5),
        ):
            answers = [
                requests.post(u + "/v1/chat/completions", json=bad)
                for u in (url, builtin_server.url)
            ]
            assert answers[0].status_code == answers[1].status_code == 400
            assert answers[0].json() == answers[1].json()
    finally:
        builtin_server.stop()
        builtin.close(5)


def test_a_client_that_goes_cancels_its_answer(lora):
    run, service, url = lora
    long = body(PROMPTS[2], preference="good", max_tokens=64, stream=True)
    with requests.post(url + "/v1/chat/completions", json=long, stream=True, timeout=60) as r:
        next(r.iter_lines())
    engine = service.engine
    deadline = time.monotonic() + 30
    while (engine.active_rows or engine.queue_length) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.active_rows == 0 and engine.queue_length == 0


def test_export_command_serves_on_vllm(lora, tmp_path):
    """The command ``ctrlalign export`` prints runs on this vLLM build: each LoRA preference
    is a model name, and with ctrlalign's plugin installed a blend is one too
    (``test-run:good=0.7+meh=0.3``); both answer as the builtin engine does."""
    run, _, _ = lora
    manifest = export_run(run, tmp_path / "export", name="test-run")
    port = 18000 + os.getpid() % 1000
    env, command = command_parts(manifest["vllm"])
    assert env == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    assert command[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    # fp32 like the reference (vLLM's CPU build serves an fp32 checkpoint in bf16 by default)
    command += ["--port", str(port), "--gpu-memory-utilization", str(MEMORY), "--dtype", "float32"]
    log = tmp_path / "vllm.log"
    server = subprocess.Popen(  # not from the repository: its egg-info would shadow the plugin's
        [sys.executable, *command[1:]],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert server.poll() is None, "the exported command exited"
                time.sleep(1)
        prompt = run.tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPTS[1]}], add_generation_prompt=True, tokenize=False
        )
        for model, preference in (
            ("test-run:meh", "meh"),
            ("test-run:good=0.7+meh=0.3", {"good": 0.7, "meh": 0.3}),
        ):
            reference = builtin_ids(run, [body(PROMPTS[1], preference=preference, max_tokens=12)])
            try:
                answer = client.completions.create(
                    model=model, prompt=prompt, max_tokens=12, temperature=0
                )
            except openai.APIError as err:
                raise AssertionError(f"{model}: {err}\n{log.read_text()[-3000:]}") from None
            expected = run.tokenizer.decode(reference[0], skip_special_tokens=True)
            assert answer.choices[0].text == expected, model
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)


def test_an_engine_process_that_dies_turns_health_and_requests_into_503(lora):
    """Last in the module: it kills the fixture's vLLM engine process."""
    _, service, url = lora
    for child in psutil.Process().children(recursive=True):
        child.kill()
    deadline = time.monotonic() + 30
    while service.engine.alive and time.monotonic() < deadline:
        time.sleep(0.1)
    health = requests.get(url + "/health")
    assert health.status_code == 503 and health.json()["error"]["code"] == "engine_dead"
    answer = requests.post(url + "/v1/chat/completions", json=body("x", preference="good"))
    assert answer.status_code == 503
