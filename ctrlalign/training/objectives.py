"""Training objectives as small pure functions, each tested against a hand computation or TRL.

``PAIR_OBJECTIVES`` is the registry of preference losses over (chosen, rejected) pairs, by
the name ``--loss-type`` takes. Each entry says whether it needs the reference model's
log-probs: a reference-free loss (SimPO) skips the reference pass entirely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def conditional_lm_loss(token_logps: torch.Tensor, num_items: torch.Tensor | int) -> torch.Tensor:
    """Eq. 1 of the MEET paper, averaged over the response tokens of the (global) batch."""
    return -token_logps.sum() / num_items


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
