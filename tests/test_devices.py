"""Device, precision and model-family details: flags resolve to what the machine has,
training scores tokens through the model's own logits, generation stops on every end token.

Written device-agnostic: each runs on the CPU in CI and on CUDA where one is present
(``DEVICE`` below); those worth running on a GPU carry the ``gpu`` marker.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
    CohereConfig,
    Gemma2Config,
    GraniteConfig,
)

from ctrlalign.inference.generation import GenerationConfig, Row, Stream, generate_ids
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.device import Placement, resolve_device, resolve_dtype
from ctrlalign.model.layout import Example, collate
from ctrlalign.model.loading import load_model
from ctrlalign.model.logprobs import IGNORE_INDEX
from ctrlalign.model.pairs import PAIR_INPUTS, PairExample, collate_pairs, pair_logps
from ctrlalign.model.rundir import load_run
from ctrlalign.training import train_any
from ctrlalign.training.trainer import training_arguments

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SMALL = dict(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=128,
)
FAMILIES = {
    # soft-capping small enough to bend these logits (the default 30 would barely touch them)
    "gemma2-softcap": Gemma2Config(**SMALL, final_logit_softcapping=0.5, query_pre_attn_scalar=8),
    "granite-scaling": GraniteConfig(**SMALL, logits_scaling=4.0),
    "cohere-scale": CohereConfig(**SMALL, logit_scale=0.25),
}


def test_device_flags_resolve_or_fail_naming_the_flag():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="--device must be one of"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="--dtype must be auto or one of"):
        resolve_dtype("int8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda:1: no CUDA device"):
            resolve_device("cuda:1")
    else:
        assert Placement.resolve("auto").device.type == "cuda"


@pytest.mark.gpu
@pytest.mark.parametrize("family", FAMILIES)
def test_training_logps_are_the_models_own_log_softmax(family):
    """Token log-probs in training (Eq. 1) and in DPO's packed pairs equal
    ``log_softmax(model(ids).logits)`` at the labels, for families whose forward changes
    the logits after the head."""
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(FAMILIES[family], attn_implementation="eager")
    lm.to(DEVICE).eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.normal_(0, 0.5)  # large weights: logits far from zero, where the processing bites
    model = ControlledLM(lm)
    ids = torch.randint(5, 300, (2, 12), generator=torch.Generator().manual_seed(1)).tolist()
    prompt, response = ids[0][:7], ids[0][7:]

    with torch.no_grad():
        full = F.log_softmax(lm(torch.tensor([ids[0]], device=DEVICE)).logits.float(), -1)[0]
        expected = torch.stack([full[t - 1, ids[0][t]] for t in range(7, 12)])
        assert (full.exp().sum(-1) - 1).abs().max() < 1e-4
        unprocessed = F.log_softmax(
            lm.get_output_embeddings()(
                lm.model(torch.tensor([ids[0]], device=DEVICE)).last_hidden_state
            ).float(),
            -1,
        )[0]
        assert (unprocessed - full).abs().max() > 1e-2, "the processing must matter here"

        example = Example(prompt + response, [IGNORE_INDEX] * len(prompt) + response, 0, 0)
        batch = collate([example], pad_id=0)
        batch = {k: v.to(DEVICE) for k, v in batch.items()}
        logps, _ = model.token_logps(batch["input_ids"], batch["attention_mask"], batch["labels"])
        torch.testing.assert_close(logps, expected, atol=1e-5, rtol=1e-5)

        pair = collate_pairs([PairExample(prompt, response, ids[1][7:])], pad_id=0)
        chosen, _ = pair_logps(model, *(pair[k].to(DEVICE) for k in PAIR_INPUTS))
        torch.testing.assert_close(chosen, expected.sum().reshape(1), atol=1e-4, rtol=1e-5)


def test_generation_stops_on_every_end_token_of_the_model(tiny):
    """A model whose ``generation_config.eos_token_id`` lists two ids stops on either."""
    lm, tok = tiny
    model = ControlledLM(lm.to(DEVICE))
    rows = [Row((("user", "Say something long."),), (Stream(None),), (1.0,))]
    config = GenerationConfig(max_new_tokens=12)
    free = generate_ids(model, tok, rows, config)[0]
    assert len(free) == 12 and tok.eos_token_id not in free
    # the first token that did not appear before it: generation must end right there
    k = next(i for i, t in enumerate(free) if t not in free[:i] and i >= 2)
    lm.generation_config.eos_token_id = [tok.eos_token_id, free[k]]
    stopped = generate_ids(model, tok, rows, config)[0]
    assert stopped == free[: k + 1]


def test_load_run_places_the_model_as_asked(train_config, pairwise_file, tmp_path):
    run_dir = train_any(
        train_config(f"pairwise:{pairwise_file}", tmp_path / "run", "meet-prompt", max_steps=1)
    )
    run = load_run(run_dir, device=str(DEVICE), dtype="bfloat16")
    params = list(run.model.parameters())
    assert {p.dtype for p in params} == {torch.bfloat16}
    assert {p.device.type for p in params} == {DEVICE.type}
    assert load_run(run_dir, device="cpu").model.lm.dtype == torch.float32  # auto on a CPU


def test_training_precision_follows_dtype(train_config, tmp_path):
    config = train_config("pairwise:x", tmp_path, "sft", dtype="float16")
    if DEVICE.type == "cuda":
        args = training_arguments(config, tmp_path, lr=1e-3, epochs=1)
        assert args.fp16 and not args.bf16
    else:
        with pytest.raises(ValueError, match="--dtype float16 is not supported on the CPU"):
            training_arguments(config, tmp_path, lr=1e-3, epochs=1)
    config = train_config("pairwise:x", tmp_path, "sft", dtype="float32")
    args = training_arguments(config, tmp_path, lr=1e-3, epochs=1)
    assert not args.fp16 and not args.bf16
    with pytest.raises(ValueError, match="--dtype must be"):
        train_config("pairwise:x", tmp_path, "sft", dtype="half").validate()


def test_models_load_straight_to_the_device_in_the_dtype(tiny_model_dir):
    lm, _ = load_model(str(tiny_model_dir), torch.bfloat16, DEVICE, "eager")
    assert lm.dtype == torch.bfloat16 and lm.device.type == DEVICE.type
    assert lm.config._attn_implementation == "eager"


def test_gradient_checkpointing_trains_the_same_weights(train_config, pairwise_file, tmp_path):
    """Recomputing activations changes memory, not the arithmetic: the same step."""
    from safetensors.torch import load_file

    runs = {}
    for flag in (False, True):
        config = train_config(
            f"pairwise:{pairwise_file}",
            tmp_path / str(flag),
            "meet-prompt",
            stages="both",
            max_steps=1,
            gradient_checkpointing=flag,
        )
        run = train_any(config)
        runs[flag] = {
            **load_file(str(run / "control" / "soft_prompts.safetensors")),
            **load_file(str(run / "model" / "model.safetensors")),
        }
    assert runs[True].keys() == runs[False].keys()
    for name, value in runs[False].items():
        torch.testing.assert_close(runs[True][name], value, atol=1e-6, rtol=1e-5)
