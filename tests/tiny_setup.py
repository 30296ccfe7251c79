"""Tiny data, runs and settings shared by the evaluation-runner and experiment tests."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ["cat", "dog", "sun", "tree", "river", "stone", "house", "bird", "green", "warm"]

#: TrainConfig keys that make any method train for a step or two in seconds
FAST_TRAIN = {
    "model": "tiny",
    "max_steps": 1,
    "batch_size": 4,
    "micro_batch_size": 4,
    "max_length": 64,
    "eval_fraction": 0.25,
    "save_steps": 100,
    "logging_steps": 100,
}
FAST_RM = {
    "model": "tiny",
    "max_steps": 2,
    "batch_size": 4,
    "micro_batch_size": 4,
    "max_length": 64,
    "lr": 1e-3,
    "eval_fraction": 0.25,
}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_pairs(path: Path, n: int = 16) -> str:
    """Pairwise data whose chosen answer repeats the prompt's words (a learnable signal)."""
    rows = []
    for i in range(n):
        words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3))
        rows.append({"prompt": f"Say {words}.", "chosen": f"{words} indeed", "rejected": "no idea"})
    return f"pairwise:{_write(path, rows)}"


def write_eval_prompts(path: Path, n: int = 4, references: bool = True) -> str:
    """Prompts unlike the training ones, with reference answers unless told otherwise."""
    rows = []
    for i in range(n):
        row = {"prompt": f"Tell me about the {WORDS[i]} and the {WORDS[-1 - i]}."}
        if references:
            row["reference"] = f"the {WORDS[i]} is {WORDS[-1 - i]}"
        rows.append(row)
    return f"prompts:{_write(path, rows)}"
