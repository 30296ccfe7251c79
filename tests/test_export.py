"""`ctrlalign export`: the folders load in plain transformers and peft (no ctrlalign) and
give ctrlalign's logits, per preference for LoRA controls and as the aligned model for CLM."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from ctrlalign.cli import main
from ctrlalign.inference.export import export_run
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.identity_layer import insert_identity_layer
from ctrlalign.model.loading import load_model
from ctrlalign.model.rundir import Run, save_run


def test_lora_controls_become_peft_adapters(controlled, tmp_path, one_thread):
    model, tok = controlled("lora", lora_random=True)
    info = {"method": "meet-lora", "control": "lora", "preferences": ["good", "bad"]}
    run = Run(model, tok, {**info, "lora_rank": 2, "chosen": "good"})
    manifest = export_run(run, tmp_path / "out", name="meet")
    assert manifest["preferences"] == {
        "good": {"adapter": "adapters/good"},
        "bad": {"adapter": "adapters/bad"},
    }
    out = tmp_path / "out"
    config = json.loads((out / "adapters" / "good" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(out / "model")
    base = AutoModelForCausalLM.from_pretrained(out / "model")
    peft = PeftModel.from_pretrained(base, str(out / "adapters" / "good"), adapter_name="good")
    peft.load_adapter(str(out / "adapters" / "bad"), adapter_name="bad")
    peft.eval()
    ids = tok("How do I boil an egg?", return_tensors="pt").input_ids
    logits = {}
    with torch.no_grad():
        for pref in ("good", "bad"):
            with model.control.use(pref):
                ours = model.lm(input_ids=ids).logits
            peft.set_adapter(pref)
            theirs = peft(input_ids=ids).logits
            torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
            logits[pref] = theirs
    assert not torch.allclose(logits["good"], logits["bad"])  # the adapters differ
    assert "--lora-modules" in manifest["vllm"]
    assert f"meet:good={out / 'adapters' / 'good'}" in manifest["vllm"]
    with pytest.raises(ValueError, match="exists"):
        export_run(run, out)


def test_a_clm_run_exports_its_aligned_model(tmp_path, one_thread):
    lm, tok = load_model("tiny")
    layer = insert_identity_layer(lm)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    run = Run(ControlledLM(lm), tok, {"method": "clm", "clm": True, "control": None})
    manifest = export_run(run, tmp_path / "out")
    assert "aligned" in manifest["clm"] and "--lora-modules" not in manifest["vllm"]
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model")
    ids = tok("Tell me about dogs.", return_tensors="pt").input_ids
    with torch.no_grad():
        aligned = run.model.lm(input_ids=ids).logits
        with run.model.aligned_rows(False):
            base = run.model.lm(input_ids=ids).logits
        torch.testing.assert_close(plain(input_ids=ids).logits, aligned, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(aligned, base)  # the layer matters, so the check means something


def test_cli_export(controlled, tmp_path, one_thread, capsys):
    model, tok = controlled("prompt")
    info = {"method": "meet-prompt", "control": "prompt", "preferences": ["good", "bad"]}
    save_run(tmp_path / "run", model, tok, info, {}, save_lm=True)
    assert main(["export", "--run", str(tmp_path / "run"), "--output", str(tmp_path / "o")]) == 0
    manifest = json.loads((tmp_path / "o" / "export.json").read_text())
    assert manifest["preferences"]["good"]["prefix"].startswith("A good conversation is")
    assert "python -m vllm.entrypoints.openai.api_server --model" in capsys.readouterr().out
