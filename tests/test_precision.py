"""bf16 where the hardware has it: detection from the CPU's flags, ``--dtype auto``, the
refusals, and bf16 mixed-precision training against fp32 on the same batches."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ctrlalign.model.device import BF16_ENV, cpu_flags, resolve_dtype
from ctrlalign.training import train_any
from ctrlalign.training.placement import precision

CPU = torch.device("cpu")
XEON = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu sse avx512f amx_bf16 avx512_bf16\n"
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 avx512f\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


def test_cpu_flags_are_read_from_cpuinfo():
    assert {"amx_bf16", "avx512_bf16"} <= cpu_flags(XEON)
    assert not {"amx_bf16", "avx512_bf16", "bf16"} & cpu_flags(EPYC)
    assert "bf16" in cpu_flags(ARM)
    assert cpu_flags("") == set()


def test_auto_is_bf16_only_on_a_cpu_with_bf16_units(monkeypatch):
    monkeypatch.setenv(BF16_ENV, "1")
    assert resolve_dtype("auto", CPU) == torch.bfloat16
    assert precision("cpu", "auto")["bf16"] is True
    monkeypatch.setenv(BF16_ENV, "0")
    assert resolve_dtype("auto", CPU) == torch.float32
    assert precision("cpu", "auto")["bf16"] is False


def test_a_precision_the_cpu_cannot_do_well_gets_a_clear_word(monkeypatch, caplog):
    with pytest.raises(ValueError, match="--dtype float16 is not supported on the CPU"):
        resolve_dtype("float16", CPU)
    monkeypatch.setenv(BF16_ENV, "0")
    with caplog.at_level(logging.WARNING, logger="ctrlalign.model.device"):
        assert resolve_dtype("bfloat16", CPU) == torch.bfloat16
    assert "slower than float32" in caplog.text


def test_bf16_training_tracks_fp32_and_keeps_fp32_weights(train_config, pairwise_file, tmp_path):
    """Three SFT steps (every weight trains) under bf16 autocast against fp32, same batches.

    bf16 keeps 8 significant bits (unit roundoff u = 2^-8); autocast rounds the inputs of
    each matrix product (<= 2u relative each, products accumulated in fp32). The tiny model
    chains about 8 products per token (two layers of attention and MLP, the head), so the
    first step's loss, from identical weights, may differ by up to 16u = 2^-4 relative.
    The run directory holds fp32 master weights either way."""
    losses, weights = {}, {}
    for dtype in ("float32", "bfloat16"):
        config = train_config(
            f"pairwise:{pairwise_file}",
            tmp_path / dtype,
            "sft",
            max_steps=3,
            dtype=dtype,
            logging_steps=1,
        )
        run = train_any(config)
        metrics = json.loads((run / "metrics.json").read_text())
        history = next(iter(metrics["stages"].values()))["log_history"]
        losses[dtype] = [h["loss"] for h in history if "loss" in h]
        weights[dtype] = load_file(str(run / "model" / "model.safetensors"))
        assert yaml.safe_load((run / "run.yaml").read_text())["compute_dtype"] == dtype
    assert len(losses["bfloat16"]) == 3
    first32, first16 = losses["float32"][0], losses["bfloat16"][0]
    assert first16 != first32  # autocast really computed in bf16
    assert abs(first16 - first32) <= 2**-4 * abs(first32)
    assert {t.dtype for t in weights["bfloat16"].values()} == {torch.float32}
