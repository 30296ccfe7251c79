"""Shared fixtures: the tiny model with a large init, tiny data files, small configs.

The random ``tiny`` model has near-uniform logits (init std 0.02), so greedy argmax would be
decided by float noise; ``big_init`` redraws every Linear / Embedding weight with std 0.5
so that comparisons of greedy generations are meaningful.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.controls import build_control
from ctrlalign.model.device import BF16_ENV
from ctrlalign.model.loading import load_model
from ctrlalign.model.logprobs import IGNORE_INDEX
from ctrlalign.training.config import TrainConfig
from ctrlalign.training.objectives import ConditionalLMObjective

# --dtype auto means fp32 on every CPU in the suite (and its subprocesses), so parity tests
# hold to fp32's precision whatever the machine's CPU; tests of bf16 ask for it explicitly
os.environ[BF16_ENV] = "0"

PAIRS = [
    ("What is two plus two?", "Two plus two is four.", "Five, probably."),
    ("Name a colour.", "Blue is a colour.", "No."),
    ("How do I boil an egg?", "Put it in boiling water for eight minutes.", "Eggs are bad."),
    ("Say hello.", "Hello! How can I help?", "Go away."),
    ("What is the capital of France?", "Paris is the capital of France.", "London."),
    ("Give me a number.", "Seven.", "I will not."),
    ("Is the sky blue?", "Yes, on a clear day the sky looks blue.", "Sky?"),
    ("Count to three.", "One, two, three.", "Three, one."),
]

SCORED = [
    ("Describe the sea.", "The sea is vast, blue and full of life.", 9.0),
    ("Describe the sea.", "It is water.", 5.0),
    ("Describe the sea.", "Dunno.", 1.0),
    ("Describe a cat.", "A cat is a small furry animal that purrs.", 8.0),
    ("Describe a cat.", "An animal.", 4.0),
    ("Describe a cat.", "Cat.", 2.0),
    ("Describe rain.", "Rain is water falling from clouds in drops.", 7.0),
    ("Describe rain.", "Wet stuff.", 6.0),
    ("Describe rain.", "No idea.", 3.0),
]

PROMPTS = ["What is two plus two?", "Tell me about dogs.", "Hi!"]


def big_init(module: nn.Module, std: float = 0.5, seed: int = 0) -> nn.Module:
    """Redraw every Linear and Embedding weight (LoRA A/B included) from N(0, std)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
    return module


def fp32_sum_tolerance(reduction: int, values: torch.Tensor) -> float:
    """How far two fp32 computations of the same sums, added in different orders, may be.

    A length-n fp32 sum carries a rounding error of at most about n * eps times the size
    of its terms; we bound the terms' size by the largest value compared (as the logits do
    in ``test_lora_per_row_matches_peft_adapter_names``). ``reduction`` is the longest sum
    on the way: the batched path adds the same products as PEFT's per-adapter sub-batches
    and the per-preference batches, only blocked differently by ``bmm`` against ``mm``.
    """
    return reduction * torch.finfo(values.dtype).eps * values.abs().max().item()


def loss_and_grads(model, batch):
    """Eq. 1's token-mean loss of ``batch``, every parameter's gradient (zeros where none
    reached it) and the number of labelled tokens the mean is over."""
    model.zero_grad(set_to_none=True)
    loss = ConditionalLMObjective(model)(**batch)["loss"]
    loss.backward()
    grads = {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
    }
    count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return loss.detach(), grads, count


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def one_thread():
    """Run torch on one thread: the tiny model's small matrix products are many times
    faster that way on a shared 2-core machine (no thread barrier spinning)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny():
    """A fresh (model, tokenizer) pair: the tiny Llama with the large init."""
    lm, tok = load_model("tiny")
    return big_init(lm), tok


@pytest.fixture
def controlled():
    """Factory: ``controlled(kind)`` -> (ControlledLM, tokenizer) with the large init.

    ``lora_random=True`` also redraws the LoRA weights (B starts at zero, which would make
    every adapter the identity and every preference generate the same text).
    """

    def make(kind: str, preferences=("good", "bad"), lora_random: bool = False, **kw):
        lm, tok = load_model("tiny")
        big_init(lm)
        kw.setdefault("soft_prompt_length", 3)
        kw.setdefault("lora_rank", 2)
        control = build_control(kind, list(preferences), **kw)
        lm = control.attach(lm, tok)
        if lora_random:
            big_init(lm, std=0.3, seed=1)
        return ControlledLM(lm, control), tok

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The large-init tiny model saved as a local folder, usable as ``--model DIR``."""
    path = tmp_path_factory.mktemp("tiny-model")
    lm, tok = load_model("tiny")
    big_init(lm)
    lm.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Read-only data files shared by every test."""
    path = tmp_path_factory.mktemp("data")
    pairs = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    write_jsonl(path / "pairs.jsonl", pairs)
    scored = [{"prompt": p, "response": r, "score": s} for p, r, s in SCORED]
    write_jsonl(path / "scores.jsonl", scored)
    write_jsonl(path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    return path


@pytest.fixture(scope="session")
def pairwise_file(data_dir) -> Path:
    """Pairwise JSONL ({prompt, chosen, rejected}); read it as ``pairwise:PATH``."""
    return data_dir / "pairs.jsonl"


@pytest.fixture(scope="session")
def scores_file(data_dir) -> Path:
    """Pointwise scores ({prompt, response, score}); ``scores:PATH`` with ``levels=3``."""
    return data_dir / "scores.jsonl"


@pytest.fixture(scope="session")
def prompts_file(data_dir) -> Path:
    return data_dir / "prompts.jsonl"


@pytest.fixture(scope="session")
def train_config(tiny_model_dir):
    """Factory for a TrainConfig small enough to train in a second or two."""

    def make(data: str, output: Path, method: str, **kw) -> TrainConfig:
        values = dict(
            data=data,
            output=str(output),
            method=method,
            model=str(tiny_model_dir),
            epochs=1.0,
            batch_size=4,
            micro_batch_size=4,
            max_length=128,
            eval_fraction=0.0,
            soft_prompt_length=3,
            lora_rank=2,
            save_steps=1000,
            logging_steps=1000,
        )
        values.update(kw)
        return TrainConfig(**values)

    return make
