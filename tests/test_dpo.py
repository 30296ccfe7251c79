"""DPO: loss and log-probs against TRL's DPOTrainer (the oracle), the loss variants against
hand computations, the frozen reference, and the pointwise-data error."""

import copy
import importlib.util
import json
import math
from dataclasses import replace

import pytest
import torch
import yaml
from datasets import Dataset
from safetensors.torch import load_file
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from ctrlalign.cli import main
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.loading import load_model
from ctrlalign.model.pairs import (
    PAIR_INPUTS,
    PairExample,
    batch_pair_logps,
    collate_packed_pairs,
    collate_pairs,
    encode_pairs,
    pair_collator,
    pair_logps,
)
from ctrlalign.model.rundir import load_run
from ctrlalign.training import train_any
from ctrlalign.training.objectives import dpo_sigmoid_loss, ipo_loss, simpo_loss
from ctrlalign.training.preference import (
    REFERENCE_FILE,
    PairPreferenceObjective,
    pairs_fingerprint,
    reference,
    reference_context,
    with_reference_logps,
)
from ctrlalign.training.splits import load_splits
from ctrlalign.training.trainer import training_arguments


def random_pairs(n: int = 3, seed: int = 0) -> list[PairExample]:
    """Prompts and responses of different lengths, so padding is exercised on both sides."""
    g = torch.Generator().manual_seed(seed)

    def ids(k: int) -> list[int]:
        return torch.randint(5, 5000, (k,), generator=g).tolist()

    return [PairExample(ids(7 + 3 * i), ids(4 + i) + [2], ids(6 - i) + [2]) for i in range(n)]


@pytest.fixture(scope="module")
def policy_and_reference():
    lm, tokenizer = load_model("tiny")
    ref = copy.deepcopy(lm)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return lm, ref, tokenizer


def trl_trainer(lm, ref, tokenizer, loss_type: str, tmp_path) -> DPOTrainer:
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        bf16=False,
        activation_checkpointing=False,
        use_cpu=True,
        report_to="none",
        beta=0.1,
        loss_type=[loss_type],
        max_length=None,
        per_device_train_batch_size=3,
    )
    dummy = Dataset.from_list([{"prompt": "Hello.", "chosen": " Hi.", "rejected": " No."}])
    return DPOTrainer(
        model=lm, ref_model=ref, args=args, train_dataset=dummy, processing_class=tokenizer
    )


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_loss_logps_and_gradients_match_trl(policy_and_reference, loss_type, tmp_path):
    lm, ref, tokenizer = policy_and_reference
    pairs = random_pairs()
    trainer = trl_trainer(lm, ref, tokenizer, loss_type, tmp_path)
    trl_batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(
        [
            {"prompt_ids": e.prompt_ids, "chosen_ids": e.chosen_ids, "rejected_ids": e.rejected_ids}
            for e in pairs
        ]
    )
    trainer.model.train()
    lm.zero_grad()
    trl_loss = trainer.compute_loss(trainer.model, trl_batch)
    trl_loss.backward()
    trl_grads = {n: p.grad.clone() for n, p in lm.named_parameters()}
    with torch.no_grad():
        trl_chosen, trl_rejected = trainer.compute_ref_log_probs(trainer.model, trl_batch)
        trl_ref_chosen, trl_ref_rejected = trainer.compute_ref_log_probs(ref, trl_batch)

    with_refs, _ = with_reference_logps(ControlledLM(ref), pairs, tokenizer.pad_token_id)
    objective = PairPreferenceObjective(ControlledLM(lm), beta=0.1, loss_type=loss_type)
    batch = collate_pairs(with_refs, tokenizer.pad_token_id)
    lm.zero_grad()
    out = objective(**batch)
    out["loss"].backward()

    close = {"atol": 1e-4, "rtol": 0}
    torch.testing.assert_close(batch["ref_logps"][:, 0], trl_ref_chosen, **close)
    torch.testing.assert_close(batch["ref_logps"][:, 1], trl_ref_rejected, **close)
    torch.testing.assert_close(out["chosen_logps"].detach(), trl_chosen, **close)
    torch.testing.assert_close(out["rejected_logps"].detach(), trl_rejected, **close)
    torch.testing.assert_close(out["loss"].detach(), trl_loss.detach(), **close)
    for name, p in lm.named_parameters():
        torch.testing.assert_close(p.grad, trl_grads[name], atol=1e-5, rtol=1e-3, msg=name)


def test_shared_prompt_logps_equal_full_sequence_computation(policy_and_reference):
    """Independent of TRL: sum of log-softmax over each full sequence's response tokens."""
    lm, _, tokenizer = policy_and_reference
    pairs = random_pairs(seed=3)
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    with torch.no_grad():
        chosen, rejected = pair_logps(ControlledLM(lm), *(batch[k] for k in PAIR_INPUTS))
        for i, e in enumerate(pairs):
            for response, ours in ((e.chosen_ids, chosen[i]), (e.rejected_ids, rejected[i])):
                ids = torch.tensor([e.prompt_ids + response])
                logps = lm(ids).logits[0, :-1].log_softmax(-1)
                targets = ids[0, 1:]
                expected = sum(
                    logps[t, targets[t]].item()
                    for t in range(len(e.prompt_ids) - 1, ids.shape[1] - 1)
                )
                assert ours.item() == pytest.approx(expected, abs=1e-4)


def test_label_smoothing_and_ipo_against_hand_computation():
    pc, pr, rc, rr = -10.0, -12.0, -11.0, -11.5
    beta, eps = 0.2, 0.1
    z = beta * ((pc - rc) - (pr - rr))

    def logsig(x: float) -> float:
        return -math.log1p(math.exp(-x))

    expected = -(1 - eps) * logsig(z) - eps * logsig(-z)
    got = dpo_sigmoid_loss(torch.tensor([pc - rc]), torch.tensor([pr - rr]), beta, eps)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert dpo_sigmoid_loss(torch.tensor([pc - rc]), torch.tensor([pr - rr]), beta).item() == (
        pytest.approx(-logsig(z), rel=1e-6)
    )
    lc, lr = 4, 7
    expected_ipo = ((pc - rc) / lc - (pr - rr) / lr - 1 / (2 * beta)) ** 2
    got_ipo = ipo_loss(
        torch.tensor([pc - rc]),
        torch.tensor([pr - rr]),
        torch.tensor([lc]),
        torch.tensor([lr]),
        beta,
    )
    assert got_ipo.item() == pytest.approx(expected_ipo, rel=1e-6)


def test_simpo_against_hand_computation():
    """SimPO (Meng et al., Eq. 6): -log sigmoid(beta * (pc / lc - pr / lr) - gamma)."""
    pc, pr, lc, lr = -10.0, -12.0, 4, 7
    beta, gamma = 2.0, 0.5
    z = beta * (pc / lc - pr / lr) - gamma
    expected = math.log1p(math.exp(-z))
    got = simpo_loss(
        torch.tensor([pc]), torch.tensor([pr]), torch.tensor([lc]), torch.tensor([lr]), beta, gamma
    )
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_simpo_objective_ignores_the_reference(policy_and_reference):
    """Reference-free: the loss on a batch is the same whatever reference log-probs it holds,
    and equals the hand formula on the policy's own length-averaged log-probs."""
    lm, _, tokenizer = policy_and_reference
    pad = tokenizer.pad_token_id
    objective = PairPreferenceObjective(
        ControlledLM(lm), beta=2.0, loss_type="simpo", simpo_gamma=0.5
    )
    pairs = random_pairs()
    noisy = [replace(p, ref_chosen=-3.0 * i, ref_rejected=7.0) for i, p in enumerate(pairs)]
    with torch.no_grad():
        out = objective(**collate_pairs(pairs, pad))
        out_noisy = objective(**collate_pairs(noisy, pad))
    assert out_noisy["loss"].item() == out["loss"].item()
    lengths = torch.tensor([[len(p.chosen_ids), len(p.rejected_ids)] for p in pairs])
    z = 2.0 * (out["chosen_logps"] / lengths[:, 0] - out["rejected_logps"] / lengths[:, 1]) - 0.5
    expected = -torch.nn.functional.logsigmoid(z).mean()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_simpo_run_skips_the_reference_pass(train_config, pairwise_file, tmp_path):
    config = train_config(
        f"pairwise:{pairwise_file}",
        tmp_path / "run",
        "dpo",
        loss_type="simpo",
        max_steps=1,
        keep_checkpoints=True,
    )
    run_dir = train_any(config)
    assert not (run_dir / "checkpoints" / REFERENCE_FILE).exists()
    assert yaml.safe_load((run_dir / "run.yaml").read_text())["loss_type"] == "simpo"
    assert load_run(run_dir).info["method"] == "dpo"


def test_objective_uses_label_smoothing(policy_and_reference):
    lm, ref, tokenizer = policy_and_reference
    pairs, _ = with_reference_logps(ControlledLM(ref), random_pairs(), tokenizer.pad_token_id)
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    with torch.no_grad():
        out = PairPreferenceObjective(ControlledLM(lm), beta=0.3, label_smoothing=0.2)(**batch)
    ratios = out["chosen_logps"] - batch["ref_logps"][:, 0]
    ratios_r = out["rejected_logps"] - batch["ref_logps"][:, 1]
    z = 0.3 * (ratios - ratios_r)
    expected = -(0.8) * torch.nn.functional.logsigmoid(z) - 0.2 * torch.nn.functional.logsigmoid(-z)
    assert out["loss"].item() == pytest.approx(expected.mean().item(), rel=1e-5)


@pytest.mark.parametrize("use_lora", [True, False])
def test_dpo_step_moves_policy_and_leaves_reference_untouched(
    train_config, pairwise_file, tmp_path, use_lora
):
    config = train_config(
        f"pairwise:{pairwise_file}",
        tmp_path / "run",
        "dpo",
        use_lora=use_lora,
        max_steps=1,
        learning_rate=1e-2,
        keep_checkpoints=True,
    )
    run_dir = train_any(config)
    run = load_run(run_dir)
    base, tokenizer = load_model(config.model)
    pad = tokenizer.pad_token_id
    train_data, _ = load_splits(config)
    pairs, _ = encode_pairs(train_data.records, tokenizer, "good", "bad", config.max_length)
    batch = collate_pairs(pairs, pad)
    inputs = [batch[k] for k in PAIR_INPUTS]
    with torch.no_grad():
        start = torch.stack(pair_logps(ControlledLM(base), *inputs), -1)
        trained = torch.stack(pair_logps(run.model, *inputs), -1)
    assert (trained - start).abs().max() > 1e-3, "the policy did not move"
    # the reference the loss used: log-probs of the starting model, cached before step 1
    # keyed by the token ids and what else decides the values (model content, precision)
    args = training_arguments(config, tmp_path / "args", lr=config.learning_rate, epochs=1)
    key = pairs_fingerprint(pairs, reference_context(config, args))
    cached = load_file(str(run_dir / "checkpoints" / REFERENCE_FILE))[key]
    torch.testing.assert_close(cached, start, atol=1e-4, rtol=0)
    if use_lora:  # the reference is the same network with its adapter disabled
        with torch.no_grad(), reference(run.model):
            ref = torch.stack(pair_logps(run.model, *inputs), -1)
        torch.testing.assert_close(ref, start, atol=1e-5, rtol=0)
        assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
        assert not (run_dir / "model").exists()
    else:
        assert (run_dir / "model" / "model.safetensors").is_file()


def test_dpo_on_pointwise_data_fails_naming_methods_and_writes_nothing(
    scores_file, tmp_path, capsys
):
    out = tmp_path / "run"
    for method in ("dpo", "clm"):
        argv = ["train", "--data", f"scores:{scores_file}", "--method", method]
        code = main([*argv, "--model", "tiny", "--output", str(out)])
        err = capsys.readouterr().err
        assert code == 2
        assert "pointwise" in err
        assert "coh, special-token, meet-prompt, meet-lora, meet-token, sft" in err
        assert not out.exists()


def test_pair_mask_gives_the_same_logps_with_eager_attention(policy_and_reference):
    lm, _, tokenizer = policy_and_reference
    batch = collate_pairs(random_pairs(seed=5), tokenizer.pad_token_id)
    model = ControlledLM(copy.deepcopy(lm))
    with torch.no_grad():
        sdpa = torch.stack(pair_logps(model, *(batch[k] for k in PAIR_INPUTS)))
        model.base.set_attn_implementation("eager")
        eager = torch.stack(pair_logps(model, *(batch[k] for k in PAIR_INPUTS)))
    torch.testing.assert_close(eager, sdpa, atol=1e-4, rtol=0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_pairs_give_the_shared_prompt_logps_and_gradients(policy_and_reference, attn):
    """The padding-free packed layout (what FlashAttention-2 runs) equals the shared-prompt
    layout in log-probs and gradients; here under the block-diagonal mask it builds for
    implementations that cannot read sequence bounds from position ids. Both compute the
    same sums of the same fp32 products, differently batched: 1e-4 on log-probs summed over
    up to 10 tokens of magnitude ~10 is a few hundred ulps, room for blocked matmul orders."""
    lm, _, tokenizer = policy_and_reference
    pairs = random_pairs(seed=7)
    layouts = {}
    for name, collate in (("shared", collate_pairs), ("packed", collate_packed_pairs)):
        model = ControlledLM(copy.deepcopy(lm))
        model.base.set_attn_implementation(attn)
        batch = collate(pairs, tokenizer.pad_token_id)
        chosen, rejected = batch_pair_logps(model, batch)
        (chosen.sum() - 2 * rejected.sum()).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        layouts[name] = (torch.stack([chosen, rejected]).detach(), grads)
    torch.testing.assert_close(layouts["packed"][0], layouts["shared"][0], atol=1e-4, rtol=0)
    assert layouts["packed"][1].keys() == layouts["shared"][1].keys()
    for name, grad in layouts["shared"][1].items():
        torch.testing.assert_close(layouts["packed"][1][name], grad, atol=1e-4, rtol=1e-4)
    assert pair_collator("flash_attention_2") is collate_packed_pairs
    assert pair_collator(attn) is collate_pairs
    packed = collate_packed_pairs(pairs, tokenizer.pad_token_id)
    assert packed["input_ids"].shape[0] == 1  # one row, no padding anywhere
    total = sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    assert packed["input_ids"].shape[1] == total


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None,
    reason="FlashAttention-2 needs CUDA and the flash_attn package",
)
def test_flash_attention_packed_pairs_match_sdpa(policy_and_reference):
    """On a GPU with flash_attn: the packed layout under FlashAttention-2 (varlen from the
    position ids, no mask) gives SDPA's shared-prompt log-probs (bf16: 5e-2 over ~10 tokens)."""
    lm, _, tokenizer = policy_and_reference
    pairs = random_pairs(seed=7)
    results = []
    for attn, collate in (("sdpa", collate_pairs), ("flash_attention_2", collate_packed_pairs)):
        model = ControlledLM(copy.deepcopy(lm).to("cuda", torch.bfloat16))
        model.base.set_attn_implementation(attn)
        batch = {k: v.cuda() for k, v in collate(pairs, tokenizer.pad_token_id).items()}
        with torch.no_grad():
            results.append(torch.stack(batch_pair_logps(model, batch)).float())
    torch.testing.assert_close(results[1], results[0], atol=5e-2, rtol=1e-2)


def test_preferences_data_holding_exactly_chosen_and_rejected_are_pairs(train_config, tmp_path):
    """The demo's concise/detailed records are pairs once --chosen and --rejected name
    them (what scripts/clm_dial_small.sh trains CLM on); a record with a third preference,
    or without the flags, keeps them pointwise and DPO refuses them."""
    from ctrlalign.data import DataError, load_preference_data

    rows = [
        {"prompt": p, "responses": {"concise": c, "detailed": f"{c} {r} {c}"}}
        for p, c, r in [("Say hello.", "Hello!", "Greetings."), ("Name a colour.", "Blue.", "Red.")]
    ]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = f"preferences:{path}"
    assert load_preference_data(spec, chosen="concise", rejected="detailed").pairwise
    assert not load_preference_data(spec).pairwise
    config = train_config(spec, tmp_path / "run", "clm", chosen="concise", rejected="detailed")
    run_dir = train_any(config)
    assert load_run(run_dir).info["method"] == "clm"
    rows[1]["responses"]["warm"] = "Blue, friend!"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert not load_preference_data(spec, chosen="concise", rejected="detailed").pairwise
    with pytest.raises(DataError, match="pointwise"):
        train_any(
            train_config(spec, tmp_path / "other", "dpo", chosen="concise", rejected="detailed")
        )
