"""``alpha-sweep``: every prompt at every alpha, and what the CLM paper plots against alpha.

Answers come from shared batches (mixed alphas in one batch, each row through the dial's
``dial_row``), and the summary gives reward (when a judge is given), length, distinctness
and the share copied from the prompt per alpha: monotone inside [0, 1] and extrapolating
beyond. With held-out
pairs, ``margin_sweep`` adds what CLM's DPO training raised, the implicit reward margin, at
every alpha. With a reference for every prompt (TL;DR's human summaries), each alpha also
gets its ROUGE-L and length in words, each with a bootstrap 95% interval over prompts, and
ROUGE-L's paired difference against the first alpha (post-to-post variation cancels);
``trends`` then says, by Spearman's rank correlation, whether each moves with alpha.
Outputs are written at the end, so an error leaves nothing behind but the ``AnswerCache``
of a sweep asked to keep one, from which a rerun resumes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ctrlalign.data import PreferenceData
from ctrlalign.data.io import write_atomic, write_jsonl
from ctrlalign.evaluation.generations import RunRef, answers_by_block, digest
from ctrlalign.evaluation.report import save_png
from ctrlalign.evaluation.rouge import PairedDifference, rouge
from ctrlalign.evaluation.verdicts import bootstrap_mean
from ctrlalign.inference.dial import DialRequest, dial_row
from ctrlalign.inference.generation import GenerationConfig, as_messages, generate_rows
from ctrlalign.inference.jobs import ServingEngine
from ctrlalign.model.layout import Example, collate, encode
from ctrlalign.model.logprobs import IGNORE_INDEX, lm_logits
from ctrlalign.model.rundir import Run

CSV_FIELDS = ("alpha", "n", "mean_tokens", "distinct_1", "distinct_2", "copied_2", "mean_score")
CSV_FIELDS += ("score_sem",)
#: the columns a sweep with references adds (``reference_summary``)
ROUGE_FIELDS = ("rouge_l", "rouge_l_low", "rouge_l_high", "rouge_l_vs_first", "vs_first_low")
ROUGE_FIELDS += ("vs_first_high", "words", "words_low", "words_high")
MARGIN_FIELDS = ("alpha", "n", "margin", "margin_sem", "accuracy")
TREND_FIELDS = ("measure", "spearman_rho", "p_value", "alphas")


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Share of unique word n-grams among all n-grams of the texts (Li et al., 2016)."""
    grams = [
        tuple(words[i : i + n])
        for words in (t.lower().split() for t in texts)
        for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def copied_n(text: str, source: str, n: int) -> float | None:
    """Share of the text's word n-grams found in ``source`` (the prompt it answers): 1 for
    an answer lifted from the prompt, near 0 for one in its own words (See et al., 2017,
    count the rest as novel). A summary's ROUGE can rise by copying the post; this says
    whether it did. None for a text of fewer than ``n`` words."""
    words, seen = text.lower().split(), source.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return None
    found = {tuple(seen[i : i + n]) for i in range(len(seen) - n + 1)}
    return sum(g in found for g in grams) / len(grams)


def mean_copied(texts: Sequence[str], sources: Sequence[str], n: int = 2) -> float | None:
    """``copied_n`` of each text against its source, averaged over the texts that have an
    n-gram; None when none has."""
    shares = [copied_n(t, s, n) for t, s in zip(texts, sources, strict=True)]
    shares = [v for v in shares if v is not None]
    return round(sum(shares) / len(shares), 4) if shares else None


@dataclass
class Sweep:
    answers: list[dict]
    summary: list[dict]
    #: what alpha 0 and alpha 1 are for this run: the CLM streams, or the two MEET controls
    ends: tuple[str, str] = ("unaligned", "aligned")
    #: ``margin_sweep`` of held-out pairs, when given
    margins: list[dict] | None = None
    #: what ``mean_score`` is: a reward model's reward, or an ``attr:`` judge's attribute
    score_label: str = "mean reward"
    #: whether the summary has ``ROUGE_FIELDS`` (every prompt had a reference)
    has_references: bool = False

    def trends(self) -> list[dict]:
        """Spearman's rank correlation of each per-alpha measure with alpha, with its
        two-sided permutation p-value (exact up to 7 alphas: the asymptotic one says 0 for
        any monotone run of a few points): does the dial move it, in one direction? None for
        a measure that stayed constant."""
        from scipy.stats import permutation_test, spearmanr

        measures = [("mean_tokens", self.summary), ("mean_score", self.summary)]
        measures += [("copied_2", self.summary)]
        measures += [("rouge_l", self.summary), ("words", self.summary)]
        measures += [("margin", self.margins or [])]
        rows = []
        for key, entries in measures:
            points = [(e["alpha"], e[key]) for e in entries if e.get(key) is not None]
            if len({a for a, _ in points}) < 3:
                continue
            rho = p = None  # a measure that never changed has no rank correlation
            if len({v for _, v in points}) > 1:
                x, y = zip(*points, strict=True)
                # the measure's order permuted against alpha's: n! pairings, all of them
                # (exact) up to 7 alphas, 9,999 random ones beyond
                test = permutation_test(
                    (y,),
                    lambda y, x=x: spearmanr(x, y).statistic,
                    permutation_type="pairings",
                    rng=0,
                )
                rho, p = round(float(test.statistic), 4), round(float(test.pvalue), 4)
            rows.append({"measure": key, "spearman_rho": rho, "p_value": p, "alphas": len(points)})
        return rows


def _mean_sem(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


#: batches of answers per cache block: a kill loses at most the block in flight
BLOCK_BATCHES = 4


@dataclass(frozen=True)
class AnswerCache:
    """Where a sweep keeps its answers as they come (JSON lines), so a killed sweep resumes
    with the blocks it lacks. A row counts only from the same trained run (``fingerprint``:
    its run.yaml and metrics) under the same generation settings, precision and dial
    (preference, against); any other is answered again, never mixed in. Block b starts at
    row ``b * size`` and samples with ``seed + b * size``, so resumed answers are the ones
    an uninterrupted sweep gives."""

    path: Path
    fingerprint: str

    @classmethod
    def for_run(cls, path: str | Path, run_dir: str | Path) -> AnswerCache:
        return cls(Path(path), RunRef.read("sweep", run_dir).fingerprint)


def _answer_rows(
    run: Run,
    rows: list,
    keys: Sequence[tuple[float, object]],
    config: GenerationConfig,
    progress: bool,
    engine: ServingEngine | None,
    cache: AnswerCache | None,
    dial: tuple[str | None, str | None],
) -> list[str]:
    """The answer of every row, through ``cache`` when given (see ``AnswerCache``);
    ``dial``: the (preference, against) the rows were built with, part of the signature."""
    if cache is None:
        return generate_rows(run.model, run.tokenizer, rows, config, progress, engine)
    dtype = str(next(run.model.parameters()).dtype)
    signature = digest(cache.fingerprint, dataclasses.asdict(config), dtype, *dial)[:16]

    def answer(start: int, stop: int) -> list[str]:
        block = dataclasses.replace(config, seed=config.seed + start)
        return generate_rows(run.model, run.tokenizer, rows[start:stop], block, False, engine)

    # the position is part of a row's key: its seed is seed + position, and a prompt given
    # twice is two rows
    return answers_by_block(
        cache.path,
        signature,
        [digest(i, alpha, prompt)[:24] for i, (alpha, prompt) in enumerate(keys)],
        config.batch_size * BLOCK_BATCHES,
        answer,
        lambda i: {"alpha": keys[i][0]},
        desc="alpha sweep (blocks)",
        progress=progress,
    )


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
    engine: ServingEngine | None = None,
    references: Sequence[str] | None = None,
    cache: AnswerCache | None = None,
) -> Sweep:
    """Answer every prompt at every alpha (mixed alphas share batches) and summarise;
    ``engine``: answer through that serving engine (``--engine vllm``); ``references``, one
    per prompt: ROUGE-L and words per alpha (``reference_summary``); ``cache``: keep the
    answers as they come and reuse the ones it holds."""
    if references is not None and len(references) != len(prompts):
        raise ValueError(f"{len(references)} references for {len(prompts)} prompts")
    rows = [dial_row(run, DialRequest(p, preference, against, a)) for a in alphas for p in prompts]
    keys = [(a, p) for a in alphas for p in prompts]
    texts = _answer_rows(run, rows, keys, config, progress, engine, cache, (preference, against))
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
            "copied_2": mean_copied(responses, [prompt_text(a["prompt"]) for a in group]),
            "mean_score": None,
            "score_sem": None,
        }
        if scores is not None:
            mean, sem = _mean_sem([a["score"] for a in group])
            entry["mean_score"], entry["score_sem"] = round(mean, 5), round(sem, 5)
        summary.append(entry)
    if references is not None:
        by_alpha = [[a["response"] for a in answers if a["alpha"] == alpha] for alpha in alphas]
        for entry, values in zip(summary, reference_summary(by_alpha, references), strict=True):
            entry.update(values)
    ends = (against, preference) if against is not None else ("unaligned", "aligned")
    unit = getattr(judge, "unit", None)  # attr: judges say what they measure
    label = f"mean {judge.name} ({unit})" if unit else "mean reward"
    return Sweep(answers, summary, ends, score_label=label, has_references=references is not None)


def reference_summary(
    answers: Sequence[Sequence[str]], references: Sequence[str], n_boot: int = 2000, seed: int = 0
) -> list[dict]:
    """Per alpha (one list of answers each, in prompt order): ROUGE-L and words with their
    bootstrap 95% intervals over prompts, and ROUGE-L's paired difference against the first
    alpha's answers to the same prompts."""
    scored = [rouge(texts, references).rouge_l_each for texts in answers]
    rows = []
    for texts, each in zip(answers, scored, strict=True):
        rouge_l = bootstrap_mean(each, n_boot, seed)
        paired = PairedDifference.of(each, scored[0], n_boot, seed)
        words = bootstrap_mean([len(t.split()) for t in texts], n_boot, seed)
        values = (*rouge_l, paired.mean, paired.ci_low, paired.ci_high, *words)
        rows.append({k: round(v, 3) for k, v in zip(ROUGE_FIELDS, values, strict=True)})
    return rows


def margin_sweep(
    run: Run,
    pairs: PreferenceData,
    alphas: Sequence[float],
    max_length: int = 512,
    batch_size: int = 4,
    progress: bool = False,
) -> list[dict]:
    """The DPO implicit reward margin of held-out pairs at each alpha (a CLM run).

    With pi_alpha the policy of the alpha-mixed logits and pi_0 the unaligned stream (the
    reference CLM's DPO trains against), r_alpha(y) = log pi_alpha(y|x) - log pi_0(y|x) and
    the margin is r_alpha(chosen) - r_alpha(rejected), in nats (training logs it times
    beta): 0 at alpha 0 by construction, what training raised at alpha 1. Both streams
    run once per response; every alpha is a mix of their logits, so the sweep costs two
    forwards per response whatever the alphas.
    ``accuracy`` is the share of pairs with a positive margin. Pairs longer than
    ``max_length`` are left out, as in training.
    """
    examples = _fitting_pairs(run.tokenizer, pairs, max_length)
    mixes = [0.0, *alphas]  # the first is the reference: the unaligned stream
    sums = _mixed_logps(run, examples, mixes, 2 * batch_size, progress)
    rewards = sums[1:] - sums[0]
    margins = rewards[:, 0::2] - rewards[:, 1::2]
    result = []
    for alpha, values in zip(alphas, margins.tolist(), strict=True):
        mean, sem = _mean_sem(values)
        accuracy = sum(v > 0 for v in values) / len(values)
        result.append(
            {
                "alpha": alpha,
                "n": len(values),
                "margin": round(mean, 5),
                "margin_sem": round(sem, 5),
                "accuracy": round(accuracy, 4),
            }
        )
    return result


def _fitting_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: PreferenceData, max_length: int
) -> list[Example]:
    """Each pair's (chosen, rejected) examples, chosen first, pairs with a side over
    ``max_length`` tokens left out whole (as training does). Apart from the sweep because
    it is the data step: the pairing it keeps (even index chosen, odd rejected) is what
    the margins read back."""
    examples = []
    for record in pairs.records:
        both = [
            encode(tokenizer, None, record.chat, None, record.responses[side])
            for side in (pairs.chosen, pairs.rejected)
        ]
        if max(len(e.input_ids) for e in both) <= max_length:
            examples += both
    if not examples:
        raise ValueError(f"no pair fits in {max_length} tokens")
    return examples


def _mixed_logps(
    run: Run,
    examples: Sequence[Example],
    mixes: Sequence[float],
    batch_size: int,
    progress: bool = False,
) -> torch.Tensor:
    """(len(mixes), len(examples)) float64: each response's log-prob under the policy of
    the logits mixed at each alpha. Apart from the sweep because it is the model step:
    both streams run once per batch and every alpha is only a mix of their logits."""
    model, tokenizer = run.model, run.tokenizer
    device = next(model.parameters()).device
    sums = torch.zeros(len(mixes), len(examples), dtype=torch.float64)
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc="held-out margins (batches)", disable=not progress):
        batch = collate(examples[start : start + batch_size], tokenizer.pad_token_id)
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        targets = batch["labels"][:, 1:].to(device)
        selected = targets != IGNORE_INDEX
        rows = selected.nonzero(as_tuple=True)[0] + start
        with torch.no_grad():
            streams = []
            for aligned in (False, True):
                with model.aligned_rows(aligned):
                    hidden = model.hidden_states(ids, mask)
                streams.append(lm_logits(model.base, hidden[:, :-1][selected]).float())
            for i, alpha in enumerate(mixes):
                mixed = (1 - alpha) * streams[0] + alpha * streams[1]
                logps = -F.cross_entropy(mixed, targets[selected], reduction="none")
                sums[i].index_add_(0, rows.cpu(), logps.double().cpu())
    return sums


def summary_csv(summary: Sequence[dict], fields: Sequence[str] = CSV_FIELDS) -> str:
    """One row per entry, the given columns (a missing value left empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for entry in summary:
        writer.writerow({k: "" if entry.get(k) is None else entry[k] for k in fields})
    return buffer.getvalue()


def plot_sweep(
    summary: Sequence[dict],
    path: str | Path,
    title: str = "",
    ends: tuple[str, str] = ("unaligned", "aligned"),
    margins: Sequence[dict] | None = None,
    score_label: str = "mean reward",
) -> Path:
    """Score (when judged), length, the share copied from the prompt and the held-out
    reward margin (when pairs are given) against alpha; [0, 1] shaded as the
    interpolation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(summary, key=lambda e: e["alpha"])
    # (entries, value, error: a standard-error key, (low, high) interval keys or None, label)
    panels = [(order, "mean_tokens", None, "mean length (tokens)")]
    if order[0]["mean_score"] is not None:
        panels.insert(0, (order, "mean_score", "score_sem", f"{score_label} (± s.e.)"))
    if order[0].get("rouge_l") is not None:
        interval = ("rouge_l_low", "rouge_l_high")
        panels.insert(0, (order, "rouge_l", interval, "ROUGE-L F1 % (95% CI)"))
        panels[-1] = (order, "words", ("words_low", "words_high"), "mean length (words, 95% CI)")
    if all(e.get("copied_2") is not None for e in order):
        panels.append((order, "copied_2", None, "share of bigrams copied from the prompt"))
    if margins:
        by_alpha = sorted(margins, key=lambda e: e["alpha"])
        label = "held-out DPO reward margin (± s.e.)"
        panels.append((by_alpha, "margin", "margin_sem", label))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (entries, key, error, label) in zip(axes[0], panels, strict=True):
        alphas, values = [e["alpha"] for e in entries], [e[key] for e in entries]
        if isinstance(error, tuple):
            low, high = error
            bars = [[e[key] - e[low] for e in entries], [e[high] - e[key] for e in entries]]
            ax.errorbar(alphas, values, yerr=bars, marker="o", capsize=3)
        elif error is not None:
            ax.errorbar(alphas, values, yerr=[e[error] for e in entries], marker="o")
        else:
            ax.plot(alphas, values, marker="o")
        ax.axvspan(0, 1, color="0.9", zorder=0)
        ax.set_xlabel(f"alpha (0 = {ends[0]}, 1 = {ends[1]})")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = save_png(fig, path, dpi=120)
    plt.close(fig)
    return path


def write_sweep(result: Sweep, directory: str | Path, title: str = "") -> list[Path]:
    """``answers.jsonl``, ``sweep.csv``, ``margins.csv`` (with pairs), ``trends.csv`` (with
    three alphas or more) and ``sweep.png``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fields = CSV_FIELDS + (ROUGE_FIELDS if result.has_references else ())
    paths = [
        write_jsonl(directory / "answers.jsonl", result.answers),
        write_atomic(directory / "sweep.csv", summary_csv(result.summary, fields)),
    ]
    if result.margins:
        margins_csv = summary_csv(result.margins, MARGIN_FIELDS)
        paths.append(write_atomic(directory / "margins.csv", margins_csv))
    trends = result.trends()
    if trends:
        paths.append(write_atomic(directory / "trends.csv", summary_csv(trends, TREND_FIELDS)))
    plot = plot_sweep(
        result.summary,
        directory / "sweep.png",
        title,
        result.ends,
        result.margins,
        result.score_label,
    )
    return [*paths, plot]
