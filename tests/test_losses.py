"""Eq. 1 loss against a hand computation, and which positions carry loss (only responses)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.layout import collate, encode
from ctrlalign.model.logprobs import IGNORE_INDEX, response_logps, sequence_logps
from ctrlalign.training.objectives import ConditionalLMObjective, conditional_lm_loss

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    ("What is two plus two?", "good", "Two plus two is four."),
    ("What is two plus two?", "bad", "Five, probably."),
    ("Say hello.", "good", "Hello! How can I help you today, my friend?"),
    ("Say hello.", "bad", "Go away."),
]
KINDS = ["prompt", "token", "soft-prompt", "lora", None]


def chat(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def hand_prefix(kind, control, tok, pref) -> list[int]:
    """The control prefix, derived from the paper's layout rather than from the library."""
    if kind == "prompt":
        text = {"good": "A good conversation is", "bad": "A bad conversation is"}[pref]
        return tok(text + "\n", add_special_tokens=False).input_ids
    if kind == "token":
        return [tok.convert_tokens_to_ids(f"<|ctrl:{pref}|>")]
    if kind == "soft-prompt":
        return [tok.pad_token_id] * control.length
    return []


def build(kind, controlled, tiny):
    if kind is None:
        lm, tok = tiny
        return ControlledLM(lm, None), tok
    return controlled(kind, lora_random=True)


@torch.no_grad()
def hand_loss(kind, model: ControlledLM, tok) -> torch.Tensor:
    """Full logits from the plain HF model, one unpadded example at a time."""
    control = model.control
    total, count = 0.0, 0
    for prompt, pref, response in CASES:
        prefix = hand_prefix(kind, control, tok, pref)
        context = prefix + list(
            tok.apply_chat_template(
                chat(prompt), add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
        answer = tok(response, add_special_tokens=False).input_ids + [tok.eos_token_id]
        ids = torch.tensor([context + answer])
        if kind == "soft-prompt":
            embeds = model.base.get_input_embeddings()(ids)
            embeds[0, : len(prefix)] = control.prompts[control.preferences.index(pref)]
            logits = model.base(inputs_embeds=embeds).logits[0]
        elif kind == "lora":
            model.lm.set_adapter(pref)
            logits = model.lm(input_ids=ids).logits[0]
        else:
            logits = model.lm(input_ids=ids).logits[0]
        logps = torch.log_softmax(logits.double(), dim=-1)
        for pos in range(len(context), len(context) + len(answer)):
            total += logps[pos - 1, ids[0, pos]].item()
            count += 1
    return torch.tensor(-total / count)


def batch_for(model: ControlledLM, tok, pad_id=None):
    examples = [
        encode(tok, model.control, chat(p), pref if model.control else None, r)
        for p, pref, r in CASES
    ]
    return examples, collate(examples, tok.pad_token_id if pad_id is None else pad_id)


@pytest.mark.parametrize("kind", KINDS)
def test_loss_matches_hand_computation_and_only_responses_count(kind, controlled, tiny):
    model, tok = build(kind, controlled, tiny)
    model.eval()
    examples, batch = batch_for(model, tok)
    with torch.no_grad():
        loss = ConditionalLMObjective(model)(**batch)["loss"]
    expected = hand_loss(kind, model, tok)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the large init keeps the loss far from log(vocab): a wrong position would show
    assert abs(loss.item() - torch.log(torch.tensor(len(tok))).item()) > 0.5

    labels, ids = batch["labels"], batch["input_ids"]
    for row, ex in enumerate(examples):
        answer_len = len(tok(CASES[row][2], add_special_tokens=False).input_ids) + 1
        context_len = len(ex.input_ids) - answer_len
        assert ex.prefix_len == len(hand_prefix(kind, model.control, tok, CASES[row][1]))
        # prefix and prompt: no loss; response + eos: its own tokens; padding: no loss
        assert (labels[row, :context_len] == IGNORE_INDEX).all()
        end = context_len + answer_len
        assert torch.equal(labels[row, context_len:end], ids[row, context_len:end])
        assert labels[row, end - 1] == tok.eos_token_id
        assert (labels[row, end:] == IGNORE_INDEX).all()
        assert batch["prefix_mask"][row].sum() == ex.prefix_len
    assert (batch["attention_mask"] == 0).any(), "the cases must produce some padding"

    with torch.no_grad():
        # another pad id, or any token ids under the padding, change nothing
        other_pad = batch_for(model, tok, pad_id=17)[1]
        assert ConditionalLMObjective(model)(**other_pad)["loss"].item() == pytest.approx(
            loss.item(), rel=1e-6
        )
        noisy = {k: v.clone() for k, v in batch.items()}
        pad = noisy["attention_mask"] == 0
        noisy["input_ids"][pad] = torch.randint(100, 1000, (int(pad.sum()),))
        assert ConditionalLMObjective(model)(**noisy)["loss"].item() == pytest.approx(
            loss.item(), rel=1e-6
        )
        # a response target does count (so the checks above can fail)
        changed = {k: v.clone() for k, v in batch.items()}
        row, col = (changed["labels"] != IGNORE_INDEX).nonzero()[0].tolist()
        changed["labels"][row, col] = (changed["labels"][row, col] + 1) % 1000
        assert ConditionalLMObjective(model)(**changed)["loss"].item() != pytest.approx(
            loss.item(), rel=1e-6
        )


def test_response_logps_ignores_non_loss_positions():
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 8)
    head = torch.nn.Linear(8, 11, bias=False)
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[0, 3:5] = torch.tensor([4, 7])
    labels[1, 2:6] = torch.tensor([1, 2, 3, 10])
    calls = []
    head.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    logps, rows = response_logps(hidden, labels, head)
    assert calls == [6], "the head must run only where the loss is"
    assert rows.tolist() == [0, 0, 1, 1, 1, 1]
    full = torch.log_softmax(head(hidden), -1)
    expected = [
        full[0, 2, 4],
        full[0, 3, 7],
        full[1, 1, 1],
        full[1, 2, 2],
        full[1, 3, 3],
        full[1, 4, 10],
    ]
    assert torch.allclose(logps, torch.stack(expected), atol=1e-6)

    # hidden states that predict no labelled token may be anything
    perturbed = hidden.clone()
    perturbed[0, [0, 1, 4, 5]] += 100.0
    perturbed[1, [0, 5]] -= 100.0
    assert torch.equal(response_logps(perturbed, labels, head)[0], logps)
    assert torch.allclose(
        sequence_logps(hidden, labels, head), torch.stack([logps[:2].sum(), logps[2:].sum()])
    )
    loss = conditional_lm_loss(logps, 6)
    assert torch.allclose(loss, -logps.mean())
    assert torch.allclose(
        loss, F.cross_entropy(head(hidden[:, :-1]).reshape(-1, 11), labels[:, 1:].reshape(-1))
    )
