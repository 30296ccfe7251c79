"""Loss functions as small pure functions, each tested against a hand computation or TRL.

Logits are computed only at the positions that carry loss (response tokens): on CPU the LM
head over a 49k vocabulary is a large share of a step, and prompt positions never need it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def response_logps(
    hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every labelled token and the batch row it belongs to.

    ``labels`` follows the Hugging Face convention (same positions as the inputs, shifted
    here), so hidden state t predicts label t + 1.
    """
    targets = labels[:, 1:]
    selected = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][selected]).float()
    logps = -F.cross_entropy(logits, targets[selected], reduction="none")
    rows = selected.nonzero(as_tuple=True)[0]
    return logps, rows


def sequence_logps(
    hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module
) -> torch.Tensor:
    """Summed response log-probability per row (what DPO compares)."""
    logps, rows = response_logps(hidden, labels, head)
    return torch.zeros(labels.shape[0], dtype=logps.dtype, device=logps.device).index_add(
        0, rows, logps
    )


def conditional_lm_loss(token_logps: torch.Tensor, num_items: torch.Tensor | int) -> torch.Tensor:
    """Eq. 1 of the MEET paper, averaged over the response tokens of the (global) batch."""
    return -token_logps.sum() / num_items


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
