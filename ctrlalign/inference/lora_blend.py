"""A weighted blend of exported LoRA preferences as one standard PEFT adapter.

A sum of LoRA deltas is one LoRA of the summed rank: per layer, the parts' A matrices
stacked along the rank and their B matrices side by side, each B times its part's weight
and scaling, with ``lora_alpha == r`` so the new adapter's own scaling is 1. Any server
that loads PEFT adapters then answers under the blend exactly, with no code of ours:
``VllmEngine`` builds one on a blend's first use, and the vLLM plugin (``vllm_plugin``)
does the same for plain ``vllm serve``. Built from the export's files alone (no model).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ctrlalign.data.io import atomic_dir
from ctrlalign.model.controls import Blend

BLENDS = "blends"


def _scaling(config: dict) -> float:
    """PEFT's scaling of an adapter's delta: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    rank, alpha = config["r"], config["lora_alpha"]
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _config(export: Path, name: str) -> dict:
    path = export / "adapters" / name / "adapter_config.json"
    if not path.is_file():
        known = sorted(p.name for p in (export / "adapters").iterdir())
        raise ValueError(f"{export} has no LoRA preference {name!r}; it has {known}")
    return json.loads(path.read_text())


def _adapter(export: Path, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    config = _config(export, name)
    return load_file(str(export / "adapters" / name / "adapter_model.safetensors")), config


def blend_key(blend: Blend) -> str:
    return hashlib.sha256(json.dumps(blend.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


def blend_rank(export: Path, blend: Blend) -> int:
    """The blended adapter's rank: the sum of its parts' (read from their configs only)."""
    return sum(_config(export, name)["r"] for name in blend.names)


def blend_adapter(export: str | Path, blend: Blend) -> Path:
    """The folder of ``blend``'s adapter under ``export/blends`` (built on first use)."""
    export = Path(export)
    target = export / BLENDS / blend_key(blend)
    if target.exists():
        return target
    parts = [_adapter(export, name) for name in blend.names]

    def fill(tmp: Path) -> None:
        state = {}
        for key in (k for k in parts[0][0] if ".lora_A." in k):
            b_key = key.replace(".lora_A.", ".lora_B.")
            state[key] = torch.cat([tensors[key] for tensors, _ in parts], dim=0)
            state[b_key] = torch.cat(
                [
                    tensors[b_key] * (weight * _scaling(config))
                    for (tensors, config), weight in zip(parts, blend.weights, strict=True)
                ],
                dim=1,
            )
        rank = sum(config["r"] for _, config in parts)
        config = {**parts[0][1], "r": rank, "lora_alpha": rank, "use_rslora": False}
        config["ctrlalign_blend"] = blend.as_dict()
        save_file(
            {k: v.contiguous() for k, v in state.items()}, str(tmp / "adapter_model.safetensors")
        )
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")

    return atomic_dir(target, fill)
