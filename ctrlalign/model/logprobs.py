"""Log-probabilities of labelled tokens: what every objective and every scorer reads.

Logits are computed only at the positions that carry a label (response tokens): on CPU the
LM head over a 49k vocabulary is a large share of a step, and prompt positions never need it.
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


def count_labels(labels: torch.Tensor) -> torch.Tensor:
    """How many tokens carry a label (the shifted positions ``response_logps`` scores)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()
