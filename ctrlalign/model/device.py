"""Where a model runs and in what precision: the ``--device``, ``--dtype`` and
``--attn-implementation`` flags of every command that loads one, resolved once.

``auto`` means what a user of that hardware expects: the first CUDA device (else Apple's
MPS, else the CPU); bf16 on a GPU that supports it, fp32 elsewhere (on a CPU bf16 is slower
than fp32); FlashAttention-2 on CUDA when ``flash_attn`` is installed, else PyTorch's SDPA.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTN_IMPLEMENTATIONS = ("auto", "eager", "sdpa", "flash_attention_2")


def resolve_device(name: str = "auto") -> torch.device:
    """``name`` as a device this machine has; a clear error naming the flag otherwise."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device must be one of {DEVICE_CHOICES}, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA device is visible to this process")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA devices")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device must be one of {DEVICE_CHOICES}, got {name!r}")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    if name not in DTYPES:
        raise ValueError(f"--dtype must be auto or one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def resolve_attn(name: str, device: torch.device) -> str:
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"--attn-implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, got {name!r}"
        )
    if name != "auto":
        return name
    flash = device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if flash else "sdpa"


@dataclass(frozen=True)
class Placement:
    """A resolved (device, dtype, attention implementation) to load a model with."""

    device: torch.device
    dtype: torch.dtype
    attn_implementation: str

    @classmethod
    def resolve(cls, device: str = "auto", dtype: str = "auto", attn: str = "auto") -> Placement:
        where = resolve_device(device)
        return cls(where, resolve_dtype(dtype, where), resolve_attn(attn, where))

    @classmethod
    def cpu(cls) -> Placement:
        """fp32 on the CPU: what training loads before the Trainer places the model."""
        return cls(torch.device("cpu"), torch.float32, "sdpa")
