"""``alpha-sweep``: every prompt at every alpha, and what the CLM paper plots against alpha.

Answers come from shared batches (mixed alphas in one batch, each row through the dial's
``dial_row``), and the summary gives reward (when a judge is given), length and
distinctness per alpha: monotone inside [0, 1] and extrapolating beyond. Outputs are written
at the end, so an error leaves nothing behind.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ctrlalign.data.io import write_atomic, write_jsonl
from ctrlalign.inference.dial import DialRequest, dial_row
from ctrlalign.inference.generation import GenerationConfig, as_messages, generate_rows
from ctrlalign.model.rundir import Run

CSV_FIELDS = ("alpha", "n", "mean_tokens", "distinct_1", "distinct_2", "mean_score", "score_sem")


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Share of unique word n-grams among all n-grams of the texts (Li et al., 2016)."""
    grams = [
        tuple(words[i : i + n])
        for words in (t.lower().split() for t in texts)
        for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


@dataclass
class Sweep:
    answers: list[dict]
    summary: list[dict]
    #: what alpha 0 and alpha 1 are for this run: the CLM streams, or the two MEET controls
    ends: tuple[str, str] = ("unaligned", "aligned")


def _mean_sem(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def prompt_text(prompt: str | Sequence[dict]) -> str:
    """What a reward model reads as the prompt: the text, or the last user message."""
    turns = as_messages(prompt)
    users = [content for role, content in turns if role == "user"]
    return users[-1] if users else turns[-1][1]


def sweep(
    run: Run,
    prompts: Sequence[str | Sequence[dict]],
    alphas: Sequence[float],
    config: GenerationConfig,
    preference: str | None = None,
    against: str | None = None,
    judge=None,
    progress: bool = False,
) -> Sweep:
    """Answer every prompt at every alpha (mixed alphas share batches) and summarise."""
    rows = [dial_row(run, DialRequest(p, preference, against, a)) for a in alphas for p in prompts]
    texts = generate_rows(run.model, run.tokenizer, rows, config, progress)
    keys = [(a, p) for a in alphas for p in prompts]
    scores = None
    if judge is not None:
        scores = judge.score([prompt_text(p) for _, p in keys], texts)
    answers = []
    for i, ((alpha, prompt), text) in enumerate(zip(keys, texts, strict=True)):
        row = {"alpha": alpha, "prompt": prompt, "response": text}
        row["tokens"] = len(run.tokenizer(text, add_special_tokens=False).input_ids)
        if scores is not None:
            row["score"] = scores[i]
        answers.append(row)
    summary = []
    for alpha in alphas:
        group = [a for a in answers if a["alpha"] == alpha]
        responses = [a["response"] for a in group]
        entry = {
            "alpha": alpha,
            "n": len(group),
            "mean_tokens": round(sum(a["tokens"] for a in group) / len(group), 3),
            "distinct_1": round(distinct_n(responses, 1), 4),
            "distinct_2": round(distinct_n(responses, 2), 4),
            "mean_score": None,
            "score_sem": None,
        }
        if scores is not None:
            mean, sem = _mean_sem([a["score"] for a in group])
            entry["mean_score"], entry["score_sem"] = round(mean, 5), round(sem, 5)
        summary.append(entry)
    ends = (against, preference) if against is not None else ("unaligned", "aligned")
    return Sweep(answers, summary, ends)


def summary_csv(summary: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for entry in summary:
        writer.writerow({k: "" if entry[k] is None else entry[k] for k in CSV_FIELDS})
    return buffer.getvalue()


def plot_sweep(
    summary: Sequence[dict],
    path: str | Path,
    title: str = "",
    ends: tuple[str, str] = ("unaligned", "aligned"),
) -> Path:
    """Score (when judged) and length against alpha; [0, 1] shaded as the interpolation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(summary, key=lambda e: e["alpha"])
    alphas = [e["alpha"] for e in order]
    judged = order[0]["mean_score"] is not None
    panels = [("mean_tokens", "mean length (tokens)")]
    if judged:
        panels.insert(0, ("mean_score", "mean reward (± standard error)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        values = [e[key] for e in order]
        if key == "mean_score":
            ax.errorbar(alphas, values, yerr=[e["score_sem"] for e in order], marker="o")
        else:
            ax.plot(alphas, values, marker="o")
        ax.axvspan(0, 1, color="0.9", zorder=0)
        ax.set_xlabel(f"alpha (0 = {ends[0]}, 1 = {ends[1]})")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = write_atomic(path, lambda handle: fig.savefig(handle, format="png", dpi=120), True)
    plt.close(fig)
    return path


def write_sweep(result: Sweep, directory: str | Path, title: str = "") -> list[Path]:
    """``answers.jsonl``, ``sweep.csv`` and ``sweep.png`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write_jsonl(directory / "answers.jsonl", result.answers),
        write_atomic(directory / "sweep.csv", summary_csv(result.summary)),
        plot_sweep(result.summary, directory / "sweep.png", title, result.ends),
    ]
