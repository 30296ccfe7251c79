"""Win-rate tables and delta plots, shaped like the paper's Tables 1-5 and Figure 3.

A row is one (method, judge, temperature) against one baseline. Next to the paper's
columns it carries the bootstrap interval of delta and the mean answer lengths, because the
paper's own explanation of DPO's results is length (section 4.4), and a reader should see
it beside every number. Files are written to a temporary name and renamed, so a crash never
leaves a half-written table that looks complete.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ctrlalign.data.io import write_atomic
from ctrlalign.evaluation.rouge import PairedDifference
from ctrlalign.evaluation.verdicts import WinRate

CSV_HEADER = (
    "method",
    "judge",
    "temperature",
    "win_pct",
    "lose_pct",
    "tie_pct",
    "delta_pct",
    "ci_low",
    "ci_high",
    "n",
    "candidate_words",
    "baseline_words",
)
MARKDOWN_HEADER = (
    "Method",
    "Judge",
    "Temp.",
    "Win %",
    "Lose %",
    "Tie %",
    "Δ %",
    "CI low",
    "CI high",
    "n",
    "Words (cand.)",
    "Words (base.)",
)


def mean_words(texts: Sequence[str]) -> float:
    """Mean answer length in whitespace-separated words (0 for no answers)."""
    return sum(len(text.split()) for text in texts) / len(texts) if texts else 0.0


@dataclass(frozen=True)
class ReportRow:
    """One line of a win-rate table: a method against the baseline under one judge."""

    method: str
    judge: str
    temperature: float
    win_rate: WinRate
    candidate_words: float
    baseline_words: float

    @classmethod
    def from_answers(
        cls,
        method: str,
        judge: str,
        temperature: float,
        win_rate: WinRate,
        candidate_answers: Sequence[str],
        baseline_answers: Sequence[str],
    ) -> ReportRow:
        return cls(
            method,
            judge,
            temperature,
            win_rate,
            mean_words(candidate_answers),
            mean_words(baseline_answers),
        )

    def cells(self) -> list[str]:
        """The row's values as table text, in the order of the headers."""
        rate = self.win_rate
        return [
            self.method,
            self.judge,
            f"{self.temperature:g}",
            *(f"{value:.2f}" for value in (rate.win, rate.lose, rate.tie, rate.delta)),
            f"{rate.ci_low:.2f}",
            f"{rate.ci_high:.2f}",
            str(rate.n),
            f"{self.candidate_words:.1f}",
            f"{self.baseline_words:.1f}",
        ]


def write_markdown(rows: Sequence[ReportRow], path: str | Path) -> Path:
    """A GitHub-flavoured Markdown table, one line per row."""

    def write(handle: IO) -> None:
        handle.write(_markdown_line(MARKDOWN_HEADER))
        handle.write(_markdown_line(["---"] * len(MARKDOWN_HEADER)))
        for row in rows:
            handle.write(_markdown_line(row.cells()))

    return write_atomic(path, write)


def write_csv(rows: Sequence[ReportRow], path: str | Path) -> Path:
    """The same table as CSV, for spreadsheets and for comparing runs in code."""

    def write(handle: IO) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for row in rows:
            writer.writerow(row.cells())

    return write_atomic(path, write)


def save_png(figure: Figure, path: str | Path, dpi: float | None = None) -> Path:
    """``figure`` as a PNG at ``path``, whole or not at all (``write_atomic``)."""
    return write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=dpi), True)


def _markdown_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |\n"


def plot_delta_against(
    x_name: str,
    series: Mapping[str, Sequence[tuple[float, WinRate]]],
    path: str | Path,
    title: str | None = None,
    log_x: bool = False,
) -> Path:
    """Delta (with its bootstrap band) against ``x_name``, one line per series label.

    The x values can be temperatures, soft-prompt lengths or LoRA ranks: the paper's
    Figure 3 and the scaling trends of Tables 1-2. ``log_x`` spaces settings that grow
    geometrically (ranks 1, 4, 64) evenly, with the values themselves as tick labels.
    """
    if not any(series.values()):
        raise ValueError("nothing to plot: every series is empty")
    figure = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    for label, points in series.items():
        ordered = sorted(points, key=lambda point: point[0])
        xs = [x for x, _ in ordered]
        line = axes.plot(xs, [rate.delta for _, rate in ordered], marker="o", label=label)[0]
        axes.fill_between(
            xs,
            [rate.ci_low for _, rate in ordered],
            [rate.ci_high for _, rate in ordered],
            color=line.get_color(),
            alpha=0.15,
        )
    axes.set_xlabel(x_name)
    if log_x:
        axes.set_xscale("log")
        ticks = sorted({x for points in series.values() for x, _ in points})
        axes.set_xticks(ticks, [f"{x:g}" for x in ticks])
        axes.minorticks_off()
    axes.set_ylabel("Δ = win % − lose %")
    if title:
        axes.set_title(title)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return save_png(figure, path)


def plot_delta_vs_temperature(
    rows: Sequence[ReportRow], path: str | Path, title: str | None = None
) -> Path:
    """Figure 3 of the paper: delta against sampling temperature, one line per method.

    Lines are labelled by method, or by method and judge when the rows mix judges.
    """
    several_judges = len({row.judge for row in rows}) > 1
    series: dict[str, list[tuple[float, WinRate]]] = {}
    for row in rows:
        label = f"{row.method} ({row.judge})" if several_judges else row.method
        series.setdefault(label, []).append((row.temperature, row.win_rate))
    return plot_delta_against("temperature", series, path, title=title)


def plot_paired_differences(
    differences: Mapping[str, PairedDifference], path: str | Path, x_label: str, title: str
) -> Path:
    """One row per method: its mean paired difference against the baseline and the 95%
    interval, on a shared axis with zero marked, so which intervals exclude zero is seen
    at a glance."""
    if not differences:
        raise ValueError("nothing to plot: no paired differences")
    names = list(differences)
    figure = Figure(figsize=(6.4, 0.9 + 0.45 * len(names)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
    for y, name in enumerate(names):
        d = differences[name]
        excludes_zero = d.ci_low > 0 or d.ci_high < 0
        axes.errorbar(
            d.mean,
            y,
            xerr=[[d.mean - d.ci_low], [d.ci_high - d.mean]],
            fmt="o",
            capsize=4,
            color="tab:blue" if excludes_zero else "tab:grey",
        )
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()
    axes.set_xlabel(f"{x_label} (points; bar: bootstrap 95% interval)")
    axes.set_title(title, fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return save_png(figure, path)
