"""CLM's identity layer: alignment learned by one new decoder layer, so it can be dialled.

The layer is a copy of decoder layer 0 inserted before it, with the attention output
projection and the MLP down projection zeroed: with the residual connections the layer is
exactly the identity, so the network's logits are unchanged until training moves it. Only
this layer trains, and the reference model is the same network with the layer skipped.

At inference each batch row either goes through the layer (the aligned stream) or around it
(the unaligned stream); ``IdentityLayer.rows`` sets that per row, so both streams of every
prompt share one batched forward and one KV cache. The layer keeps the cache slot after the
original layers (index ``num_hidden_layers``), so the original layers keep their own cache
indices and a batch that skips the layer entirely is exactly the base model. The switch is
state on the layer for the duration of a call, like PEFT's active adapter: one generation
at a time per model object.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

LAYER_FILE = "identity_layer.safetensors"
#: leaf names of the projections that write into the residual stream, across architectures
OUTPUT_PROJECTIONS = ("o_proj", "out_proj", "down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2")


class IdentityLayer(nn.Module):
    """A decoder layer that each batch row may pass through or skip."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        # hybrid-attention decoders pick each layer's mask by this attribute
        if hasattr(layer, "attention_type"):
            self.attention_type = layer.attention_type
        self._rows: torch.Tensor | bool = True

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        rows = self._rows
        if rows is False:
            return hidden_states
        out = self.layer(hidden_states, *args, **kwargs)
        if rows is True:
            return out
        return torch.where(rows.to(out.device).view(-1, 1, 1), out, hidden_states)

    @contextlib.contextmanager
    def rows(self, aligned: torch.Tensor | bool) -> Iterator[None]:
        """Route rows through the layer (True) or around it (False), all or per row.

        A per-row mask that is all True or all False is reduced to the plain bool, so a
        batch with one stream pays nothing for the switch (and skipping computes nothing).
        """
        if isinstance(aligned, torch.Tensor):
            aligned = aligned.bool().cpu()
            if bool(aligned.all()) or not bool(aligned.any()):
                aligned = bool(aligned.all())
        previous, self._rows = self._rows, aligned
        try:
            yield
        finally:
            self._rows = previous


def _decoder_layers(lm: PreTrainedModel | PeftModel) -> tuple[nn.ModuleList, object]:
    base = lm.get_base_model() if isinstance(lm, PeftModel) else lm
    layers = getattr(base.get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(
            f"{type(base).__name__} has no `layers` list of decoder layers; CLM supports "
            "Llama-style decoders (Llama, SmolLM, Mistral, Qwen, Gemma, Phi-3, ...)"
        )
    return layers, base.config.get_text_config()


def find_identity_layer(lm: PreTrainedModel | PeftModel) -> IdentityLayer | None:
    """The CLM layer of a model, if one was inserted."""
    try:
        layers, _ = _decoder_layers(lm)
    except (ValueError, AttributeError):
        return None
    return layers[0] if isinstance(layers[0], IdentityLayer) else None


def _zero_output_projections(layer: nn.Module) -> list[str]:
    zeroed = []
    for name, module in layer.named_modules():
        if name.rsplit(".", 1)[-1] in OUTPUT_PROJECTIONS and hasattr(module, "weight"):
            with torch.no_grad():
                module.weight.zero_()
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            zeroed.append(name)
    if len(zeroed) < 2:
        raise ValueError(
            f"cannot find the attention and MLP output projections of {type(layer).__name__} "
            f"(looked for {', '.join(OUTPUT_PROJECTIONS)}); found {zeroed}"
        )
    return zeroed


def insert_identity_layer(lm: PreTrainedModel | PeftModel) -> IdentityLayer:
    """Insert the CLM layer before decoder layer 0 (in place) and return it.

    The copy's attention modules get cache index ``num_hidden_layers`` (the slot after the
    original layers) and the config counts one layer more, so the decoder loop runs it.
    """
    layers, config = _decoder_layers(lm)
    if isinstance(layers[0], IdentityLayer):
        raise ValueError("this model already has a CLM identity layer")
    new = copy.deepcopy(layers[0])
    _zero_output_projections(new)
    slot = len(layers)
    for module in new.modules():
        if hasattr(module, "layer_idx"):
            module.layer_idx = slot
    identity = IdentityLayer(new)
    layers.insert(0, identity)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [*config.layer_types, config.layer_types[0]]
    return identity


def save_identity_layer(layer: IdentityLayer, directory: str | Path) -> Path:
    """Write only the new layer's weights (a few MB for a 135M model)."""
    path = Path(directory) / LAYER_FILE
    state = {k: v.detach().contiguous().cpu() for k, v in layer.layer.state_dict().items()}
    save_file(state, str(path))
    return path


def load_identity_layer(lm: PreTrainedModel | PeftModel, directory: str | Path) -> IdentityLayer:
    """Insert the CLM layer into a freshly loaded base model and restore its trained weights."""
    path = Path(directory) / LAYER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run's CLM layer is missing")
    layer = insert_identity_layer(lm)
    dtype = next(layer.parameters()).dtype
    state = {k: v.to(dtype) for k, v in load_file(str(path)).items()}
    layer.layer.load_state_dict(state, strict=True)
    return layer
