"""Log-probabilities of labelled tokens: what every objective and every scorer reads.

Logits are computed only at the positions that carry a label (response tokens): on CPU the
LM head over a 49k vocabulary is a large share of a step, and prompt positions never need it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

IGNORE_INDEX = -100


def lm_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """The logits the model's own forward gives for final hidden states, in fp32: its head,
    then the processing some architectures add after it (Gemma-2/3 soft-capping, Granite's
    ``logits_scaling``, Cohere's ``logit_scale``), so that training and generation score
    tokens under one distribution."""
    logits = model.get_output_embeddings()(hidden).float()
    config = model.config
    scale = getattr(config, "logit_scale", None)
    if scale is not None:
        logits = logits * scale
    scaling = getattr(config, "logits_scaling", None)
    if scaling is not None:
        logits = logits / scaling
    cap = getattr(config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def response_logps(
    hidden: torch.Tensor, labels: torch.Tensor, logits: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every labelled token and the batch row it belongs to.

    ``labels`` follows the Hugging Face convention (same positions as the inputs, shifted
    here), so hidden state t predicts label t + 1.
    """
    targets = labels[:, 1:]
    selected = targets != IGNORE_INDEX
    scores = logits(hidden[:, :-1][selected]).float()
    logps = -F.cross_entropy(scores, targets[selected], reduction="none")
    rows = selected.nonzero(as_tuple=True)[0]
    return logps, rows


def sequence_logps(
    hidden: torch.Tensor, labels: torch.Tensor, logits: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Summed response log-probability per row (what DPO compares)."""
    logps, rows = response_logps(hidden, labels, logits)
    return torch.zeros(labels.shape[0], dtype=logps.dtype, device=logps.device).index_add(
        0, rows, logps
    )


def count_labels(labels: torch.Tensor) -> torch.Tensor:
    """How many tokens carry a label (the shifted positions ``response_logps`` scores)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()
