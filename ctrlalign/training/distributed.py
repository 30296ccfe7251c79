"""Which process this is, and whole weights under sharding: what training needs to know
about a launch by ``accelerate launch`` or ``torchrun`` (DDP, FSDP, DeepSpeed).

Every helper reads the environment the launcher exports, so it answers the same before
and after the Trainer has set up its accelerator.
"""

from __future__ import annotations

import contextlib
import os

from torch import nn


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """The processes training together (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def under_zero3() -> bool:
    """Whether this process trains under DeepSpeed ZeRO-3: ``accelerate launch`` with a
    ZeRO-3 config exports the stage to every process it starts."""
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    return deepspeed and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"


def sharded_launch() -> bool:
    """Whether FSDP or DeepSpeed shards the model: they take it from a CPU copy."""
    return any(
        os.environ.get(v, "").lower() in ("1", "true")
        for v in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
    )


def whole_parameters(model: nn.Module) -> contextlib.AbstractContextManager:
    """Under ZeRO-3 a process holds only its partition of each weight outside that module's
    forward; the run directory is written inside this gathering (a collective: every
    process enters it), as TRL gathers for generation. Elsewhere the weights are whole."""
    if not under_zero3():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
