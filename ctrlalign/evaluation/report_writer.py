"""The report folder an evaluation leaves: tables, plots and a ``report.md`` tying them up.

- ``winrates.md`` / ``winrates.csv``: every (method, judge, temperature) row (``report``).
- ``rouge.md`` / ``rouge.csv``: ROUGE of every run, the baseline included, when the
  evaluation data has references (TL;DR), with each run's paired ROUGE-L difference against
  the baseline and its bootstrap 95% interval over posts; ``rouge_l_vs_baseline.png`` draws
  those differences.
- ``delta_vs_temperature.png`` (Figure 3), ``delta_vs_prompt_length.png`` and
  ``delta_vs_lora_rank.png`` (the scaling trends of Tables 1-2) where there is a trend to
  draw: two temperatures, or two runs of a method differing only in that setting.
- ``attributes.csv``: with ``attr:`` judges, each run's mean attribute and its interval.
- ``report.md``: the setup, one table per judge in the paper's layout (ROUGE-L and
  ROUGE-Avg beside the win rates, as Table 1), the full tables, the judges' caveats and the
  plots.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ctrlalign.data.io import write_atomic
from ctrlalign.evaluation.report import (
    ReportRow,
    plot_delta_against,
    plot_delta_vs_temperature,
    plot_paired_differences,
    write_csv,
    write_markdown,
)
from ctrlalign.evaluation.rouge import PairedDifference, RougeScores
from ctrlalign.evaluation.verdicts import WinRate

ROUGE_HEADER = ("method", "temperature", "rouge1", "rouge2", "rougeL", "rouge_avg", "n", "words")
ROUGE_HEADER += ("rougeL_vs_baseline", "ci_low", "ci_high")


@dataclass(frozen=True)
class RougeRow:
    method: str
    temperature: float
    scores: RougeScores
    words: float
    #: paired ROUGE-L difference against the baseline on the same posts (None: the baseline)
    vs_baseline: PairedDifference | None = None

    def cells(self) -> list[str]:
        s, d = self.scores, self.vs_baseline
        values = (s.rouge1, s.rouge2, s.rouge_l, s.average)
        paired = ["—"] * 3 if d is None else [f"{v:+.2f}" for v in (d.mean, d.ci_low, d.ci_high)]
        return [
            self.method,
            f"{self.temperature:g}",
            *(f"{v:.2f}" for v in values),
            str(s.n),
            f"{self.words:.1f}",
            *paired,
        ]


ATTRIBUTE_HEADER = ("method", "judge", "temperature", "mean", "ci_low", "ci_high", "n")


@dataclass(frozen=True)
class AttributeRow:
    """The mean of an ``attr:`` judge's attribute over a run's answers, with its interval."""

    method: str
    judge: str
    temperature: float
    mean: float
    ci_low: float
    ci_high: float
    n: int

    def cells(self) -> list[str]:
        values = (self.mean, self.ci_low, self.ci_high)
        return [
            self.method,
            self.judge,
            f"{self.temperature:g}",
            *(f"{v:.3f}" for v in values),
            str(self.n),
        ]


RUNS_HEADER = ("Method", "Steps", "Examples", "Dropped (too long)", "Precision", "Train time")
RUNS_HEADER += ("Peak RSS (GiB)", "Held-out loss")


@dataclass(frozen=True)
class RunRow:
    """What training a run cost and reached, from its ``run.yaml`` and ``metrics.json``."""

    method: str
    steps: str
    examples: int | None
    #: training examples (pairs, for pair methods) over ``max_length``, dropped as the
    #: paper does (None: a run from before training and held-out drops were kept apart)
    dropped: int | None
    #: what its products ran in (``compute_dtype``: bf16 autocast keeps fp32 weights)
    precision: str | None
    seconds: float | None
    peak_rss_gib: float | None
    eval_loss: float | None

    def cells(self) -> list[str]:
        minutes = None if self.seconds is None else f"{self.seconds / 60:.1f} min"
        loss = None if self.eval_loss is None else f"{self.eval_loss:.3f}"
        values = (self.examples, self.dropped, self.precision, minutes, self.peak_rss_gib, loss)
        return [self.method, self.steps, *("—" if v is None else str(v) for v in values)]


@dataclass(frozen=True)
class ScalingPoint:
    """Where a run sits on a scaling axis: e.g. ("meet-lora", "LoRA rank", 4)."""

    family: str
    axis: str
    value: float


@dataclass
class Results:
    """Everything ``write_report`` needs; the runner fills it."""

    baseline: str
    setup: list[str]
    rows: list[ReportRow]
    rouge_rows: list[RougeRow] = field(default_factory=list)
    judge_notes: list[str] = field(default_factory=list)
    scaling: dict[str, ScalingPoint] = field(default_factory=dict)
    run_rows: list[RunRow] = field(default_factory=list)
    attribute_rows: list[AttributeRow] = field(default_factory=list)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "".join(
        "| " + " | ".join(c.replace("|", "\\|") for c in line) + " |\n" for line in lines
    )


def _write_table_csv(header: Sequence[str], rows: Sequence, path: Path) -> Path:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(row.cells() for row in rows)
    return write_atomic(path, text.getvalue())


def _paper_table(results: Results, judge: str) -> str:
    """Table 1/2 layout at the lowest temperature: baseline first, ROUGE when there is any."""
    temperature = min(row.temperature for row in results.rows)
    rows = [r for r in results.rows if r.judge == judge and r.temperature == temperature]
    rouge = {r.method: r.scores for r in results.rouge_rows if r.temperature == temperature}
    header = ["Method", *(["Rouge-L", "Rouge-Avg"] if rouge else [])]
    header += ["Win %", "Lose %", "Tie %", "Δ %", "95% CI of Δ", "n", "Words"]

    def rouge_cells(method: str) -> list[str]:
        scores = rouge.get(method)
        if not rouge:
            return []
        return [f"{scores.rouge_l:.2f}", f"{scores.average:.2f}"] if scores else ["—", "—"]

    base_words = rows[0].baseline_words if rows else 0.0
    lines = [[f"{results.baseline} (baseline)", *rouge_cells(results.baseline)]]
    lines[0] += ["—", "—", "—", "0.00", "—", "—", f"{base_words:.1f}"]
    for row in rows:
        rate: WinRate = row.win_rate
        lines.append(
            [
                row.method,
                *rouge_cells(row.method),
                *(f"{v:.2f}" for v in (rate.win, rate.lose, rate.tie, rate.delta)),
                f"[{rate.ci_low:.1f}, {rate.ci_high:.1f}]",
                str(rate.n),
                f"{row.candidate_words:.1f}",
            ]
        )
    title = f"### {judge}, temperature {temperature:g}, baseline {results.baseline}\n\n"
    return title + markdown_table(header, lines)


def _plots(folder: Path, results: Results) -> list[Path]:
    plots = []
    several_judges = len({row.judge for row in results.rows}) > 1
    if len({row.temperature for row in results.rows}) > 1:
        path = folder / "delta_vs_temperature.png"
        title = f"Δ against {results.baseline} by temperature"
        plots.append(plot_delta_vs_temperature(results.rows, path, title=title))
    temperature = min(row.temperature for row in results.rows)
    for axis, filename in (
        ("soft-prompt length", "delta_vs_prompt_length.png"),
        ("LoRA rank", "delta_vs_lora_rank.png"),
    ):
        series: dict[str, list[tuple[float, WinRate]]] = {}
        for row in results.rows:
            point = results.scaling.get(row.method)
            if row.temperature != temperature or point is None or point.axis != axis:
                continue
            label = f"{point.family} ({row.judge})" if several_judges else point.family
            series.setdefault(label, []).append((point.value, row.win_rate))
        series = {label: points for label, points in series.items() if len(points) > 1}
        if series:
            title = f"Δ against {results.baseline} by {axis}, temperature {temperature:g}"
            path = folder / filename
            plots.append(plot_delta_against(axis, series, path, title=title, log_x=True))
    return plots


def _rouge_plots(folder: Path, results: Results) -> list[Path]:
    plots = []
    for temperature in dict.fromkeys(r.temperature for r in results.rouge_rows):
        diffs = {
            r.method: r.vs_baseline
            for r in results.rouge_rows
            if r.temperature == temperature and r.vs_baseline is not None
        }
        if not diffs:
            continue
        suffix = "" if temperature == 0 else f"_t{temperature:g}"
        title = f"ROUGE-L against {results.baseline}, paired by post, temperature {temperature:g}"
        path = folder / f"rouge_l_vs_baseline{suffix}.png"
        plots.append(plot_paired_differences(diffs, path, f"ROUGE-L − {results.baseline}", title))
    return plots


def write_report(folder: Path, results: Results) -> Path:
    """Write every table and plot into ``folder``; returns the path of ``report.md``."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = [f"# Win rates against {results.baseline}\n\n"]
    parts += [f"- {line}\n" for line in results.setup]
    if results.rows:
        write_markdown(results.rows, folder / "winrates.md")
        write_csv(results.rows, folder / "winrates.csv")
        for judge in dict.fromkeys(row.judge for row in results.rows):
            parts.append("\n" + _paper_table(results, judge))
        parts.append("\n## All win rates\n\n" + (folder / "winrates.md").read_text())
    if results.rouge_rows:
        rouge_md = markdown_table(ROUGE_HEADER, [row.cells() for row in results.rouge_rows])
        write_atomic(folder / "rouge.md", rouge_md)
        _write_table_csv(ROUGE_HEADER, results.rouge_rows, folder / "rouge.csv")
        parts.append("\n## ROUGE F1 (%) against the references\n\n")
        parts.append(
            f"rougeL_vs_baseline: mean over posts of the run's ROUGE-L minus "
            f"{results.baseline}'s on the same post, with its bootstrap 95% interval.\n\n"
        )
        parts.append(rouge_md)
    if results.attribute_rows:
        rows = results.attribute_rows
        _write_table_csv(ATTRIBUTE_HEADER, rows, folder / "attributes.csv")
        table = markdown_table(ATTRIBUTE_HEADER, [row.cells() for row in rows])
        parts.append("\n## Attributes (mean per answer, bootstrap 95% interval)\n\n" + table)
    if results.run_rows:
        table = markdown_table(RUNS_HEADER, [row.cells() for row in results.run_rows])
        parts.append("\n## Training (each run's own time and peak memory)\n\n" + table)
    if results.judge_notes:
        parts.append("\n## Judges\n\n" + "".join(f"- {note}\n" for note in results.judge_notes))
    plots = _plots(folder, results) if results.rows else []
    plots += _rouge_plots(folder, results)
    if plots:
        parts.append("\n## Plots\n\n" + "".join(f"![{p.stem}]({p.name})\n\n" for p in plots))
    return write_atomic(folder / "report.md", "".join(parts))
