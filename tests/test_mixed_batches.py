"""A batch may mix preferences: same loss, gradients and greedy tokens as one at a time."""

from __future__ import annotations

import pytest
import torch

from ctrlalign.inference.generation import GenerationConfig, Row, Stream, generate, generate_rows
from ctrlalign.model.layout import collate, encode
from ctrlalign.model.logprobs import IGNORE_INDEX
from ctrlalign.training.stage import ConditionalLMObjective

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


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = ConditionalLMObjective(model)(**batch)["loss"]
    loss.backward()
    grads = {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
    }
    count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return loss.detach(), grads, count


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
