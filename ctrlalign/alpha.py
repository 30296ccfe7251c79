"""The alignment dial from the command line: ``generate --alpha`` and ``alpha-sweep``.

A CLM run mixes its unaligned and aligned streams, a MEET run two of its controls
(``--preference`` and ``--against``); logits = (1 - alpha) * low + alpha * high at every
step (``generation.alpha_row``). ``alpha-sweep`` answers every prompt at every alpha in
shared batches and reports what the CLM paper plots: reward (when a reward model is given),
length and distinctness against alpha, monotone inside [0, 1] and extrapolating beyond.

Everything a user can get wrong (alpha, run kind, flags, judge) is checked before the model
runs, and outputs are written at the end, so an error leaves nothing behind.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ctrlalign.generation import GenerationConfig, Row, alpha_row, as_messages, generate_rows
from ctrlalign.io import write_atomic, write_jsonl
from ctrlalign.rundir import Run

CSV_FIELDS = ("alpha", "n", "mean_tokens", "distinct_1", "distinct_2", "mean_score", "score_sem")


def parse_alpha(value: object) -> float:
    """A finite number; anything else is a clear error (argparse shows it as usage error)."""
    if isinstance(value, bool):
        raise ValueError(f"alpha must be a number, got {value!r}")
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number, got {value!r}") from None
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {value!r}")
    return alpha


def parse_alphas(text: str) -> list[float]:
    """Comma-separated alphas, e.g. ``-1,0,0.5,1,1.5,2``."""
    alphas = [parse_alpha(item.strip()) for item in text.split(",") if item.strip()]
    if not alphas:
        raise ValueError("no alphas given: pass e.g. --alphas -1,0,0.5,1,1.5,2")
    repeated = sorted({a for a in alphas if alphas.count(a) > 1})
    if repeated:
        raise ValueError(f"alphas given more than once: {repeated}")
    return alphas


def check_dial(
    info: dict, alpha: float | None, preference: str | None, against: str | None
) -> None:
    """Reject flag combinations that do not fit the run, from its ``run.yaml`` alone."""
    if info.get("clm"):
        if preference is not None:
            raise ValueError(
                "this is a CLM run: it has no preferences, so no --preference; "
                "its dial is --alpha (0 = base model, 1 = aligned)"
            )
        if against is not None:
            raise ValueError("--against mixes two MEET controls; a CLM run takes --alpha alone")
        return
    if against is not None:
        if not info.get("control"):
            raise ValueError(f"--against needs a run with controls; this one is {info['method']}")
        if alpha is None:
            raise ValueError("--against needs --alpha (1 = plain --preference)")
        if against == preference:
            raise ValueError(f"--against {against!r} is the --preference itself")
    elif alpha is not None:
        raise ValueError(
            "--alpha needs a CLM run, or on a MEET run --preference GOOD --against BAD"
        )


def dial_rows(
    run: Run,
    prompts: Sequence[dict],
    alpha: float | None,
    preference: str | None,
    against: str | None,
) -> list[Row]:
    """One generation row per prompt dict (its own ``alpha``/``preference`` override)."""
    control = run.model.control
    rows = []
    for item in prompts:
        pref = item.get("preference", preference)
        row_alpha = parse_alpha(item["alpha"]) if item.get("alpha") is not None else alpha
        check_dial(run.info, row_alpha, pref, against)
        if control is not None:
            for name in (pref, against):
                if name is not None:
                    control.index(name)
        if row_alpha is None:
            row_alpha = 1.0
        rows.append(alpha_row(item["prompt"], row_alpha, pref, against))
    return rows


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
    items = [{"prompt": p} for p in prompts]
    rows = [r for a in alphas for r in dial_rows(run, items, a, preference, against)]
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
    return Sweep(answers, summary)


def summary_csv(summary: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for entry in summary:
        writer.writerow({k: "" if entry[k] is None else entry[k] for k in CSV_FIELDS})
    return buffer.getvalue()


def plot_sweep(summary: Sequence[dict], path: str | Path, title: str = "") -> Path:
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
        ax.set_xlabel("alpha (0 = unaligned, 1 = aligned)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_sweep(result: Sweep, directory: str | Path, title: str = "") -> list[Path]:
    """``answers.jsonl``, ``sweep.csv`` and ``sweep.png`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write_jsonl(directory / "answers.jsonl", result.answers),
        write_atomic(directory / "sweep.csv", summary_csv(result.summary)),
        plot_sweep(result.summary, directory / "sweep.png", title),
    ]


def load_judge(spec: str | None):
    """``rm:ID_OR_DIR`` -> a reward-model judge; None -> no scores (length, distinctness)."""
    if spec is None:
        return None
    kind, _, target = spec.partition(":")
    if kind != "rm" or not target:
        raise ValueError(f"--judge must be rm:ID_OR_DIR (a reward model), got {spec!r}")
    from ctrlalign.evaluation.rm_judge import RewardModelJudge

    return RewardModelJudge(target)
