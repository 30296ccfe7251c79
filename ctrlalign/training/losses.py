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
