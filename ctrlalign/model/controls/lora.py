"""One PEFT LoRA adapter per preference, and batches that mix them in one forward.

Each preference owns a PEFT adapter (``lora_A[pref]``, ``lora_B[pref]``), saved and loaded
in PEFT's own format. A batch whose rows ask for different preferences runs in one forward
(training and generation alike), the idea of Punica's and S-LoRA's batched LoRA kernels in
plain PyTorch: inside ``per_row``, each adapted linear layer stacks the A and B matrices of
the adapters present (``torch.stack`` of the very Parameters PEFT saves, so autograd sends
each row's gradient to its own adapter), gathers every row's pair, and adds the row's delta
with two batched products (``torch.bmm``). PEFT's own ``adapter_names`` forward does the
same routing with one sub-batch per adapter, but refuses training mode and rebuilds its row
lists at every forward.

A packed row (padding-free training) holds examples of several preferences, so
``per_token`` routes each token instead: gathering per token would copy an adapter per
token, so the layer computes ``x @ A_all.T`` over the K * r rows of the adapters present,
zeroes each token's columns outside its own adapter's r (a gate), then ``@ B_all`` (out x
K * r): two products whatever the mix, K times one adapter's (small) FLOPs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.tuners.lora import Linear as LoraLinear
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ctrlalign.model.controls.base import Blend, Control


def lora_config(
    rank: int,
    alpha: int | None = None,
    dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
) -> LoraConfig:
    """PEFT's config for every LoRA ctrlalign trains (controls, DPO's adapter): alpha
    defaults to twice the rank, as in the LoRA paper's common setting."""
    return LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )


class LoraControl(Control):
    kind = "lora"
    per_preference_weights = True
    weighted_blend = True

    def __init__(
        self,
        preferences: list[str],
        rank: int = 4,
        alpha: int | None = None,
        dropout: float = 0.0,
        target_modules: str | list[str] = "all-linear",
    ):
        super().__init__(preferences)
        self.config = lora_config(rank, alpha, dropout, target_modules)
        self.peft: PeftModel | None = None
        self._layers: list[LoraLinear] = []  # every adapted linear layer, once attached
        self._patched: list[LoraLinear] = []  # layers routed by per_row (see there)

    @classmethod
    def from_options(cls, preferences: list[str], options: Mapping[str, object]) -> Control:
        return cls(preferences, rank=options.get("lora_rank", 4), alpha=options.get("lora_alpha"))

    def attach(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        first, *rest = self.preferences
        peft = get_peft_model(lm, self.config, adapter_name=first)
        for pref in rest:
            peft.add_adapter(pref, self.config)
        self.peft = peft
        return peft

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.peft.named_parameters() if "lora_" in n]

    @contextlib.contextmanager
    def use(self, preference: str) -> Iterator[None]:
        self._unpatch()
        trainable = {id(p): p.requires_grad for p in self.adapter_parameters()}
        self.peft.base_model.set_adapter(self.preferences[self.index(preference)])
        # set_adapter flips requires_grad to the active adapter only; the optimizer holds
        # every adapter, so restore the flags to keep all of them trainable.
        for p in self.adapter_parameters():
            p.requires_grad_(trainable[id(p)])
        yield

    @contextlib.contextmanager
    def per_row(self, preferences: Sequence[str | Blend] | torch.Tensor) -> Iterator[None]:
        """Batch row i goes through the adapter of ``preferences[i]`` (names, or indices into
        ``self.preferences``), in one forward, with gradients, in training and inference.
        A row asking for a ``Blend`` (or a rows x parts index tensor, -1 past a row's last
        part) adds each part's delta times its weight: LoRA's task arithmetic, per row.

        A batch of one preference is a plain PEFT forward of its adapter (``use``): nothing
        to route. Otherwise every LoRA linear layer is patched with ``_routed_forward``;
        only the adapters present are stacked, so an absent adapter gets no gradient
        (``None``, not zeros: the optimizer leaves it as it is, exactly as when it trained
        on batches of its own).

        After a forward that built a graph, the patches outlive the block, as ``use``'s
        active adapter does: gradient checkpointing recomputes each layer's forward inside
        the backward, after this block, and the recomputation must route the rows as the
        forward did. Outside a backward they are PEFT's own forward; the next ``use`` or
        ``per_row`` removes them. A block without gradients leaves nothing behind.
        """
        self._unpatch()
        owners, mix = self._parts(preferences, next(self.peft.parameters()).device)
        # sorted ids of the adapters in this batch, and each part's place among them
        present, slots = owners.clamp(min=0).unique(return_inverse=True)
        present = present.tolist() if owners.numel() else []
        for pid in present:
            if not 0 <= pid < len(self.preferences):
                raise ValueError(f"preference id {pid}: this run knows {self.preferences}")
        if not present:  # no rows: nothing runs
            yield
            return
        plain = owners.shape[1] == 1 and bool((mix == 1).all())
        if plain and len(present) == 1:
            with self.use(self.preferences[present[0]]):
                yield
            return
        names = [self.preferences[p] for p in present]
        routing = _Routing(names, slots[:, 0]) if plain else _Routing(names, slots, mix)
        with self._routed(routing):
            yield

    @contextlib.contextmanager
    def per_token(self, preferences: torch.Tensor) -> Iterator[None]:
        """Each token through the adapter(s) of its own preference, in one forward, with
        gradients: ``preferences`` holds batch x length ids into ``self.preferences`` (or
        batch x length x parts for joint records' blends, -1 past a token's last part), -1
        on padding. Packed rows need this: their examples may ask for different
        preferences. One adapter throughout is a plain PEFT forward (``use``). The patches
        live as ``per_row``'s do."""
        self._unpatch()
        device = next(self.peft.parameters()).device
        owners = preferences.to(device=device, dtype=torch.long)
        owners = owners.unsqueeze(-1) if owners.dim() == 2 else owners
        present = owners[owners >= 0].unique()
        if present.numel() and int(present[-1]) >= len(self.preferences):
            raise ValueError(
                f"preference ids {present.tolist()}: this run knows {self.preferences}"
            )
        if owners.shape[-1] == 1 and present.numel() == 1:
            with self.use(self.preferences[int(present[0])]):
                yield
            return
        if not present.numel():
            yield
            return
        # each token's weight on each present adapter (its parts, 1 each; 0 on padding)
        slots = torch.searchsorted(present, owners.clamp(min=0))
        gate = owners.new_zeros((*owners.shape[:2], len(present)), dtype=torch.float32)
        gate.scatter_add_(-1, slots, (owners >= 0).float())
        names = [self.preferences[p] for p in present.tolist()]
        with self._routed(_Routing(names, slots[..., 0], gate=gate)):
            yield

    @contextlib.contextmanager
    def _routed(self, routing: _Routing) -> Iterator[None]:
        """Patch every LoRA linear layer with ``routing`` for the block (see ``per_row`` for
        why a graph-building block leaves its patches behind)."""
        if not self._layers:  # the adapted layers, found once (a walk of every module)
            self._layers = [m for m in self.peft.modules() if isinstance(m, LoraLinear)]
        self._patched = list(self._layers)
        for module in self._patched:
            module.forward = partial(_routed_forward, module, routing)
        try:
            yield
        finally:
            routing.open = False
            if not routing.built_graph:
                self._unpatch()

    def _parts(
        self, preferences: Sequence[str | Blend] | torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows x parts adapter ids, -1 past a row's last part; their weights, 0 there)."""
        if isinstance(preferences, torch.Tensor):
            owners = preferences.to(device=device, dtype=torch.long)
            owners = owners.unsqueeze(-1) if owners.dim() == 1 else owners
            return owners, (owners >= 0).float()
        rows = []
        for pref in preferences:
            if isinstance(pref, Blend):
                self.check_blend(pref)
                rows.append([(self.index(n), w) for n, w in pref.parts])
            else:
                rows.append([(self.index(pref), 1.0)])
        width = max((len(r) for r in rows), default=1)
        rows = [r + [(-1, 0.0)] * (width - len(r)) for r in rows]
        owners = torch.tensor([[i for i, _ in r] for r in rows], dtype=torch.long, device=device)
        mix = torch.tensor([[w for _, w in r] for r in rows], device=device)
        return owners.view(len(rows), width), mix.view(len(rows), width)

    def _unpatch(self) -> None:
        """Give every LoRA layer back its own forward (the class's: PEFT's)."""
        for module in self._patched:
            vars(module).pop("forward", None)
        self._patched = []

    def first_stage_parameters(self, lm: PreTrainedModel) -> list[nn.Parameter]:
        return self.adapter_parameters()

    def save(self, directory: Path, lm: PreTrainedModel) -> None:
        for pref in self.preferences:
            self.peft.save_pretrained(str(directory / "lora"), selected_adapters=[pref])

    def load(self, directory: Path, lm: PreTrainedModel) -> None:
        for pref in self.preferences:
            weights = load_file(str(directory / "lora" / pref / "adapter_model.safetensors"))
            set_peft_model_state_dict(self.peft, weights, adapter_name=pref)


class _Routing:
    """One batch's routing: the adapters present (stacking order) and each row's slot.

    ``rows`` is one slot per row, or for blends rows x parts slots with ``mix`` their
    weights (0 on padding). Routed per token instead, ``gate`` holds each token's weight
    on each adapter (batch x length x adapters) and ``rows`` the tokens' first slots.
    ``weights`` gives a layer's per-row A and B (a blend's parts concatenated along the
    rank, each B part scaled by its weight, so a row still costs two products); under
    ``torch.no_grad`` (generation) the weights cannot change within the batch, so they are
    gathered once per layer and kept for every decoding step, which leaves a step the two
    products a plain PEFT forward has. ``open`` is false once the ``per_row`` block has
    ended; ``built_graph`` records that a forward inside it ran with gradients (so a
    backward may recompute it); ``retired``, that a forward ran after the block outside a
    backward (so that batch is done with).
    """

    def __init__(
        self,
        names: list[str],
        rows: torch.Tensor,
        mix: torch.Tensor | None = None,
        gate: torch.Tensor | None = None,
    ):
        self.names = names
        self.rows = rows
        self.mix = mix
        self.gate = gate
        self.open = True
        self.built_graph = False
        self.retired = False
        self._kept: dict[LoraLinear, tuple[torch.Tensor, torch.Tensor]] = {}

    def weights(self, module: LoraLinear) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows x r x in, rows x out x r): each row's A, and its B times its scaling (for
        a blend of p parts, r is p times the rank)."""
        kept = self._kept.get(module)
        if kept is not None and not torch.is_grad_enabled():
            return kept
        a = torch.stack([module.lora_A[n].weight for n in self.names])[self.rows]
        b = torch.stack([module.lora_B[n].weight for n in self.names])[self.rows]
        scales = torch.tensor([module.scaling[n] for n in self.names], device=b.device)
        coef = scales[self.rows] if self.mix is None else scales[self.rows] * self.mix
        b = b * coef.to(b.dtype)[..., None, None]
        if self.mix is not None:  # parts side by side: rows x (parts * r) x in, out x (parts * r)
            a = a.flatten(1, 2)
            b = b.permute(0, 2, 1, 3).flatten(2)
        if not torch.is_grad_enabled():
            self._kept[module] = (a, b)
        return a, b

    def coefficients(self, slot: int) -> torch.Tensor:
        """Each row's weight on the adapter in ``slot`` (0 where the row does not use it)."""
        if self.mix is None:
            return (self.rows == slot).float()
        return (self.mix * (self.rows == slot)).sum(-1)


def _routed_forward(
    module: LoraLinear, routing: _Routing, x: torch.Tensor, *args, **kwargs
) -> torch.Tensor:
    """A LoRA linear layer where row i adds the delta of its own adapter only.

    The per-row A and B are gathered from the stacked adapters (``A[rows]``: batch x r x
    in), so each row costs exactly one adapter's products, whatever the number of adapters:
    at LoRA ranks the gathered weights are a few hundred kB against megabytes of
    activations, which is why this beats both running every adapter on every row under a
    mask and sorting the rows into one sub-batch per adapter (measured in
    ``bench/lora_mix.py``, "kernel"). Indexing is differentiable, so the backward
    scatter-adds each row's gradient into its adapter's Parameters.
    """
    if not routing.open and (routing.retired or not _in_backward()):
        # a block's leftover patch, outside a backward: that batch is over, PEFT's forward
        routing.retired = True
        return type(module).forward(module, x, *args, **kwargs)
    if module.merged or module.lora_variant or module.disable_adapters:
        raise ValueError("per-row LoRA needs plain, unmerged, enabled adapters (no DoRA)")
    routed = tuple(routing.rows.shape if routing.gate is not None else routing.rows.shape[:1])
    if x.dim() != 3 or tuple(x.shape[: len(routed)]) != routed:
        what = " x ".join(map(str, routed)) + (" tokens" if len(routed) == 2 else " rows")
        raise ValueError(f"LoRA routes {what}; a layer got input {tuple(x.shape)}")
    routing.built_graph |= torch.is_grad_enabled()
    result = module.base_layer(x, *args, **kwargs)
    if routing.gate is not None:
        return result + _token_delta(module, routing, x).to(result.dtype)
    if _partitioned(module.lora_A[routing.names[0]].weight):
        return result + _segment_delta(module, routing, x).to(result.dtype)
    a, b = routing.weights(module)
    # every adapter of a control is built from one LoraConfig, so one dropout serves all
    h = torch.bmm(module.lora_dropout[routing.names[0]](x.to(a.dtype)), a.mT)
    if result.dtype == b.dtype:
        return torch.baddbmm(result, h, b.mT)
    return result + torch.bmm(h, b.mT).to(result.dtype)


def _token_delta(module: LoraLinear, routing: _Routing, x: torch.Tensor) -> torch.Tensor:
    """Every token's delta under its own adapter(s): the K adapters side by side along the
    rank (K * r columns), each token's columns outside its adapters zeroed by the gate."""
    names, gate = routing.names, routing.gate
    h = module.lora_dropout[names[0]](x.to(module.lora_A[names[0]].weight.dtype))
    if _partitioned(module.lora_A[names[0]].weight):  # ZeRO-3: each through its own modules
        return sum(
            module.lora_B[n](module.lora_A[n](h)) * (gate[..., k, None] * module.scaling[n])
            for k, n in enumerate(names)
        )
    a = torch.cat([module.lora_A[n].weight for n in names])  # (K r) x in
    b = torch.cat([module.lora_B[n].weight * module.scaling[n] for n in names], dim=1)
    rank = a.shape[0] // len(names)  # one LoraConfig builds every adapter of a control
    h = (h @ a.mT) * gate.repeat_interleave(rank, dim=-1).to(h.dtype)
    return h @ b.mT


def _partitioned(weight: torch.Tensor) -> bool:
    """Whether DeepSpeed ZeRO-3 holds this parameter as a shard: it gathers a parameter
    only inside its own module's forward (a hook on ``lora_A[name]``), so stacking the
    weights directly would read empty shards."""
    return hasattr(weight, "ds_id")


def _segment_delta(module: LoraLinear, routing: _Routing, x: torch.Tensor) -> torch.Tensor:
    """Each adapter's rows as a sub-batch through its own modules (PEFT's ``adapter_names``
    layout, with gradients): K products a layer instead of one, but every weight is read
    through its module's forward, which ZeRO-3 needs."""
    h = module.lora_dropout[routing.names[0]](x.to(module.lora_A[routing.names[0]].weight.dtype))
    delta = None
    for slot, name in enumerate(routing.names):
        coef = routing.coefficients(slot)
        rows = coef.nonzero(as_tuple=True)[0]
        scale = (coef[rows] * module.scaling[name]).to(h.dtype).view(-1, 1, 1)
        part = module.lora_B[name](module.lora_A[name](h[rows])) * scale
        if delta is None:
            delta = part.new_zeros((x.shape[0], *part.shape[1:]))
        delta = delta.index_add(0, rows, part)
    return delta


def _in_backward() -> bool:
    """Whether autograd is running a backward on this thread (where checkpointing
    recomputes); ``torch.utils.checkpoint`` asks the same question the same way."""
    return torch._C._current_graph_task_id() != -1
