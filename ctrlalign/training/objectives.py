"""Training objectives: small pure losses, each tested against a hand computation or TRL,
and the conditional-LM loss (Eq. 1) as the module the Trainer steps, with its held-out mean.

``PAIR_OBJECTIVES`` is the registry of preference losses over (chosen, rejected) pairs, by
the name ``--loss-type`` takes. Each entry says whether it needs the reference model's
log-probs: a reference-free loss (SimPO) skips the reference pass entirely. The module
that steps them is ``preference.PairPreferenceObjective``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.layout import Example, collate
from ctrlalign.model.logprobs import count_labels


def conditional_lm_loss(token_logps: torch.Tensor, num_items: torch.Tensor | int) -> torch.Tensor:
    """Eq. 1 of the MEET paper, averaged over the response tokens of the (global) batch."""
    return -token_logps.sum() / num_items


class ConditionalLMObjective(nn.Module):
    """Eq. 1 on a ``ControlledLM``, as the module the Trainer steps."""

    #: tells the Trainer to pass ``num_items_in_batch`` so the loss is a true token mean
    #: over the global batch, across gradient accumulation and processes
    accepts_loss_kwargs = True

    def __init__(self, model: ControlledLM):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        preference_ids: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        position_ids: torch.Tensor | None = None,
        sequence_ids: torch.Tensor | None = None,
        prefix_blocks: torch.Tensor | None = None,
        token_preference_ids: torch.Tensor | None = None,
        **_: object,
    ) -> dict[str, torch.Tensor]:
        if sequence_ids is not None:  # collate_packed: attention stays inside each example
            attention_mask = self.model.packed_mask(sequence_ids)
        logps, _rows = self.model.token_logps(
            input_ids,
            attention_mask,
            labels,
            prefix_mask,
            preference_ids,
            position_ids,
            prefix_blocks,
            token_preference_ids,
        )
        if num_items_in_batch is None:
            num_items_in_batch = count_labels(labels)
        return {"loss": conditional_lm_loss(logps, num_items_in_batch)}


@torch.no_grad()
def mean_response_nll(
    model: ControlledLM, examples: Sequence[Example], pad_id: int, batch_size: int = 8
) -> float:
    """Token-averaged loss of Eq. 1 on held-out examples, on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = {
            k: v.to(device)
            for k, v in collate(examples[start : start + batch_size], pad_id).items()
        }
        logps, _ = model.token_logps(
            batch["input_ids"],
            batch["attention_mask"],
            batch["labels"],
            batch["prefix_mask"],
            batch["preference_ids"],
        )
        total -= logps.sum().item()
        count += int(count_labels(batch["labels"]))
    model.train(was_training)
    return total / max(count, 1)


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected): the pairwise likelihood's negative log."""
    return -F.logsigmoid(chosen - rejected).mean()


def dpo_sigmoid_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-pair DPO loss on policy-minus-reference log-ratios (Rafailov et al., Eq. 7).

    ``label_smoothing`` = eps is conservative DPO: each label is assumed flipped with
    probability eps, so the loss is the eps-mixture of both orders (eps = 0 is plain DPO).
    """
    margin = beta * (chosen_logratios - rejected_logratios)
    return -(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)


def ipo_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per-pair IPO loss (Azar et al., Eq. 17, with tau = ``beta``).

    Log-ratios are averaged per response token before the squared loss, as TRL does and
    the IPO authors confirmed; summed ratios would make the target 1/(2 beta) length-bound.
    """
    delta = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / (
        rejected_lengths.clamp(min=1)
    )
    return (delta - 1 / (2 * beta)) ** 2


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    gamma: float,
) -> torch.Tensor:
    """Per-pair SimPO loss (Meng et al., 2024, Eq. 6): no reference model at all.

    The implicit reward is the length-averaged policy log-prob times ``beta``; ``gamma`` is
    the target margin between chosen and rejected rewards.
    """
    margin = beta * (
        chosen_logps / chosen_lengths.clamp(min=1) - rejected_logps / rejected_lengths.clamp(min=1)
    )
    return -F.logsigmoid(margin - gamma)


@dataclass(frozen=True)
class PairLogps:
    """Summed response log-probs of a batch of pairs (B each) and the responses' lengths."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor


@dataclass(frozen=True)
class PairHyper:
    beta: float = 0.1
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5


@dataclass(frozen=True)
class PairObjective:
    """A preference loss: ``loss(policy, reference, hyper)`` gives one loss per pair, and
    ``rewards(policy, reference, hyper)`` the implicit (chosen, rejected) rewards it logs."""

    loss: Callable[[PairLogps, PairLogps | None, PairHyper], torch.Tensor]
    rewards: Callable[[PairLogps, PairLogps | None, PairHyper], tuple[torch.Tensor, torch.Tensor]]
    reference_free: bool = False


def _ratio_rewards(policy: PairLogps, ref: PairLogps | None, hyper: PairHyper):
    return hyper.beta * (policy.chosen - ref.chosen), hyper.beta * (policy.rejected - ref.rejected)


def _mean_rewards(policy: PairLogps, ref: PairLogps | None, hyper: PairHyper):
    return (
        hyper.beta * policy.chosen / policy.chosen_lengths.clamp(min=1),
        hyper.beta * policy.rejected / policy.rejected_lengths.clamp(min=1),
    )


PAIR_OBJECTIVES: dict[str, PairObjective] = {
    "sigmoid": PairObjective(
        lambda p, r, h: dpo_sigmoid_loss(
            p.chosen - r.chosen, p.rejected - r.rejected, h.beta, h.label_smoothing
        ),
        _ratio_rewards,
    ),
    "ipo": PairObjective(
        lambda p, r, h: ipo_loss(
            p.chosen - r.chosen,
            p.rejected - r.rejected,
            p.chosen_lengths,
            p.rejected_lengths,
            h.beta,
        ),
        _ratio_rewards,
    ),
    "simpo": PairObjective(
        lambda p, r, h: simpo_loss(
            p.chosen, p.rejected, p.chosen_lengths, p.rejected_lengths, h.beta, h.simpo_gamma
        ),
        _mean_rewards,
        reference_free=True,
    ),
}
