"""Padding-free training: examples packed into rows give the padded batch's loss and
gradients, with attention kept inside each example."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import big_init, fp32_sum_tolerance, loss_and_grads

from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.layout import Example, collate, collate_packed, encode, pack_rows
from ctrlalign.model.loading import load_model
from ctrlalign.training import TrainConfig, train_any

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    ("What is two plus two?", "good", "Two plus two is four, as anyone who counts knows well."),
    ("Say hello.", "bad", "Go away."),
    ("Name a colour.", "good", "Blue."),
    ("Hi!", "good", "Hello."),
    ("What is two plus two?", "bad", "Five, probably, or maybe six, or seven, who knows."),
    ("Is the sky blue?", "bad", "Sky?"),
    ("Count to three.", "good", "One, two."),
]


def examples_for(model: ControlledLM, tok) -> list:
    control = model.control
    return [
        encode(tok, control, [{"role": "user", "content": p}], pref if control else None, r)
        for p, pref, r in CASES
    ]


def plain_model():
    lm, tok = load_model("tiny")
    return ControlledLM(big_init(lm)), tok


@pytest.mark.parametrize(
    ("kind", "attn"),
    [
        ("lora", "sdpa"),
        ("lora", "eager"),
        ("soft-prompt", "sdpa"),
        ("token", "sdpa"),
        ("prompt", "sdpa"),
        (None, "sdpa"),
    ],
)
def test_packed_batch_loss_and_gradients_equal_the_padded_batch(kind, attn, controlled):
    model, tok = controlled(kind, lora_random=True) if kind else plain_model()
    model.base.set_attn_implementation(attn)
    model.eval()
    model.requires_grad_(True)
    examples = examples_for(model, tok)
    padded = collate(examples, tok.pad_token_id)
    width = 2 * padded["input_ids"].shape[1]
    packed = collate_packed(examples, tok.pad_token_id, width)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]
    assert packed["input_ids"].shape[1] <= width
    assert_equal_to_padded(model, examples, padded, packed)


def assert_equal_to_padded(model, examples, padded, packed):
    """The packed batch's loss and every gradient equal the padded batch's."""
    loss, grads, total = loss_and_grads(model, padded)
    packed_loss, packed_grads, packed_total = loss_and_grads(model, packed)
    assert packed_total == total
    # both are fp32 sums over the same tokens (or the MLP's width, the longer), in another
    # order: each within n * eps * |largest| of the exact value, so within twice that
    tokens = sum(len(e.input_ids) for e in examples)
    reduction = 2 * max(model.base.config.intermediate_size, tokens)
    torch.testing.assert_close(packed_loss, loss, rtol=0, atol=fp32_sum_tolerance(reduction, loss))
    reached = 0
    for name, grad in grads.items():
        atol = fp32_sum_tolerance(reduction, grad)
        torch.testing.assert_close(packed_grads[name], grad, rtol=0, atol=atol, msg=name)
        reached += bool(grad.abs().sum() > 0)
    assert reached > 10, "gradients reach the model"


def test_packed_rows_mixing_many_lora_preferences_and_blends_equal_the_padded_batch(
    controlled,
):
    """Four LoRA adapters and two-part blends packed together: every token goes through its
    own example's adapters (``per_token``), as the padded batch's rows do (``per_row``)."""
    names = ("good", "bad", "warm", "terse")
    model, tok = controlled("lora", preferences=names, lora_random=True)
    model.eval()
    model.requires_grad_(True)
    blends = [3, (0, 2), 1, (1, 3), 0, 2, (0, 2)]
    examples = [
        replace(e, preference_id=blend)
        for e, blend in zip(examples_for(model, tok), blends, strict=True)
    ]
    padded = collate(examples, tok.pad_token_id)
    packed = collate_packed(examples, tok.pad_token_id, 3 * padded["input_ids"].shape[1])
    owners = packed["token_preference_ids"]
    assert owners.shape == (*packed["input_ids"].shape, 2)
    mixed = [len({tuple(t) for t in row[seq >= 0].tolist()}) for row, seq in
             zip(owners, packed["sequence_ids"], strict=True)]  # fmt: skip
    assert max(mixed) >= 3, "a row mixes adapters and blends"
    assert_equal_to_padded(model, examples, padded, packed)


def test_rows_fit_the_width_and_tokens_know_their_preference(controlled):
    model, tok = controlled("lora")
    examples = examples_for(model, tok)
    width = 2 * max(len(e.input_ids) for e in examples)
    rows = pack_rows(examples, width)
    assert sorted(id(e) for row in rows for e in row) == sorted(id(e) for e in examples)
    assert len(rows) < len(examples)
    # rows follow the lengths alone: the same examples under one preference pack the same
    same = [replace(e, preference_id=0) for e in examples]
    lengths = [[len(e.input_ids) for e in row] for row in rows]
    assert lengths == [[len(e.input_ids) for e in row] for row in pack_rows(same, width)]
    for row in rows:
        assert sum(len(e.input_ids) for e in row) <= width
    batch = collate_packed(examples, tok.pad_token_id, width)
    # positions restart at every example; the padding tail belongs to no example
    starts = (batch["position_ids"] == 0) & (batch["sequence_ids"] >= 0)
    assert int(starts.sum()) == len(examples)
    assert (batch["labels"][batch["sequence_ids"] < 0] == -100).all()
    # every token carries its example's preference, padding none
    owners, sequences = batch["token_preference_ids"], batch["sequence_ids"]
    assert (owners[sequences < 0] == -1).all()
    for r, row in enumerate(rows):
        for j, e in enumerate(row):
            assert (owners[r][sequences[r] == j] == e.preference_id).all()


def test_packing_is_refused_for_pair_methods(tmp_path):
    config = TrainConfig(data="pairwise:x.jsonl", output=str(tmp_path), method="dpo", packing=True)
    with pytest.raises(ValueError, match="--packing is for the conditional-LM methods"):
        config.validate()


def test_training_with_packing_takes_the_padded_runs_steps(train_config, scores_file, tmp_path):
    """``--packing`` trains meet-lora (both steps) to the padded run's losses: every step
    sees the same examples, only laid out in fewer rows. Each logged loss is an fp32 token
    mean over a few hundred tokens, so the two agree to ~1e-6 at the first step; later steps
    follow weights that differ by such amounts, hence 1e-4."""
    data = f"scores:{scores_file}"
    losses = {}
    for packing in (False, True):
        config = train_config(
            data, tmp_path / str(packing), "meet-lora", levels=3, packing=packing,
            logging_steps=1, max_steps=3, micro_batch_size=4,
        )  # fmt: skip
        run = train_any(config)
        metrics = json.loads((run / "metrics.json").read_text())
        losses[packing] = [
            e["loss"] for s in metrics["stages"].values() for e in s["log_history"] if "loss" in e
        ]
    assert len(losses[True]) == len(losses[False]) == 6
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5)
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_rows_are_balanced_when_that_narrows_the_batch():
    """First-fit decreasing sets the number of rows; the same rows filled longest first into
    the emptiest one are kept when their widest row is narrower (the batch's width), never
    when a row would pass the width."""

    def packed(lengths: list[int], width: int) -> list[list[int]]:
        examples = [Example([0] * n, [0] * n, 0, 0) for n in lengths]
        return [[len(e.input_ids) for e in row] for row in pack_rows(examples, width)]

    # first fit: [300, 200] and [150, 150, 100], 500 wide; balanced: 450 wide
    assert packed([150, 300, 100, 200, 150], 512) == [[300, 150], [200, 150, 100]]
    # balanced would put 5 + 3 + 3 = 11 in a row of 10: first fit, 10 wide, stays
    assert packed([5, 5, 4, 3, 3], 10) == [[5, 5], [4, 3, 3]]
