"""Where a model runs and in what precision: the ``--device``, ``--dtype`` and
``--attn-implementation`` flags of every command that loads one, resolved once.

``auto`` means what a user of that hardware expects: the first CUDA device (else Apple's
MPS, else the CPU); bf16 on a GPU that supports it and on a CPU with native bf16 matrix
units (AMX-BF16 or AVX512-BF16 on x86, the BF16 extension on Arm: read from the CPU's
flags, not guessed), fp32 elsewhere (without those units bf16 is slower than fp32);
FlashAttention-2 on CUDA when ``flash_attn`` is installed, else PyTorch's SDPA.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTN_IMPLEMENTATIONS = ("auto", "eager", "sdpa", "flash_attention_2")
#: CPU flags of native bf16 matrix units, as /proc/cpuinfo names them (x86; Arm's "bf16")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")

log = logging.getLogger(__name__)


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first CPU in a ``/proc/cpuinfo`` text (x86 ``flags``,
    Arm ``Features``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.cache
def cpu_description() -> dict[str, object]:
    """This machine's CPU model and its native bf16 units (empty when it has none, or when
    ``/proc/cpuinfo`` is missing: then nothing is assumed)."""
    path = Path("/proc/cpuinfo")
    text = path.read_text() if path.is_file() else ""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or platform.machine(),
    )
    flags = cpu_flags(text)
    return {"model": model, "bf16_units": [f for f in BF16_CPU_FLAGS if f in flags]}


#: "1" or "0" overrides the detection (the test suite pins "0", so parity tests hold to
#: fp32's precision on every machine, whatever its CPU)
BF16_ENV = "CTRLALIGN_CPU_BF16"


def cpu_has_native_bf16() -> bool:
    forced = os.environ.get(BF16_ENV, "")
    if forced in ("0", "1"):
        return forced == "1"
    return bool(cpu_description()["bf16_units"])


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
    """``--dtype`` on ``device``: auto is bf16 where the hardware computes it natively;
    fp16 on a CPU is refused, bf16 on a CPU without bf16 units runs with a warning."""
    if name == "auto":
        if device.type == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
        else:
            bf16 = device.type == "cpu" and cpu_has_native_bf16()
        return torch.bfloat16 if bf16 else torch.float32
    if name not in DTYPES:
        raise ValueError(f"--dtype must be auto or one of {', '.join(DTYPES)}, got {name!r}")
    if device.type == "cpu" and name == "float16":
        raise ValueError(
            "--dtype float16 is not supported on the CPU (no fp16 matrix units): "
            "use --dtype bfloat16 or float32"
        )
    if device.type == "cpu" and name == "bfloat16" and not cpu_has_native_bf16():
        log.warning(
            "--dtype bfloat16 on a CPU without native bf16 units (%s): it runs, but slower "
            "than float32 there",
            cpu_description()["model"],
        )
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
