"""MEET's two steps: the first moves only the controls, the second moves LM and controls.

``conditional.train`` runs the real recipe; ``run_stage`` is wrapped only to snapshot every
parameter before and after each stage.
"""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch

from ctrlalign.data import load_preference_data
from ctrlalign.model.layout import collate, encode_records
from ctrlalign.training import conditional, stage
from ctrlalign.training.objectives import ConditionalLMObjective
from ctrlalign.training.stage import run_stage as real_run_stage
from ctrlalign.training.trainer import training_arguments

pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def train_with_snapshots(monkeypatch, config):
    stages, holder = {}, {}

    def spy(objective, params, stage_dir, *args, **kwargs):
        model = objective.model
        before = snapshot(model)
        result = real_run_stage(objective, params, stage_dir, *args, **kwargs)
        stages[stage_dir.name] = (before, snapshot(model))
        holder["model"] = model
        return result

    monkeypatch.setattr(stage, "run_stage", spy)
    conditional.train(config)
    return stages, holder["model"]


def is_control(name: str) -> bool:
    return name.startswith("control.") or "lora_" in name


@pytest.mark.parametrize(
    "method,kind", [("meet-prompt", "soft-prompt"), ("meet-lora", "lora"), ("meet-token", "token")]
)
def test_first_step_moves_only_controls_second_moves_both(
    method, kind, monkeypatch, tmp_path, pairwise_file, train_config
):
    config = train_config(
        f"pairwise:{pairwise_file}",
        tmp_path / "run",
        method,
        max_examples=4,
        batch_size=2,
        micro_batch_size=2,
        stages="both",
    )
    stages, model = train_with_snapshots(monkeypatch, config)
    assert set(stages) == {"first", "second"}
    assert model.control.kind == kind
    emb_name = next(
        n for n, p in model.named_parameters() if p is model.base.get_input_embeddings().weight
    )
    new_rows = model.control.token_ids if kind == "token" else []

    before, after = stages["first"]
    lm_names = [n for n in before if not is_control(n)]
    control_names = [n for n in before if is_control(n)]
    assert lm_names and (control_names or kind == "token")
    for name in lm_names:
        if kind == "token" and name == emb_name:
            old = torch.ones(before[name].shape[0], dtype=torch.bool)
            old[new_rows] = False
            assert torch.equal(before[name][old], after[name][old]), "an old row moved"
            for row in new_rows:
                assert not torch.equal(before[name][row], after[name][row]), f"row {row} frozen"
        else:
            assert torch.equal(before[name], after[name]), f"{name} moved in the first step"
    for name in control_names:
        assert not torch.equal(before[name], after[name]), f"control {name} did not train"

    before, after = stages["second"]
    for name in before:
        assert not torch.equal(before[name], after[name]), f"{name} did not move in step two"


def test_gradient_accumulation_equals_one_big_batch(
    controlled, pairwise_file, tmp_path, train_config
):
    """Eq. 1 is a token mean over the whole batch, however it is split into micro-batches.

    Plain SGD without clipping, so a wrong normalisation would change the step size (Adam
    would hide it).
    """
    records = load_preference_data(f"pairwise:{pairwise_file}").records
    results = {}
    for micro in (4, 1):
        model, tok = controlled("soft-prompt")
        start = model.control.prompts.detach().clone()
        dataset = encode_records(records, tok, model.control, 128).examples
        config = train_config(
            "unused", tmp_path, "meet-prompt", batch_size=4, micro_batch_size=micro
        )
        args = training_arguments(config, tmp_path / f"micro{micro}", lr=1.0, epochs=1)
        args.optim, args.max_grad_norm = "sgd", 0.0
        real_run_stage(
            ConditionalLMObjective(model),
            [model.control.prompts],
            tmp_path / f"micro{micro}",
            args,
            dataset,
            partial(collate, pad_id=tok.pad_token_id),
        )
        results[micro] = model.control.prompts.detach().clone()
    step = (results[4] - start).norm()
    assert step > 1e-2
    # a wrong normalisation (per micro-batch mean, or / accumulation steps) is off by x2-x4
    assert (results[1] - results[4]).norm() < 1e-3 * step


def test_eval_loss_scores_at_most_max_eval_examples(
    train_config, pairwise_file, tmp_path, monkeypatch, one_thread
):
    scored = []
    real = stage.mean_response_nll

    def counting(model, examples, pad_id):
        scored.append(len(examples))
        return real(model, examples, pad_id)

    monkeypatch.setattr(stage, "mean_response_nll", counting)
    config = train_config(
        f"pairwise:{pairwise_file}",
        tmp_path / "run",
        "coh",
        eval_fraction=0.5,
        max_eval_examples=3,
    )
    metrics = json.loads((conditional.train(config) / "metrics.json").read_text())
    assert metrics["eval_examples"] > 3
    assert scored == [3]
    assert metrics["eval_loss"] > 0


def test_token_control_keeps_the_tokenizers_extra_special_tokens():
    """A chat tokenizer's extra special tokens (Qwen's <|im_start|> style) stay special
    after the control tokens are added, so decoded answers never show them."""
    from ctrlalign.model.controls import build_control
    from ctrlalign.model.loading import load_model

    lm, tokenizer = load_model("tiny")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_sep|>"]})
    special = set(tokenizer.all_special_tokens)
    assert "<|im_sep|>" in special
    build_control("token", ["good", "bad"]).attach(lm, tokenizer)
    assert special | {"<|ctrl:good|>", "<|ctrl:bad|>"} == set(tokenizer.all_special_tokens)
    ids = tokenizer("<|im_sep|>Hi<|ctrl:good|> there", add_special_tokens=False).input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hi there"


def test_soft_prompts_start_from_the_given_texts():
    """``--soft-prompt-init good='A good summary is'``: that preference's soft prompt starts as
    the text's token embeddings, repeated to the length; the others from their names."""
    from ctrlalign.cli import build_parser
    from ctrlalign.cli.flags import config_from_args
    from ctrlalign.model.controls import build_control, control_options
    from ctrlalign.model.loading import load_model
    from ctrlalign.training.config import TrainConfig

    argv = ["train", "--data", "pairwise:x", "--output", "o", "--method", "meet-prompt"]
    argv += ["--soft-prompt-length", "6", "--soft-prompt-init", "good=A good summary is"]
    config = config_from_args(build_parser().parse_args(argv), TrainConfig)
    assert config.soft_prompt_init == {"good": "A good summary is"}
    lm, tok = load_model("tiny")
    control = build_control("soft-prompt", ["good", "bad"], **control_options(config.to_dict()))
    control.attach(lm, tok)
    table = lm.get_input_embeddings().weight
    text = tok(" A good summary is", add_special_tokens=False).input_ids
    word = tok(" bad", add_special_tokens=False).input_ids
    assert torch.equal(control.prompts[0], table[(text * 6)[:6]])
    assert torch.equal(control.prompts[1], table[(word * 6)[:6]])
    with pytest.raises(ValueError, match="unknown preferences"):
        build_control("soft-prompt", ["good", "bad"], soft_prompt_init={"fine": "x"})


def test_tldr_data_get_the_summary_prompts_and_a_run_keeps_them(tmp_path):
    """A TL;DR run's CoH prompts default to "A good summary is" (the data's task decides),
    and the run directory stores the texts, so loading it needs no data to know them."""
    from ctrlalign.data.records import Record, data_task
    from ctrlalign.model.controls import build_control
    from ctrlalign.model.loading import load_model

    post = Record(((("user", "POST: my cat ran away\n\nTL;DR:"),)), {"good": "cat", "bad": "x"})
    chat = Record(((("user", "How do I bake bread?"),)), {"good": "Knead it", "bad": "x"})
    assert data_task([post]) == "summary"
    assert data_task([post, chat]) == data_task([]) == "dialogue"
    lm, tok = load_model("tiny")
    summary = build_control("prompt", ["good", "bad"], task="summary")
    summary.attach(lm, tok)
    assert summary.texts == {"good": "A good summary is", "bad": "A bad summary is"}
    bad_ids = tok("A bad summary is\n", add_special_tokens=False).input_ids
    assert summary.prefix_ids("bad") == bad_ids
    given = build_control("prompt", ["good", "bad"], prompt_texts={"good": "Hi"}, task="summary")
    assert given.texts == {"good": "Hi", "bad": "A bad summary is"}
    summary.save(tmp_path, lm)
    loaded = build_control("prompt", ["good", "bad"])  # as load_run: no data, no task
    loaded.attach(lm, tok)
    assert loaded.texts["good"] == "A good conversation is"
    loaded.load(tmp_path, lm)
    assert loaded.texts == summary.texts
    assert loaded.prefix_ids("good") == summary.prefix_ids("good")


def test_warmup_ratio_is_a_share_of_the_steps(train_config, pairwise_file, tmp_path):
    """``--warmup-ratio 0.5`` of 4 steps warms up over 2: the rate each step logs rises
    from 0 to the peak at step 3, then decays linearly (without warm-up: 1e-3, 7.5e-4, ...).
    transformers 5 has no ``warmup_ratio``; it reads a ``warmup_steps`` below 1 as a share."""
    config = train_config(
        f"pairwise:{pairwise_file}",
        tmp_path / "run",
        "sft",
        max_steps=4,
        warmup_ratio=0.5,
        lr_second=1e-3,
        logging_steps=1,
    )
    args = training_arguments(config, tmp_path / "args", lr=1e-3, epochs=1)
    assert args.get_warmup_steps(4) == 2 and args.get_warmup_steps(10) == 5
    metrics = json.loads((conditional.train(config) / "metrics.json").read_text())
    rates = [e["learning_rate"] for e in metrics["stages"]["second"]["log_history"] if "loss" in e]
    assert rates == pytest.approx([0.0, 5e-4, 1e-3, 5e-4])
