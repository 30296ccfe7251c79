"""CLM: the identity layer is exact at initialisation, training moves only that layer, the
run directory holds only the layer, and the alpha dial reproduces both models (greedy)."""

import copy

import pytest
import torch

from ctrlalign.cli import main
from ctrlalign.inference.generation import GenerationConfig, alpha_row, generate_rows
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.identity_layer import (
    insert_identity_layer,
    load_identity_layer,
    save_identity_layer,
)
from ctrlalign.model.loading import load_model
from ctrlalign.model.rundir import load_run, read_run_info
from ctrlalign.training.preference import fit_pairs
from ctrlalign.training.splits import load_splits
from ctrlalign.training.stage import fit_conditional

PROMPTS = ["What is two plus two?", "Hi!", "Tell me a long story about a dog and a cat."]


def perturb(layer: torch.nn.Module, std: float = 0.3, seed: int = 1) -> None:
    """Move the layer away from the identity, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)


@pytest.fixture
def base_and_aligned(tiny):
    base, tokenizer = tiny
    aligned = copy.deepcopy(base)
    perturb(insert_identity_layer(aligned))
    return base, aligned, tokenizer


def test_identity_layer_leaves_logits_unchanged(tiny):
    lm, _ = tiny
    ids = torch.randint(5, 5000, (3, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    with torch.no_grad():
        before = lm(ids, attention_mask=mask).logits
        insert_identity_layer(lm)
        after = lm(ids, attention_mask=mask).logits
    assert lm.config.num_hidden_layers == 3
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_skipping_the_layer_is_the_base_model_and_save_load_round_trips(base_and_aligned, tmp_path):
    base, aligned, _ = base_and_aligned
    ids = torch.randint(5, 5000, (2, 9), generator=torch.Generator().manual_seed(1))
    layer = ControlledLM(aligned).clm
    with torch.no_grad():
        through = aligned(ids).logits
        with layer.rows(False):
            around = aligned(ids).logits
        with layer.rows(torch.tensor([True, False])):
            mixed = aligned(ids).logits
        expected = base(ids).logits
    torch.testing.assert_close(around, expected, atol=1e-6, rtol=0)
    assert (through - expected).abs().max() > 1e-2
    torch.testing.assert_close(mixed, torch.stack([through[0], around[1]]), atol=1e-6, rtol=0)

    save_identity_layer(layer, tmp_path)
    fresh = copy.deepcopy(base)
    load_identity_layer(fresh, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, through, atol=1e-6, rtol=0)


@pytest.mark.parametrize("clm_loss", ["dpo", "lm"])
def test_training_changes_only_the_new_layer(train_config, pairwise_file, tmp_path, clm_loss):
    config = train_config(
        f"pairwise:{pairwise_file}",
        tmp_path / "run",
        "clm",
        clm_loss=clm_loss,
        max_steps=2,
        learning_rate=1e-2,
    )
    lm, tokenizer = load_model(config.model)
    layer = insert_identity_layer(lm)
    before = {n: p.detach().clone() for n, p in lm.named_parameters()}
    train_data, eval_data = load_splits(config)
    params = list(layer.parameters())
    if clm_loss == "dpo":
        fit_pairs(config, ControlledLM(lm), tokenizer, params, train_data, eval_data)
    else:
        fit_conditional(
            config, ControlledLM(lm), tokenizer, train_data, eval_data, lambda stage: (params, [])
        )
    layer_names = {f"model.layers.0.{n}" for n, _ in layer.named_parameters()}
    changed = {n for n, p in lm.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing trained"
    assert changed <= layer_names


def test_cli_run_directory_holds_only_the_layer(
    train_config, pairwise_file, tiny_model_dir, tmp_path, capsys
):
    config = train_config(f"pairwise:{pairwise_file}", tmp_path / "run", "clm", max_steps=1)
    argv = ["train", "--data", config.data, "--method", "clm", "--model", config.model]
    argv += ["--output", config.output, "--max-steps", "1", "--batch-size", "4"]
    argv += ["--micro-batch-size", "4", "--eval-fraction", "0", "--beta", "0.2"]
    assert main(argv) == 0
    run_dir = tmp_path / "run"
    # besides the layer: the run's settings record and the lock file of its one writer
    expected = [".lock", "clm", "metrics.json", "run.yaml", "settings.json"]
    assert sorted(p.name for p in run_dir.iterdir()) == expected
    info = read_run_info(run_dir)
    assert info["model"] == config.model and info["clm"] and not info["lm_saved"]
    assert info["beta"] == 0.2
    layer_bytes = (run_dir / "clm" / "identity_layer.safetensors").stat().st_size
    base_bytes = (tiny_model_dir / "model.safetensors").stat().st_size
    assert layer_bytes < 0.02 * base_bytes
    run = load_run(run_dir)
    assert run.model.clm is not None and run.model.config.num_hidden_layers == 3
    capsys.readouterr()
    out = tmp_path / "out.jsonl"
    argv = ["generate", "--run", str(run_dir), "--prompt", "Hi!", "--alpha", "1.5"]
    assert main([*argv, "--max-new-tokens", "3", "--output", str(out)]) == 0
    assert '"alpha": 1.5' in out.read_text()


def hf_greedy(lm, tokenizer, prompt: str, n: int) -> str:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    out = lm.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def test_alpha_0_and_1_reproduce_base_and_aligned_greedy(base_and_aligned):
    base, aligned, tokenizer = base_and_aligned
    model = ControlledLM(aligned)
    config = GenerationConfig(max_new_tokens=8)
    for prompt in PROMPTS[:2]:
        want_base = hf_greedy(base, tokenizer, prompt, 8)
        want_aligned = hf_greedy(aligned, tokenizer, prompt, 8)
        assert want_base != want_aligned
        got = generate_rows(model, tokenizer, [alpha_row(prompt, 0), alpha_row(prompt, 1)], config)
        assert got == [want_base, want_aligned]


def test_alpha_mixes_logits_and_per_row_alpha_batch_equals_one_by_one(base_and_aligned):
    base, aligned, tokenizer = base_and_aligned
    model = ControlledLM(aligned)
    config = GenerationConfig(max_new_tokens=5, batch_size=32)
    # prompts of different lengths (left padding) and every kind of row: one stream, two
    rows = [alpha_row(p, a) for p in PROMPTS[1:] for a in (-1.0, 0.0, 0.4, 1.0)]
    together = generate_rows(model, tokenizer, rows, config)
    alone = [generate_rows(model, tokenizer, [row], config)[0] for row in rows]
    assert together == alone
    assert len(set(together)) > 2  # alpha changes the answers

    # first token at alpha 2: argmax of 2 * aligned - base, from direct forwards
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPTS[0]}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        mix = 2 * aligned(ids).logits[0, -1] - base(ids).logits[0, -1]
    first = generate_rows(model, tokenizer, [alpha_row(PROMPTS[0], 2.0)], GenerationConfig(1))
    assert first[0] == tokenizer.decode([int(mix.argmax())], skip_special_tokens=True).strip()


def test_margin_sweep_is_the_dpo_margin_of_the_alpha_mixed_policy(base_and_aligned):
    """Against the definition, from direct forwards of the base (the unaligned stream) and
    the aligned model, one response at a time and unpadded, in float64 from their logits."""
    from ctrlalign.data import PreferenceData, Record
    from ctrlalign.evaluation.sweep import margin_sweep
    from ctrlalign.model.layout import encode
    from ctrlalign.model.rundir import Run

    base, aligned, tokenizer = base_and_aligned
    records = [
        Record((("user", "Hi!"),), {"good": "Hello there, friend.", "bad": "Go away."}),
        Record((("user", PROMPTS[0]),), {"good": "Four.", "bad": "Five, surely, or six."}),
        Record((("user", PROMPTS[2]),), {"good": "Once a dog met a cat.", "bad": "No."}),
    ]
    pairs = PreferenceData(records, ["good", "bad"], True, "good", "bad")
    alphas = [0.0, 0.5, 1.0, 2.0]
    got = margin_sweep(Run(ControlledLM(aligned), tokenizer, {"clm": True}), pairs, alphas, 512, 2)

    def logp(alpha: float, record: Record, side: str) -> tuple[float, int, float]:
        ex = encode(tokenizer, None, record.chat, None, record.responses[side])
        ids, labels = torch.tensor([ex.input_ids]), torch.tensor(ex.labels[1:])
        with torch.no_grad():
            low, high = base(ids).logits[0, :-1], aligned(ids).logits[0, :-1]
        mixed = (1 - alpha) * low.double() + alpha * high.double()
        keep = labels != -100
        picked = torch.log_softmax(mixed, -1)[keep].gather(1, labels[keep, None])
        size = float(max(low.abs().max(), high.abs().max()))
        return float(picked.sum()), int(keep.sum()), size

    for alpha, row in zip(alphas, got, strict=True):
        margins, bound = [], 0.0
        for record in records:
            parts = {}
            for side in ("good", "bad"):
                now, tokens, size = logp(alpha, record, side)
                parts[side] = now - logp(0.0, record, side)[0]
                # fp32 logits and log-softmax per token (~64 eps of the logits' size, the
                # mixing scaled by |alpha| + |1 - alpha|), over both terms of both responses
                bound += 2 * tokens * 64 * 1.2e-7 * size * (abs(alpha) + abs(1 - alpha) + 1)
            margins.append(parts["good"] - parts["bad"])
        assert row["n"] == 3
        assert row["margin"] == pytest.approx(sum(margins) / 3, abs=bound / 3 + 5e-6)  # rounded
        assert row["accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 3, abs=5e-5)
    assert got[0]["margin"] == 0.0 and got[0]["accuracy"] == 0.0  # alpha 0 is the reference
    assert len({row["margin"] for row in got}) == 4  # the layer moved: alpha moves the margin
