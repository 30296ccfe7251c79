"""``ctrlalign controllability``: does each control move the attribute it names, and only it?

Two axes, each an attribute judge (``attr:NAME``) and its two opposite controls, e.g.
length (``attr:length``: concise, detailed) and tone (``attr:sentiment``: neutral, warm).
Every prompt is answered under each control alone, under every combination of one control
per axis (a blend, composed natively or by logits) and at alpha steps between each axis's
two controls; every answer is measured on both attributes. What SteerLM- and Rewarded-Soups-
style comparisons plot:

- the controllability table: per axis, the attribute under its high control minus under its
  low one, paired over prompts with a bootstrap 95% interval, and how much the *other*
  attribute moved between the same two answers; the crosstalk is that move over what the
  other axis's own controls move it (unit-free: words and sentiment do not compare), and a
  control passes when its interval excludes 0 and the crosstalk is under a third;
- the combinations: each one's mean on both attributes, and whether it lands in its quadrant
  (above the axis's centre, the mean over all combinations, for its high control; below for
  the low one), held-out combinations marked;
- the alpha curves: each attribute's mean at every alpha and its Spearman correlation with
  alpha (monotone dial: 1);
- ``pareto.png``: one attribute against the other for every combination and along each
  alpha curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ctrlalign.data.io import write_atomic, write_jsonl
from ctrlalign.evaluation.judges.attr import ATTRIBUTES
from ctrlalign.evaluation.report import save_png
from ctrlalign.evaluation.sweep import prompt_text, summary_csv
from ctrlalign.evaluation.verdicts import bootstrap_mean
from ctrlalign.inference.dial import DialError, DialRequest, dial_row
from ctrlalign.inference.generation import GenerationConfig, generate_rows
from ctrlalign.inference.jobs import ServingEngine
from ctrlalign.model.controls import Blend
from ctrlalign.model.rundir import Run

#: the share of its own movement the other attribute may move (the issue's target)
CROSSTALK_LIMIT = 1 / 3


@dataclass(frozen=True)
class Axis:
    """One attribute and the two controls that should move it down (``low``) and up."""

    name: str
    attribute: str
    low: str
    high: str

    @classmethod
    def parse(cls, text: str) -> Axis:
        """``NAME:ATTRIBUTE:LOW:HIGH``, e.g. ``tone:sentiment:neutral:warm``."""
        parts = text.split(":")
        if len(parts) != 4 or not all(p.strip() for p in parts):
            raise DialError(f"--axis {text!r}: expected NAME:ATTRIBUTE:LOW:HIGH", "axis")
        name, attribute, low, high = (p.strip() for p in parts)
        if attribute not in ATTRIBUTES:
            raise DialError(
                f"--axis {text!r}: unknown attribute {attribute!r}; "
                f"choose from {', '.join(ATTRIBUTES)}",
                "axis",
            )
        if low == high:
            raise DialError(f"--axis {text!r}: its two controls are the same", "axis")
        return cls(name, attribute, low, high)

    def measure(self, text: str) -> float:
        return ATTRIBUTES[self.attribute].measure(text)


def check_axes(axes: Sequence[Axis]) -> tuple[Axis, Axis]:
    """The two axes a measurement takes (a Pareto plot has two), with different names."""
    if len(axes) != 2 or axes[0].name == axes[1].name:
        raise DialError("controllability takes two --axis with different names", "axis")
    return axes[0], axes[1]


@dataclass
class Controllability:
    axes: tuple[Axis, Axis]
    answers: list[dict]
    table: list[dict]
    combinations: list[dict]
    alphas: list[dict]
    held_out: list[str] = field(default_factory=list)


def _conditions(axes: Sequence[Axis], alphas: Sequence[float], compose: str) -> list[dict]:
    """Every condition answered: singles, combinations, alpha steps (no duplicates)."""
    out = []
    for axis in axes:
        for control in (axis.low, axis.high):
            out.append({"kind": "single", "label": control, "preference": control})
    first, second = axes
    for a in (first.low, first.high):
        for b in (second.low, second.high):
            blend = Blend(((a, 1.0), (b, 1.0)))
            out.append({"kind": "combination", "label": str(blend), "preference": blend})
    for axis in axes:
        for alpha in alphas:
            if alpha in (0, 1):  # the two singles themselves
                continue
            out.append(
                {
                    "kind": "alpha",
                    "label": f"{axis.name} alpha={alpha:g}",
                    "preference": axis.high,
                    "against": axis.low,
                    "alpha": alpha,
                    "axis": axis.name,
                }
            )
    for condition in out:
        condition.setdefault("compose", compose)
    return out


def evaluate_controllability(
    run: Run,
    prompts: Sequence[str | Sequence[dict]],
    axes: tuple[Axis, Axis],
    alphas: Sequence[float],
    config: GenerationConfig,
    compose: str = "native",
    held_out: Sequence[str] = (),
    progress: bool = False,
    engine: ServingEngine | None = None,
) -> Controllability:
    """Answer every prompt under every condition (one shared batch stream), measure both
    attributes of every answer and summarise; a bad control or blend fails before any
    generation."""
    conditions = _conditions(check_axes(axes), alphas, compose)
    requests = [
        DialRequest(p, c["preference"], c.get("against"), c.get("alpha"), compose=c["compose"])
        for c in conditions
        for p in prompts
    ]
    rows = [dial_row(run, r) for r in requests]
    texts = generate_rows(run.model, run.tokenizer, rows, config, progress, engine)
    answers = []
    keys = [(c, i, p) for c in conditions for i, p in enumerate(prompts)]
    for (condition, index, prompt), text in zip(keys, texts, strict=True):
        entry = {"condition": condition["label"], "kind": condition["kind"], "prompt_index": index}
        entry |= {"prompt": prompt_text(prompt), "response": text}
        entry |= {axis.name: axis.measure(text) for axis in axes}
        answers.append(entry)
    return summarise(axes, answers, alphas, held_out)


def summarise(
    axes: tuple[Axis, Axis],
    answers: list[dict],
    alphas: Sequence[float],
    held_out: Sequence[str] = (),
) -> Controllability:
    """The tables from measured answers (``answers.jsonl``'s rows), so a report can be
    rebuilt without generating again."""
    by = {}
    for entry in answers:
        by.setdefault(entry["condition"], []).append(entry)
    table = [_axis_row(axis, axes, by) for axis in axes]
    own = {row["axis"]: row["difference"] for row in table}
    for row in table:
        # unit-free: the other attribute's move here against what its own controls move it
        moved = abs(own[row["other"]])
        row["crosstalk"] = abs(row["other_difference"]) / moved if moved else float("inf")
        row["passes"] = row["moves"] and row["crosstalk"] < CROSSTALK_LIMIT
    labels = list(by)
    combos = [label for label in labels if by[label][0]["kind"] == "combination"]
    return Controllability(
        axes,
        answers,
        table,
        _combination_rows(axes, combos, by, held_out),
        _alpha_rows(axes, alphas, by),
        list(held_out),
    )


def _paired(high: list[dict], low: list[dict], name: str) -> tuple[float, float, float]:
    return bootstrap_mean([h[name] - lo[name] for h, lo in zip(high, low, strict=True)])


def _axis_row(axis: Axis, axes: Sequence[Axis], by: dict[str, list[dict]]) -> dict:
    (other,) = [a for a in axes if a is not axis]
    high, low = by[axis.high], by[axis.low]
    own, own_low, own_high = _paired(high, low, axis.name)
    cross, cross_low, cross_high = _paired(high, low, other.name)
    return {
        "axis": axis.name,
        "attribute": axis.attribute,
        "controls": f"{axis.high} vs {axis.low}",
        "high_mean": _mean(high, axis.name),
        "low_mean": _mean(low, axis.name),
        "difference": own,
        "ci_low": own_low,
        "ci_high": own_high,
        "moves": own_low > 0,
        "other": other.name,
        "other_difference": cross,
        "other_ci_low": cross_low,
        "other_ci_high": cross_high,
    }


def _mean(entries: list[dict], name: str) -> float:
    return sum(e[name] for e in entries) / len(entries)


def _combination_rows(
    axes: Sequence[Axis], combos: list[str], by: dict, held_out: Sequence[str]
) -> list[dict]:
    centre = {a.name: sum(_mean(by[c], a.name) for c in combos) / len(combos) for a in axes}
    rows = []
    for label in combos:
        parts = Blend.parse(label).names
        row = {"combination": label, "held_out": _is_held_out(parts, held_out)}
        inside = True
        for axis in axes:
            mean, low, high = bootstrap_mean([e[axis.name] for e in by[label]])
            row |= {axis.name: mean, f"{axis.name}_ci_low": low, f"{axis.name}_ci_high": high}
            up = axis.high in parts
            inside &= mean > centre[axis.name] if up else mean < centre[axis.name]
        row["in_quadrant"] = inside
        rows.append(row)
    return rows


def _is_held_out(parts: list[str], held_out: Sequence[str]) -> bool:
    return any(set(Blend.parse(h).names) == set(parts) for h in held_out)


def _alpha_rows(axes: Sequence[Axis], alphas: Sequence[float], by: dict) -> list[dict]:
    rows = []
    for axis in axes:
        means = []
        for alpha in sorted(alphas):
            label = {0: axis.low, 1: axis.high}.get(alpha, f"{axis.name} alpha={alpha:g}")
            entries = by[label]
            means.append(_mean(entries, axis.name))
            row = {"axis": axis.name, "alpha": alpha}
            rows.append(row | {a.name: _mean(entries, a.name) for a in axes})
        rho = spearman(sorted(alphas), means)
        for row in rows[-len(alphas) :]:
            row["spearman"] = rho
    return rows


def _ranks(values: Sequence[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's on average ranks (nan when one is constant)."""
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else float("nan")


def _csv(rows: Sequence[dict]) -> str:
    rounded = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    return summary_csv(rounded, list(rows[0]))


def report_markdown(result: Controllability) -> str:
    """The three tables, as the results docs quote them."""
    first, second = result.axes
    lines = [
        "| axis | controls | high | low | difference [95% CI] | other attribute moved "
        "| crosstalk | passes |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in result.table:
        lines.append(
            f"| {r['axis']} ({r['attribute']}) | {r['controls']} | {r['high_mean']:.3g} | "
            f"{r['low_mean']:.3g} | {r['difference']:+.3g} [{r['ci_low']:+.3g}, "
            f"{r['ci_high']:+.3g}] | {r['other']} {r['other_difference']:+.3g} "
            f"[{r['other_ci_low']:+.3g}, {r['other_ci_high']:+.3g}] | {r['crosstalk']:.2f} | "
            f"{r['passes']} |"
        )
    lines += ["", f"| combination | {first.name} | {second.name} | in its quadrant |"]
    lines.append("|---|---|---|---|")
    for r in result.combinations:
        mark = " (held out)" if r["held_out"] else ""
        cells = [
            f"{r[a.name]:.3g} [{r[f'{a.name}_ci_low']:.3g}, {r[f'{a.name}_ci_high']:.3g}]"
            for a in result.axes
        ]
        lines.append(f"| {r['combination']}{mark} | {' | '.join(cells)} | {r['in_quadrant']} |")
    lines += [
        "",
        f"| axis | alpha | {first.name} | {second.name} | Spearman |",
        "|---|---|---|---|---|",
    ]
    for r in result.alphas:
        lines.append(
            f"| {r['axis']} | {r['alpha']:g} | {r[first.name]:.3g} | {r[second.name]:.3g} | "
            f"{r['spearman']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot_pareto(result: Controllability, path: str | Path, title: str = "") -> Path:
    """One attribute against the other: every combination (with its 95% intervals) and the
    path each axis's alpha steps take."""
    first, second = result.axes
    figure = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for axis, colour in zip(result.axes, ("tab:blue", "tab:orange"), strict=True):
        curve = [r for r in result.alphas if r["axis"] == axis.name]
        ax.plot(
            [r[first.name] for r in curve],
            [r[second.name] for r in curve],
            marker=".",
            color=colour,
            label=f"alpha {min(r['alpha'] for r in curve):g}..{max(r['alpha'] for r in curve):g}"
            f": {axis.low} to {axis.high}",
        )
    for r in result.combinations:
        x, y = r[first.name], r[second.name]
        xerr = [[x - r[f"{first.name}_ci_low"]], [r[f"{first.name}_ci_high"] - x]]
        yerr = [[y - r[f"{second.name}_ci_low"]], [r[f"{second.name}_ci_high"] - y]]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="s", color="black", capsize=3)
        label = r["combination"] + (" (held out)" if r["held_out"] else "")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel(f"{first.name}: {ATTRIBUTES[first.attribute].unit}")
    ax.set_ylabel(f"{second.name}: {ATTRIBUTES[second.attribute].unit}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    figure.tight_layout()
    return save_png(figure, path, dpi=120)


def write_controllability(
    result: Controllability, directory: str | Path, title: str = ""
) -> list[Path]:
    """``answers.jsonl``, ``controllability.csv``, ``combinations.csv``, ``alphas.csv``,
    ``report.md`` and ``pareto.png``, each written whole."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write_jsonl(directory / "answers.jsonl", result.answers),
        write_atomic(directory / "controllability.csv", _csv(result.table)),
        write_atomic(directory / "combinations.csv", _csv(result.combinations)),
        write_atomic(directory / "alphas.csv", _csv(result.alphas)),
        write_atomic(directory / "report.md", report_markdown(result)),
        plot_pareto(result, directory / "pareto.png", title),
    ]
