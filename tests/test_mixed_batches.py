"""A batch may mix preferences: same loss, gradients and greedy tokens as one at a time."""

from __future__ import annotations

import pytest
import torch
from conftest import fp32_sum_tolerance, loss_and_grads

from ctrlalign.inference.generation import GenerationConfig, Row, Stream, generate, generate_rows
from ctrlalign.model.layout import collate, encode

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ["soft-prompt", "lora", "token", "prompt"]
CASES = [
    ("What is two plus two?", "good", "Two plus two is four."),
    ("Say hello.", "bad", "Go away."),
    ("Name a colour.", "good", "Blue is a colour, and so is green."),
    ("What is two plus two?", "bad", "Five, probably, or maybe six."),
    ("Is the sky blue?", "bad", "Sky?"),
]
PROMPTS = ["What is two plus two?", "Tell me about dogs.", "Hi!"]


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_batch_loss_and_gradients_equal_per_preference_batches(kind, controlled):
    model, tok = controlled(kind, lora_random=True)
    model.eval()
    model.requires_grad_(True)
    examples = [
        encode(tok, model.control, [{"role": "user", "content": p}], pref, r)
        for p, pref, r in CASES
    ]
    mixed_loss, mixed_grads, total = loss_and_grads(model, collate(examples, tok.pad_token_id))

    loss, grads = torch.tensor(0.0), {n: torch.zeros_like(g) for n, g in mixed_grads.items()}
    for pref in ("good", "bad"):
        part = [e for e, case in zip(examples, CASES, strict=True) if case[1] == pref]
        part_loss, part_grads, count = loss_and_grads(model, collate(part, tok.pad_token_id))
        loss += part_loss * count / total
        for n, g in part_grads.items():
            grads[n] += g * count / total

    assert torch.allclose(mixed_loss, loss, atol=1e-5, rtol=1e-5)
    nonzero = 0
    for name, grad in mixed_grads.items():
        assert torch.allclose(grad, grads[name], atol=1e-5, rtol=1e-5), name
        nonzero += bool(grad.abs().sum() > 0)
    assert nonzero > 10, "gradients must reach the model"
    if kind == "soft-prompt":  # each row's gradient lands in its own preference's prompt
        assert (mixed_grads["control.prompts"].abs().sum((1, 2)) > 0).all()
    if kind == "lora":
        for pref in ("good", "bad"):
            assert any(g.abs().sum() > 0 for n, g in mixed_grads.items() if f"lora_A.{pref}" in n)


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_batch_generates_what_one_by_one_does(kind, controlled):
    model, tok = controlled(kind, lora_random=True)
    prompts = [p for p in PROMPTS for _ in ("good", "bad")]
    prefs = [pref for _ in PROMPTS for pref in ("good", "bad")]
    config = GenerationConfig(max_new_tokens=8, batch_size=len(prompts))
    mixed = generate(model, tok, prompts, prefs, config)
    single = GenerationConfig(max_new_tokens=8, batch_size=1)
    alone = [
        generate(model, tok, [p], pref, single)[0] for p, pref in zip(prompts, prefs, strict=True)
    ]
    assert mixed == alone
    assert all(mixed), "every row must produce text"
    # the control reaches each row: the preferences answer differently
    assert any(mixed[i] != mixed[i + 1] for i in range(0, len(mixed), 2))

    # the general form: rows of one stream, in another order, give the same texts
    rows = [
        Row((("user", p),), (Stream(pref),), (1.0,)) for p, pref in zip(prompts, prefs, strict=True)
    ]
    order = list(reversed(range(len(rows))))
    again = generate_rows(model, tok, [rows[i] for i in order], config)
    assert [again[order.index(i)] for i in range(len(rows))] == mixed


def test_lora_per_row_matches_peft_adapter_names(controlled, one_thread):
    """Our per-row LoRA routing against PEFT's own mixed-batch forward, on the same batch."""
    model, _ = controlled("lora", lora_random=True)
    model.eval()
    ids = torch.randint(0, 1000, (4, 7), generator=torch.Generator().manual_seed(0))
    prefs = ["good", "bad", "bad", "good"]
    with torch.no_grad():
        reference = model.lm(input_ids=ids, adapter_names=prefs).logits
        with model.control.per_row(prefs):
            ours = model.lm(input_ids=ids).logits
        with model.control.use("good"):
            good = model.lm(input_ids=ids).logits
    # Both sides compute the same sums in another order (PEFT runs each adapter's rows as a
    # sub-batch, we run the full batch under a row mask), so BLAS blocks them differently.
    # A length-K fp32 dot product may be off by about K * eps of the size of its terms; the
    # longest sums here are over intermediate_size, and the logits bound the terms' scale.
    # (Measured: 2.3e-6 of the largest logit, about 19 eps; transformers 5.24 went past a
    # fixed atol of 1e-5 where 5.23 did not.)
    k = model.lm.config.intermediate_size
    atol = k * torch.finfo(reference.dtype).eps * reference.abs().max().item()
    torch.testing.assert_close(ours, reference, rtol=0, atol=atol)
    assert (ours[1] - good[1]).abs().max() > 100 * atol  # row 1 really went through "bad"
    torch.testing.assert_close(ours[0], good[0], rtol=0, atol=atol)
    assert not any("forward" in vars(m) for m in model.lm.modules())  # unpatched after


MANY = ("terse", "warm", "formal", "silly")
MANY_CASES = [  # rows in no particular order; "silly" is absent: it must get no gradient
    ("What is two plus two?", "warm", "Four, and well asked!"),
    ("Say hello.", "terse", "Hi."),
    ("Name a colour.", "formal", "I would name blue, a primary colour."),
    ("What is two plus two?", "terse", "Four."),
    ("Is the sky blue?", "warm", "It is, on a lovely clear day."),
    ("Count to three.", "formal", "One, two, three."),
]


def test_batched_lora_logits_equal_peft_adapter_names_and_per_preference_forwards(controlled):
    """One routed forward over a batch mixing three of four adapters against PEFT's own
    mixed-batch forward and against a forward of each preference, row by row; in inference
    (weights gathered once, kept) and with gradients on (gathered at every forward)."""
    model, _ = controlled("lora", preferences=MANY, lora_random=True)
    model.eval()
    ids = torch.randint(0, 1000, (6, 9), generator=torch.Generator().manual_seed(0))
    prefs = [case[1] for case in MANY_CASES]
    with torch.no_grad():
        reference = model.lm(input_ids=ids, adapter_names=prefs).logits
        alone = {}
        for pref in set(prefs):
            with model.control.use(pref):
                alone[pref] = model.lm(input_ids=ids).logits
        with model.control.per_row(prefs):
            ours = model.lm(input_ids=ids).logits
            again = model.lm(input_ids=ids).logits  # the kept weights give the same
    with model.control.use("formal"):  # the active adapter, for what follows the block
        pass
    with torch.enable_grad(), model.control.per_row(torch.tensor([MANY.index(p) for p in prefs])):
        trained = model.lm(input_ids=ids).logits.detach()
    with torch.no_grad():  # the layers stay patched for a backward's recomputation only
        after = model.lm(input_ids=ids).logits
    # longest sums: the MLP's down projection, over intermediate_size
    atol = fp32_sum_tolerance(model.lm.config.intermediate_size, reference)
    torch.testing.assert_close(ours, reference, rtol=0, atol=atol)
    torch.testing.assert_close(trained, reference, rtol=0, atol=atol)
    assert torch.equal(again, ours)
    for row, pref in enumerate(prefs):
        torch.testing.assert_close(ours[row], alone[pref][row], rtol=0, atol=atol)
        for other in set(prefs) - {pref}:  # and not through any other adapter
            assert (ours[row] - alone[other][row]).abs().max() > 100 * atol, (row, other)
    assert torch.equal(after, alone["formal"])
    with model.control.use("formal"):
        assert not any("forward" in vars(m) for m in model.lm.modules())  # unpatched now


def summed_logps_grads(model, examples, pad_id):
    """Gradient of the batch's summed response log-probs (a sum, so batches add up)."""
    model.zero_grad(set_to_none=True)
    batch = collate(examples, pad_id)
    logps, _rows = model.token_logps(**batch)
    logps.sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_batched_lora_gradients_equal_sum_of_per_preference_batches(controlled):
    """A mixed batch's gradient, per adapter, equals the sum of the gradients of batches of
    one preference each (the old per-preference path); an absent adapter gets none."""
    model, tok = controlled("lora", preferences=MANY, lora_random=True)
    model.eval()  # no dropout; gradients still flow
    model.requires_grad_(False)
    for p in model.control.adapter_parameters():
        p.requires_grad_(True)
    examples = [
        encode(tok, model.control, [{"role": "user", "content": p}], pref, r)
        for p, pref, r in MANY_CASES
    ]
    mixed = summed_logps_grads(model, examples, tok.pad_token_id)
    summed: dict[str, torch.Tensor] = {}
    for pref in {case[1] for case in MANY_CASES}:
        part = [e for e, case in zip(examples, MANY_CASES, strict=True) if case[1] == pref]
        for name, grad in summed_logps_grads(model, part, tok.pad_token_id).items():
            summed[name] = summed.get(name, 0) + grad

    assert set(mixed) == set(summed), "the same adapters, and only those, get gradients"
    assert not any(".silly." in name for name in mixed), "an absent adapter gets no gradient"
    for pref in ("terse", "warm", "formal"):
        assert sum(f"lora_A.{pref}." in n for n in mixed) >= 8, pref  # every layer reached
    # A weight gradient sums over the batch's tokens; on the way there the backward sums
    # over intermediate_size (the MLP) as the forward did: the longer of the two bounds it.
    tokens = sum(len(e.input_ids) for e in examples)
    reduction = max(model.lm.config.intermediate_size, tokens)
    for name, grad in mixed.items():
        atol = fp32_sum_tolerance(reduction, grad)
        torch.testing.assert_close(grad, summed[name], rtol=0, atol=atol, msg=name)
        assert grad.abs().max() > 0, name


def test_batched_lora_under_gradient_checkpointing(controlled):
    """Checkpointing recomputes each layer inside the backward, after the routed block has
    ended; the recomputation must route rows as the forward did (same gradients as without
    checkpointing; a plain PEFT recomputation would not even save the same tensors)."""
    grads = {}
    for checkpointing in (False, True):
        model, tok = controlled("lora", preferences=MANY, lora_random=True)
        if checkpointing:  # as training.stage.load_training_model turns it on
            kwargs = {"use_reentrant": False}
            if hasattr(model.base, "activation_checkpointing_enable"):  # transformers 5.x
                model.base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.train()  # transformers checkpoints only in training mode; dropout is 0
        model.requires_grad_(False)
        for p in model.control.adapter_parameters():
            p.requires_grad_(True)
        examples = [
            encode(tok, model.control, [{"role": "user", "content": p}], pref, r)
            for p, pref, r in MANY_CASES
        ]
        grads[checkpointing] = summed_logps_grads(model, examples, tok.pad_token_id)
    assert model.base.is_gradient_checkpointing
    assert set(grads[True]) == set(grads[False])
    for name, grad in grads[False].items():
        # the recomputation repeats the forward's arithmetic: no longer sums than there
        atol = fp32_sum_tolerance(model.lm.config.intermediate_size, grad)
        torch.testing.assert_close(grads[True][name], grad, rtol=0, atol=atol, msg=name)


def test_lora_per_row_with_partitioned_weights_runs_sub_batches(controlled, monkeypatch):
    """Under DeepSpeed ZeRO-3 a weight is gathered only inside its own module's forward, so
    stacking is impossible and each adapter's rows go through its modules as a sub-batch:
    the same logits and gradients as the batched path (ZeRO-3 itself is not installed here;
    the detection is replaced so that the fallback's arithmetic is what is tested)."""
    from ctrlalign.model.controls import lora

    model, tok = controlled("lora", preferences=MANY, lora_random=True)
    model.eval()
    model.requires_grad_(False)
    for p in model.control.adapter_parameters():
        p.requires_grad_(True)
    examples = [
        encode(tok, model.control, [{"role": "user", "content": p}], pref, r)
        for p, pref, r in MANY_CASES
    ]
    batched = summed_logps_grads(model, examples, tok.pad_token_id)
    monkeypatch.setattr(lora, "_partitioned", lambda weight: True)
    calls = []
    first = model.lm.base_model.model.model.layers[0].self_attn.q_proj.lora_A["warm"]
    first.register_forward_hook(lambda *_: calls.append(1))  # where ZeRO-3 would gather
    split = summed_logps_grads(model, examples, tok.pad_token_id)
    assert calls, "the adapters' own modules ran"
    assert set(split) == set(batched)
    tokens = sum(len(e.input_ids) for e in examples)
    reduction = max(model.lm.config.intermediate_size, tokens)  # as in the gradient test
    for name, grad in batched.items():
        atol = fp32_sum_tolerance(reduction, grad)
        torch.testing.assert_close(split[name], grad, rtol=0, atol=atol, msg=name)


def test_batched_lora_generation_of_four_preferences_equals_one_by_one(controlled):
    model, tok = controlled("lora", preferences=MANY, lora_random=True)
    prompts = [p for p in PROMPTS for _ in MANY]
    prefs = [pref for _ in PROMPTS for pref in MANY]
    mixed = generate(model, tok, prompts, prefs, GenerationConfig(max_new_tokens=6, batch_size=12))
    single = GenerationConfig(max_new_tokens=6, batch_size=1)
    alone = [
        generate(model, tok, [p], pref, single)[0] for p, pref in zip(prompts, prefs, strict=True)
    ]
    assert mixed == alone
    assert len(set(mixed[: len(MANY)])) > 1, "the adapters answer differently"


def test_lora_per_row_of_one_preference_is_a_plain_forward(controlled):
    """A batch of one preference needs no routing: PEFT's own forward of that adapter."""
    model, _ = controlled("lora", preferences=MANY, lora_random=True)
    model.eval()
    ids = torch.randint(0, 1000, (3, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with model.control.per_row(["warm"] * 3):
            assert not any("forward" in vars(m) for m in model.lm.modules())
            ours = model.lm(input_ids=ids).logits
        with model.control.use("warm"):
            plain = model.lm(input_ids=ids).logits
    assert torch.equal(ours, plain)
    with model.control.per_row(torch.zeros(0, dtype=torch.long)):  # an empty batch
        assert not any("forward" in vars(m) for m in model.lm.modules())
    with pytest.raises(ValueError, match="unknown preference"), model.control.per_row(["grumpy"]):
        pass
    routed = model.control.per_row(["warm", "terse"])  # two rows routed, three given
    with pytest.raises(ValueError, match="routes 2 rows"), torch.no_grad(), routed:
        model.lm(input_ids=ids)


def test_lora_per_token_routes_each_token_and_refuses_what_it_cannot(controlled):
    """One adapter throughout is PEFT's plain forward; two rows of tokens each wholly of one
    preference equal those rows routed per row; unknown ids and a mismatched input fail."""
    model, _ = controlled("lora", preferences=MANY, lora_random=True)
    model.eval()
    ids = torch.randint(0, 1000, (2, 5), generator=torch.Generator().manual_seed(2))
    warm, terse = MANY.index("warm"), MANY.index("terse")
    with torch.no_grad():
        with model.control.per_token(torch.full((2, 5), warm)):
            assert not any("forward" in vars(m) for m in model.lm.modules())
            one = model.lm(input_ids=ids).logits
        with model.control.use("warm"):
            assert torch.equal(one, model.lm(input_ids=ids).logits)
        owners = torch.tensor([[warm] * 5, [terse] * 5])
        with model.control.per_token(owners):
            tokens = model.lm(input_ids=ids).logits
        with model.control.per_row(["warm", "terse"]):
            rows = model.lm(input_ids=ids).logits
    # the same products (the other adapters' columns add exact zeros), blocked differently
    atol = fp32_sum_tolerance(model.lm.config.intermediate_size, rows)
    torch.testing.assert_close(tokens, rows, rtol=0, atol=atol)
    with (
        pytest.raises(ValueError, match="this run knows"),
        model.control.per_token(torch.full((2, 5), len(MANY))),
    ):
        pass
    mixed = model.control.per_token(owners[:, :4])
    with pytest.raises(ValueError, match="routes 2 x 4 tokens"), torch.no_grad(), mixed:
        model.lm(input_ids=ids)
