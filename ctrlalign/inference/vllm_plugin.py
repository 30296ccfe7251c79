"""ctrlalign's vLLM plugin: blends of LoRA preferences in plain ``vllm serve``.

Installed with ctrlalign as a ``vllm.general_plugins`` entry point, so every vLLM process
loads it. It registers a LoRA resolver: when a request names a model vLLM does not know,
such as ``"a:good=0.7+meh=0.3"``, and the served model is a ``ctrlalign export``
(``EXPORT/model``), the resolver builds that blend's adapter from the export's adapters
(``lora_blend``) and vLLM loads it like any adapter. vLLM asks resolvers only with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` (the command ``ctrlalign export`` prints sets
it), and loads a blend only within its ``--max-lora-rank``.

The dial (alpha between two streams) needs two streams' logits per row, which a resolver
cannot give: it is served by ``ctrlalign serve --engine vllm``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from vllm.lora.request import LoRARequest
from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

from ctrlalign.inference.lora_blend import blend_adapter
from ctrlalign.model.controls import Blend

log = logging.getLogger(__name__)


class BlendResolver(LoRAResolver):
    """``NAME:PREF=W+PREF=W`` (or ``PREF+PREF``) over a ctrlalign export, as one adapter."""

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        export = Path(base_model_name).parent
        if not (export / "export.json").is_file() or "+" not in lora_name:
            return None  # not ours: another resolver may know it
        try:
            blend = Blend.parse(lora_name.rpartition(":")[2])
            folder = await asyncio.to_thread(blend_adapter, export, blend)
        except ValueError as err:
            log.warning("ctrlalign cannot blend %r: %s", lora_name, err)
            return None
        return LoRARequest(lora_name, 1, str(folder))  # vLLM assigns the id


def register() -> None:
    """The entry point vLLM calls in each of its processes."""
    LoRAResolverRegistry.register_resolver("ctrlalign blends", BlendResolver())
