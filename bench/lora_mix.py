"""Cost of a batch mixing LoRA preferences relative to a batch of one preference.

    .venv/bin/python bench/lora_mix.py [--preferences 8 --batch 8 --tokens 256 --rounds 3]

A LoRA control with ``--preferences`` adapters (rank ``--rank``, B drawn small and nonzero)
on the default SmolLM2 model. Three configurations, on batches of the same shape and
tokens, differing only in which adapter each row asks for:

- ``single``: every row asks for the same preference (a plain PEFT forward);
- ``mixed``: row i asks for preference i mod K: the batched per-row routing
  (``LoraControl.per_row``: one forward, per-row A and B gathered, two ``bmm``);
- ``mixed_old``: the same mixed batch through the paths this replaced, copied below as
  they were at commit 42155bc: in training one forward per preference present, each over
  its own rows; in generation every adapter on every row under a 0/1 row mask.

Training is one optimiser step (``ConditionalLMObjective`` forward, backward, AdamW over
the adapters: MEET's first step): ``--batch`` HH-RLHF examples cut to ``--tokens`` tokens,
loss on the response. Generation is ``generate_rows`` on ``--batch`` HH-RLHF prompts of
about ``--tokens - --new-tokens`` tokens, greedy, exactly ``--new-tokens`` new tokens per
row (no stop id). Configurations are interleaved within each of ``--rounds`` rounds after
one warm-up each; the figure kept is the fastest round's process CPU time (on a shared
machine CPU seconds measure the work, not the wait for a core: one torch thread, so idle
OpenMP threads spinning cannot count), wall seconds beside it. Target: mixed <= 1.15x
single in both. Where a target is missed, ``torch.profiler``'s top operators (self CPU
time) of one mixed and one single run are written beside the figures.

"kernel" times the routing choices for one adapted layer on SmolLM2's shapes (the q, MLP
up and down, and k projections), forward and backward over a batch x 256 x in input, and
a decoding step (batch x 1 x in, no grad), at rank 4 and 8 and K = 2 and 8: one adapter
(the reference), gathered per-row A/B with ``bmm`` or ``einsum``, sorted segments (one
sub-batch per adapter, the layout of PEFT's ``adapter_names``), every adapter under a row
mask (the old generation path), and for decoding the gathered weights kept across steps
(what ``per_row`` does under ``no_grad``). Results: ``bench/results/lora_mix.json``.

``--parts padded`` (not in the default run; ``make bench`` runs it into
``lora_mix_padded.json``) is the case the equal-length batches above cannot show: the
first ``--batch`` HH-RLHF examples at their own lengths (cut at 512), two preferences
alternating, one padded batch, one routed forward against the old path's forward per
preference, which cut each preference's rows to their own longest.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from common import HH_TEST, REPO, require_file, run_header, write_json_atomic

RESULTS = REPO / "bench" / "results" / "lora_mix.json"
TARGET = 1.15  # mixed / single, at most, in training and in generation
NEVER = -1  # a stop id no token has: every row generates exactly --new-tokens


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--preferences", type=int, default=8, help="K: adapters in the mixed batch")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=256, help="tokens per row (prompt + answer)")
    p.add_argument("--new-tokens", type=int, default=32, help="generated tokens per row")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--parts",
        default="kernel,train,generate",
        help="comma-separated: kernel, train, generate, padded (not run by default)",
    )
    p.add_argument("--data", type=Path, default=HH_TEST)
    p.add_argument("--output", type=Path, default=RESULTS)
    return p.parse_args()


# ---- the replaced paths, as they were at commit 42155bc (only for the comparison) ----


def old_token_logps(model, input_ids, attention_mask, labels, prefix_mask, preference_ids, *packed):
    """``ControlledLM.token_logps`` before batched routing: one forward per preference
    (padded batches only: ``packed``, the packed layout's position ids, prefix blocks and
    token preferences, must be None)."""
    from ctrlalign.model.logprobs import IGNORE_INDEX, lm_logits, response_logps

    if any(part is not None for part in packed):
        raise ValueError("the old path took padded batches only")

    head = partial(lm_logits, model.base)
    all_logps, all_rows = [], []
    for pid in preference_ids.unique().tolist():
        rows = (preference_ids == pid).nonzero(as_tuple=True)[0]
        used = ((attention_mask[rows] != 0) | (labels[rows] != IGNORE_INDEX)).any(0)
        width = int(used.nonzero().max()) + 1 if bool(used.any()) else input_ids.shape[1]
        ids, mask = input_ids[rows, :width], attention_mask[rows, :width]
        prefix = prefix_mask[rows, :width] if prefix_mask is not None else None
        with model.control.use(model.control.preferences[pid]):
            hidden = model.hidden_states(ids, mask, prefix, preference_ids[rows])
        logps, local = response_logps(hidden, labels[rows, :width], head)
        all_logps.append(logps)
        all_rows.append(rows[local])
    return torch.cat(all_logps), torch.cat(all_rows)


@contextlib.contextmanager
def old_per_row(control, preferences: Sequence[str]) -> Iterator[None]:
    """``LoraControl.per_row`` before batched routing: every adapter on every row, masked."""
    from peft.tuners.lora import Linear as LoraLinear

    first = next(control.peft.parameters())
    owners = torch.tensor([control.index(p) for p in preferences], device=first.device)
    masks = {
        pref: (owners == control.index(pref)).to(first.dtype).view(-1, 1, 1)
        for pref in dict.fromkeys(preferences)
    }
    patched = [m for m in control.peft.modules() if isinstance(m, LoraLinear)]
    for module in patched:
        module.forward = partial(_old_per_row_forward, module, masks)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def _old_per_row_forward(module, masks, x, *args, **kwargs):
    result = module.base_layer(x, *args, **kwargs)
    for pref, mask in masks.items():
        delta = module.lora_B[pref](module.lora_A[pref](x.to(module.lora_A[pref].weight.dtype)))
        result = result + (delta * (module.scaling[pref] * mask)).to(result.dtype)
    return result


# ---- the kernel choice, one layer ----


def _kernels() -> dict[str, Callable]:
    def single(h, a, b, rows, segs):
        return h @ a[0].T @ b[0].T

    def gather_bmm(h, a, b, rows, segs):
        return torch.bmm(torch.bmm(h, a[rows].mT), b[rows].mT)

    def gather_einsum(h, a, b, rows, segs):
        return torch.einsum("btr,bor->bto", torch.einsum("bti,bri->btr", h, a[rows]), b[rows])

    def segments(h, a, b, rows, segs):
        order, inverse, bounds = segs
        hs = h[order]
        parts = [hs[s:e] @ a[k].T @ b[k].T for k, (s, e) in enumerate(bounds)]
        return torch.cat(parts)[inverse]

    def masked(h, a, b, rows, segs):
        out = torch.zeros((), dtype=h.dtype, device=h.device)
        for k in range(a.shape[0]):
            mask = (rows == k).to(h.dtype).view(-1, 1, 1)
            out = out + (h @ a[k].T @ b[k].T) * mask
        return out

    return {
        "single": single,
        "gather_bmm": gather_bmm,
        "gather_einsum": gather_einsum,
        "segments": segments,
        "masked": masked,
    }


def _best_cpu(fn: Callable[[], object], reps: int, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(reps):
            fn()
        best = min(best, (time.process_time() - start) / reps)
    return best


def _layer_ms(
    fn: Callable,
    shapes: list[tuple[int, int]],
    batch: int,
    width: int,
    rank: int,
    k: int,
    kept: bool = False,
) -> float:
    """Process-CPU milliseconds of ``fn`` summed over the layer shapes; forward and
    backward when ``width`` > 1 (a training batch), a no-grad decoding step otherwise.
    ``kept``: A and B are gathered per row before the clock starts (``fn`` gets those)."""
    device = torch.device("cpu")
    gen = torch.Generator(device=device).manual_seed(0)
    rows = torch.arange(batch, device=device) % k
    order = torch.argsort(rows, stable=True)
    counts = torch.bincount(rows, minlength=k).tolist()
    bounds = [(sum(counts[:i]), sum(counts[: i + 1])) for i in range(k)]
    segs = (order, torch.argsort(order), bounds)
    grad = width > 1
    total = 0.0
    for n_in, n_out in shapes:
        x = torch.randn(batch, width, n_in, generator=gen, device=device).requires_grad_(grad)
        a = torch.randn(k, rank, n_in, generator=gen, device=device).requires_grad_(grad)
        b = torch.randn(k, n_out, rank, generator=gen, device=device).requires_grad_(grad)
        if kept:
            a, b = a[rows], b[rows]

        def call(x=x, a=a, b=b) -> None:
            with torch.set_grad_enabled(grad):
                out = fn(x, a, b, rows, segs)
            if grad:
                out.sum().backward()

        call()
        total += _best_cpu(call, 3 if grad else 200)
    return round(total * 1e3, 3)


def _kept(x, a, b, rows, segs):
    """Decoding under ``per_row``: ``a`` and ``b`` are the per-row weights, gathered once."""
    return torch.bmm(torch.bmm(x, a.mT), b.mT)


def kernel(batch: int) -> dict:
    """Milliseconds (process CPU) per call over four SmolLM2 layer shapes, per method."""
    shapes = [(576, 576), (576, 1536), (1536, 576), (576, 192)]  # q, up, down, k
    out: dict = {"shapes_in_out": shapes, "batch": batch}
    for mode, width in (("train_fwd_bwd", 256), ("decode_step", 1)):
        for rank in (4, 8):
            for k in (2, 8):
                times = {
                    n: _layer_ms(fn, shapes, batch, width, rank, k) for n, fn in _kernels().items()
                }
                if width == 1:  # what per_row does under no_grad
                    times["gather_kept"] = _layer_ms(_kept, shapes, batch, 1, rank, k, kept=True)
                out[f"{mode}/rank{rank}/K{k}"] = times
                print(f"[bench] kernel {mode} rank {rank} K {k}: {times}", flush=True)
    return out


# ---- the model-level comparison ----


def train_batches(tokenizer, control, records, batch: int, tokens: int, k: int) -> dict:
    """The same ``batch`` x ``tokens`` examples, as a single-preference and a mixed batch."""
    from ctrlalign.model.layout import collate, encode
    from ctrlalign.model.logprobs import IGNORE_INDEX

    rows = []
    for record in records:
        answer = record.responses["good"]  # HH-RLHF's chosen response
        example = encode(tokenizer, control, record.chat, control.preferences[0], answer)
        if len(example.input_ids) >= tokens and any(
            label != IGNORE_INDEX for label in example.labels[:tokens]
        ):
            rows.append(example)
        if len(rows) == batch:
            break
    if len(rows) < batch:
        raise SystemExit(f"error: fewer than {batch} examples of {tokens} tokens in the data")
    cut = [replace(e, input_ids=e.input_ids[:tokens], labels=e.labels[:tokens]) for e in rows]
    single = collate(cut, tokenizer.pad_token_id)
    mixed = dict(single, preference_ids=torch.arange(batch) % k)
    return {"single": single, "mixed": mixed}


def generation_prompts(tokenizer, records, batch: int, tokens: int) -> list:
    """``batch`` HH-RLHF prompts whose chat-templated length is close to ``tokens``."""
    from ctrlalign.model.layout import prompt_ids

    scored = []
    for record in records:
        n = len(prompt_ids(tokenizer, record.chat))
        if n <= tokens:
            scored.append((tokens - n, record.chat))
    scored.sort(key=lambda item: item[0])
    if len(scored) < batch:
        raise SystemExit(f"error: fewer than {batch} prompts of at most {tokens} tokens")
    return [chat for _, chat in scored[:batch]]


def top_operators(run: Callable[[], object], rows: int = 15) -> list[dict]:
    """torch.profiler's operators with the most self CPU time over one call of ``run``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [
        {
            "operator": e.key,
            "calls": e.count,
            "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 1),
            "share": round(e.self_cpu_time_total / total, 3),
        }
        for e in events[:rows]
    ]


def timed_rounds(name: str, runs: dict[str, Callable[[], object]], rounds: int) -> dict:
    """Interleaved rounds of each configuration after one warm-up; fastest CPU time kept."""
    for run in runs.values():
        run()
    wall: dict[str, list[float]] = {n: [] for n in runs}
    cpu: dict[str, list[float]] = {n: [] for n in runs}
    for r in range(rounds):
        for config, run in runs.items():
            t, c = time.perf_counter(), time.process_time()
            run()
            wall[config].append(time.perf_counter() - t)
            cpu[config].append(time.process_time() - c)
        done = ", ".join(f"{n} {cpu[n][-1]:.2f} cpu-s ({wall[n][-1]:.2f} s)" for n in runs)
        print(f"[bench] {name} round {r + 1}: {done}", flush=True)
    return {
        n: {
            "cpu_seconds": [round(t, 3) for t in cpu[n]],
            "wall_seconds": [round(t, 3) for t in wall[n]],
            "best_cpu_seconds": round(min(cpu[n]), 3),
            "best_wall_seconds": round(min(wall[n]), 3),
        }
        for n in runs
    }


def compare(name: str, runs: dict[str, Callable[[], object]], rounds: int) -> dict:
    """``timed_rounds``, then mixed against single and the target (profiles where missed)."""
    entry = timed_rounds(name, runs, rounds)
    best = {n: entry[n]["best_cpu_seconds"] for n in runs}
    ratio = best["mixed"] / best["single"]
    entry["mixed_over_single"] = round(ratio, 3)
    entry["mixed_old_over_single"] = round(best["mixed_old"] / best["single"], 3)
    entry["mixed_wall_over_single_wall"] = round(
        entry["mixed"]["best_wall_seconds"] / entry["single"]["best_wall_seconds"], 3
    )
    entry["target"] = f"mixed <= {TARGET}x single"
    entry["met"] = ratio <= TARGET
    if not entry["met"]:
        entry["profile_mixed"] = top_operators(runs["mixed"])
        entry["profile_single"] = top_operators(runs["single"])
    print(
        f"[bench] {name}: mixed {ratio:.3f}x single, old path "
        f"{entry['mixed_old_over_single']:.3f}x (target <= {TARGET}x)",
        flush=True,
    )
    return entry


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    started = time.time()
    load_before = os.getloadavg()[0]
    out: dict = {}
    if "kernel" in parts:
        out["kernel"] = kernel(args.batch)
    if parts & {"train", "generate", "padded"}:
        require_file(args.data, "HH-RLHF helpful-base test data")
        out.update(model_level(args, parts))
    result = {
        **run_header("lora_mix", started),
        "load_average_1min_before": round(load_before, 2),
        "setup": {
            "model": args.model,
            "preferences_mixed": args.preferences,
            "lora_rank": args.rank,
            "batch": args.batch,
            "tokens_per_row": args.tokens,
            "generated_tokens_per_row": args.new_tokens,
            "rounds": args.rounds,
            "torch_threads": args.threads,
            "dtype": "float32",
            "train_step": "ConditionalLMObjective forward + backward + AdamW over the adapters "
            "(base frozen, MEET's first step)",
            "measure": "process CPU seconds, fastest of the interleaved rounds after one "
            "warm-up per configuration (wall seconds beside them)",
        },
        **out,
    }
    write_json_atomic(args.output, result)
    print(f"[bench] wrote {args.output}")


def model_level(args: argparse.Namespace, parts: set[str]) -> dict:
    from ctrlalign.data import load_preference_data
    from ctrlalign.inference.generation import GenerationConfig, Row, Stream, generate_rows
    from ctrlalign.model.controlled_lm import ControlledLM
    from ctrlalign.model.controls import build_control
    from ctrlalign.model.layout import prompt_ids
    from ctrlalign.model.loading import load_model
    from ctrlalign.training.objectives import ConditionalLMObjective

    lm, tokenizer = load_model(args.model)
    names = [f"pref{i}" for i in range(args.preferences)]
    control = build_control("lora", names, lora_rank=args.rank)
    lm = control.attach(lm, tokenizer)
    model = ControlledLM(lm, control)
    params = control.adapter_parameters()
    device = params[0].device
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():  # B starts at zero; small and nonzero, so every adapter matters
        for n, p in control.peft.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen, device=device) * 0.01)
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    records = load_preference_data(f"hh-rlhf:{args.data}").records
    out: dict = {}

    if "train" in parts:
        batches = train_batches(
            tokenizer, control, records, args.batch, args.tokens, args.preferences
        )
        batches = {k: {n: t.to(device) for n, t in b.items()} for k, b in batches.items()}
        objective = ConditionalLMObjective(model)
        optimizer = torch.optim.AdamW(params, lr=1e-6)
        model.train()

        def step(batch: dict) -> None:
            optimizer.zero_grad(set_to_none=True)
            objective(**batch)["loss"].backward()
            optimizer.step()

        def old_step() -> None:
            model.token_logps = partial(old_token_logps, model)
            try:
                step(batches["mixed"])
            finally:
                del model.token_logps

        out["train"] = compare(
            "train",
            {
                "single": partial(step, batches["single"]),
                "mixed": partial(step, batches["mixed"]),
                "mixed_old": old_step,
            },
            args.rounds,
        )
        out["train"]["tokens_per_batch"] = int(batches["single"]["attention_mask"].sum())

    if "padded" in parts:  # natural lengths: where the old path's per-group trimming pays
        from ctrlalign.model.layout import collate, encode

        rows = []
        for i, record in enumerate(records[: args.batch]):
            pref = names[i % 2]
            answer = record.responses["good" if i % 2 == 0 else "bad"]
            e = encode(tokenizer, control, record.chat, pref, answer)
            rows.append(replace(e, input_ids=e.input_ids[:512], labels=e.labels[:512]))
        padded = {n: t.to(device) for n, t in collate(rows, tokenizer.pad_token_id).items()}
        objective = ConditionalLMObjective(model)
        optimizer = torch.optim.AdamW(params, lr=1e-6)
        model.train()

        def padded_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            objective(**padded)["loss"].backward()
            optimizer.step()

        def padded_old_step() -> None:
            model.token_logps = partial(old_token_logps, model)
            try:
                padded_step()
            finally:
                del model.token_logps

        entry = timed_rounds(
            "padded", {"mixed": padded_step, "mixed_old": padded_old_step}, args.rounds
        )
        entry["mixed_over_mixed_old"] = round(
            entry["mixed"]["best_cpu_seconds"] / entry["mixed_old"]["best_cpu_seconds"], 3
        )
        entry["row_tokens"] = [len(e.input_ids) for e in rows]
        entry["row_preferences"] = [names[i % 2] for i in range(len(rows))]
        entry["padded_width"] = int(padded["input_ids"].shape[1])
        out["padded"] = entry
        print(f"[bench] padded: one routed forward {entry['mixed_over_mixed_old']:.3f}x the "
              "per-preference forwards", flush=True)  # fmt: skip

    if "generate" in parts:
        prompts = generation_prompts(tokenizer, records, args.batch, args.tokens - args.new_tokens)
        config = GenerationConfig(
            max_new_tokens=args.new_tokens, batch_size=args.batch, stop_ids=[NEVER]
        )

        def rows(mixed: bool) -> list:
            return [
                Row(tuple((m["role"], m["content"]) for m in chat),
                    (Stream(names[i % args.preferences] if mixed else names[0]),), (1.0,))
                for i, chat in enumerate(prompts)
            ]  # fmt: skip

        def old_generate() -> None:
            control.per_row = partial(old_per_row, control)
            try:
                generate_rows(model, tokenizer, rows(True), config)
            finally:
                del control.per_row

        out["generate"] = compare(
            "generate",
            {
                "single": lambda: generate_rows(model, tokenizer, rows(False), config),
                "mixed": lambda: generate_rows(model, tokenizer, rows(True), config),
                "mixed_old": old_generate,
            },
            args.rounds,
        )
        out["generate"]["prompt_tokens"] = [len(prompt_ids(tokenizer, c)) for c in prompts]
    return out


if __name__ == "__main__":
    main()
