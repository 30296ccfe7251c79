"""``ctrlalign evaluate``: answer with each run, judge against a baseline, write the report.

``prepare`` checks everything a user can get wrong (a folder that is not a run, an unknown
judge kind, an endpoint nobody answers at, a reward model that cannot load, ROUGE asked of
data without references) before a model is loaded for generation or a file is written, so
a mistake costs seconds and leaves nothing behind. ``run`` then generates (cached per
run and temperature, see ``generations``), judges (cached per answer, see ``judges``) and
writes the tables and plots (``report_writer``). A rerun, after a kill or with one more
temperature, does only the work that is new.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ctrlalign.data.io import output_lock, write_jsonl
from ctrlalign.data.records import Record, judge_prompt
from ctrlalign.evaluation.eval_data import EvalSet, eval_set_apart_from_training
from ctrlalign.evaluation.generations import (
    GenerationSettings,
    GenerationStore,
    RunRef,
    generate_all,
)
from ctrlalign.evaluation.judges import (
    Judge,
    JudgeOptions,
    JudgeSpecError,
    build_judge,
    judge_usages,
)
from ctrlalign.evaluation.judges.attr import AttributeJudge
from ctrlalign.evaluation.judges.llm import TASKS
from ctrlalign.evaluation.report import ReportRow, mean_words
from ctrlalign.evaluation.report_writer import (
    AttributeRow,
    Results,
    RougeRow,
    RunRow,
    ScalingPoint,
    write_report,
)
from ctrlalign.evaluation.rouge import PairedDifference, rouge_for_records
from ctrlalign.evaluation.verdicts import DEFAULT_TIE_BAND, Comparison, WinRate, bootstrap_mean
from ctrlalign.model.device import cpu_description, resolve_device, resolve_dtype
from ctrlalign.training.splits import DataSplit

log = logging.getLogger(__name__)

#: method -> the setting its paper table scales, and the axis name the plots use
SCALING = {
    "meet-prompt": ("soft_prompt_length", "soft-prompt length"),
    "meet-lora": ("lora_rank", "LoRA rank"),
}


#: the prompts an evaluation answered, in order, with their references (``--prompts`` format)
EVAL_PROMPTS = "eval_prompts.jsonl"


class EvaluationSetupError(ValueError):
    """The evaluation cannot run as asked; raised before any work is done."""


@dataclass
class EvalOptions:
    temperatures: list[float] = field(default_factory=lambda: [0.0])
    max_examples: int | None = None
    max_new_tokens: int = 128
    batch_size: int = 8
    seed: int = 0
    #: None: ROUGE exactly when every evaluation prompt has a reference
    rouge: bool | None = None
    tie_band: tuple[float, float] = DEFAULT_TIE_BAND
    #: LLM judge prompt: None picks "summary" for data with references, else "dialogue"
    task: str | None = None
    judge_model: str | None = None
    n_boot: int = 2000
    #: where runs generate and reward models score (``auto``: the first GPU, else the CPU)
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str = "auto"
    #: what decodes the answers: builtin, vllm or auto (``serving.engines``)
    engine: str = "builtin"
    #: True: prompts of the runs' training split are left out, counted in the report (one
    #: file for training and evaluation, as HH-RLHF's); False: such a prompt is an error
    leave_out_trained: bool = True


@dataclass
class Plan:
    """A checked evaluation, ready to run."""

    candidates: list[RunRef]
    baseline: RunRef
    eval_set: EvalSet
    judges: list[Judge]
    options: EvalOptions
    output: Path
    rouge: bool
    task: str
    notes: list[str]

    @property
    def runs(self) -> list[RunRef]:
        return [*self.candidates, self.baseline]


def _check_options(options: EvalOptions) -> None:
    if not options.temperatures:
        raise EvaluationSetupError("no temperatures: pass e.g. --temperatures 0,0.5,1")
    if any(t < 0 for t in options.temperatures):
        raise EvaluationSetupError(f"temperatures must be >= 0, got {options.temperatures}")
    if options.task is not None and options.task not in TASKS:
        raise EvaluationSetupError(f"unknown judge task {options.task!r}; choose from {TASKS}")
    low, high = options.tie_band
    if not 0 <= low <= 0.5 <= high <= 1:
        raise EvaluationSetupError(f"tie band must contain 0.5 within [0, 1], got {low}, {high}")


def _read_runs(runs: Mapping[str, str | Path], baseline: tuple[str, str | Path]) -> list[RunRef]:
    names = [*runs, baseline[0]]
    if not runs:
        raise EvaluationSetupError("no runs to evaluate: pass --runs DIR [DIR ...]")
    if len(set(names)) != len(names):
        raise EvaluationSetupError(f"run names must differ (folder names are used): {names}")
    paths = [Path(p).resolve() for p in runs.values()]
    if Path(baseline[1]).resolve() in paths:
        raise EvaluationSetupError("the baseline is also listed among the runs")
    return [RunRef.read(name, path) for name, path in [*runs.items(), baseline]]


def _training_splits(refs: Sequence[RunRef]) -> list[DataSplit]:
    """How each run split its training data."""
    return [DataSplit.of(r.info) for r in refs if r.info.get("data")]


def prepare(
    runs: Mapping[str, str | Path],
    baseline: tuple[str, str | Path],
    data: str,
    judges: Sequence[str],
    output: str | Path,
    options: EvalOptions | None = None,
) -> Plan:
    """Check every input and build the plan; writes nothing (see the module docstring)."""
    options = options or EvalOptions()
    _check_options(options)
    if not judges:
        raise EvaluationSetupError(f"no judge: pass --judge {judge_usages()} (repeatable)")
    refs = _read_runs(runs, baseline)
    eval_set, notes = eval_set_apart_from_training(
        data, options.max_examples, _training_splits(refs), not options.leave_out_trained
    )
    rouge = eval_set.has_references if options.rouge is None else options.rouge
    if rouge and not eval_set.has_references:
        missing = sum(not r.reference for r in eval_set.records)
        raise EvaluationSetupError(
            f"ROUGE needs a reference for every prompt, but {missing} of "
            f"{len(eval_set.records)} prompts in {data} have none"
        )
    task = options.task or ("summary" if eval_set.has_references else "dialogue")
    cache = Path(output) / "cache"
    try:
        device = str(resolve_device(options.device))
        judge_options = JudgeOptions(task, options.judge_model, options.tie_band, device=device)
        built = [build_judge(spec, cache, judge_options) for spec in judges]
    except JudgeSpecError as err:
        raise EvaluationSetupError(str(err)) from err
    names = [judge.name for judge in built]
    if len(set(names)) != len(names):
        raise EvaluationSetupError(f"judges must differ: {names}")
    for judge in built:
        try:
            judge.check()
        except JudgeSpecError as err:
            raise EvaluationSetupError(str(err)) from err
    return Plan(refs[:-1], refs[-1], eval_set, built, options, Path(output), rouge, task, notes)


def _scaling(runs: Sequence[RunRef]) -> dict[str, ScalingPoint]:
    points = {}
    for run in runs:
        method = run.info.get("method")
        if method in SCALING and run.info.get(SCALING[method][0]) is not None:
            key, axis = SCALING[method]
            stages = "+".join(run.info.get("stages_run") or [])
            points[run.name] = ScalingPoint(f"{method} [{stages}]", axis, float(run.info[key]))
    return points


def _run_row(run: RunRef) -> RunRow:
    m = run.metrics
    steps = "+".join(run.info.get("stages_run") or [])
    return RunRow(
        run.name,
        steps,
        m.get("train_examples"),
        m.get("dropped_too_long_train"),
        run.info.get("compute_dtype"),
        m.get("seconds"),
        m.get("peak_rss_gib"),
        m.get("eval_loss"),
    )


def _setup_lines(plan: Plan) -> list[str]:
    o, e = plan.options, plan.eval_set
    left_out = f" ({e.seen_in_training} training prompts left out)" if e.seen_in_training else ""
    cpu = cpu_description()
    bf16 = f", bf16 units {'/'.join(cpu['bf16_units'])}" if cpu["bf16_units"] else ""
    device = resolve_device(o.device)
    return [
        f"evaluation data: `{e.spec}`, {len(e.records)} prompts{left_out}; the prompts "
        f"answered, with their references: `{EVAL_PROMPTS}`",
        f"machine: {cpu['model']} ({os.cpu_count()} cores{bf16}), torch {torch.__version__}; "
        f"answers decoded on {device} in {str(resolve_dtype(o.dtype, device)).split('.')[-1]}",
        f"runs: {', '.join(f'{r.name} (`{r.path}`)' for r in plan.candidates)}",
        f"baseline: {plan.baseline.name} (`{plan.baseline.path}`)",
        f"temperatures: {', '.join(f'{t:g}' for t in o.temperatures)}; at most "
        f"{o.max_new_tokens} new tokens; seed {o.seed}",
        f"tie band of reward judges: sigmoid(r1 - r2) in [{o.tie_band[0]}, {o.tie_band[1]}]; "
        f"Δ = win % - lose %, 95% bootstrap interval ({o.n_boot} resamples)",
        "Words: mean answer length in words (the paper explains DPO's results by length)",
        *plan.notes,
    ]


#: (run name, temperature) -> that run's answers, in the order of the records
Answers = Mapping[tuple[str, float], Sequence[str]]


def _prompt_row(record: Record) -> dict:
    """An answered prompt as ``--prompts`` files hold it (``alpha-sweep`` on the same posts)."""
    row = {"prompt": record.chat, "source": record.source}
    return row | ({"reference": record.reference} if record.reference else {})


def run(plan: Plan) -> Path:
    """Generate, judge and write the report; returns the path of ``report.md``."""
    o = plan.options
    settings = GenerationSettings(
        o.max_new_tokens,
        o.batch_size,
        o.seed,
        o.device,
        o.dtype,
        o.attn_implementation,
        o.engine,
    )
    store = GenerationStore(plan.output / "generations", settings)
    records = plan.eval_set.records
    write_jsonl(plan.output / EVAL_PROMPTS, [_prompt_row(record) for record in records])
    answers = generate_all(store, plan.runs, o.temperatures, records)
    prompts = [judge_prompt(record) for record in records]
    rows, judge_notes = _win_rate_rows(plan, answers, prompts)
    rouge_rows = _rouge_rows(plan, answers) if plan.rouge else []
    results = Results(
        plan.baseline.name, _setup_lines(plan), rows, rouge_rows, judge_notes, _scaling(plan.runs)
    )
    results.run_rows = [_run_row(run_ref) for run_ref in [plan.baseline, *plan.candidates]]
    results.attribute_rows = _attribute_rows(plan, answers, prompts)
    return write_report(plan.output, results)


def _win_rate_rows(
    plan: Plan, answers: Answers, prompts: Sequence[str]
) -> tuple[list[ReportRow], list[str]]:
    """The win-rate table, one row per judge, temperature and candidate, and the judges'
    notes. Apart from ``run`` because it is the judging step (the one that calls judges,
    and the one that may decide no pair), while ``run`` only orders the steps."""
    o = plan.options
    rows, notes = [], [judge.describe() for judge in plan.judges]
    for judge in plan.judges:
        for temperature in o.temperatures:
            base = answers[plan.baseline.name, temperature]
            for run_ref in plan.candidates:
                mine = answers[run_ref.name, temperature]
                comparisons = [Comparison(*c) for c in zip(prompts, mine, base, strict=True)]
                decisions = judge.judge(comparisons)
                label = f"{judge.name}, {run_ref.name}, t={temperature:g}"
                notes += [f"{label}: {note}" for note in decisions.notes]
                decided = decisions.decided()
                if not decided:
                    notes.append(f"{label}: no pair decided, no row")
                    continue
                rate = WinRate.from_verdicts(decided, n_boot=o.n_boot, seed=o.seed)
                rows.append(
                    ReportRow.from_answers(run_ref.name, judge.name, temperature, rate, mine, base)
                )
    return rows, notes


def _rouge_rows(plan: Plan, answers: Answers) -> list[RougeRow]:
    """The ROUGE table: each run against the references at each temperature, candidates
    paired with the baseline. Apart from ``run`` because it needs no judge: it scores
    answers against references, a step of its own that only some data has."""
    o = plan.options
    records = plan.eval_set.records
    rouge_rows = []
    for temperature in o.temperatures:
        scored = {
            r.name: rouge_for_records(answers[r.name, temperature], records) for r in plan.runs
        }
        base = scored[plan.baseline.name]
        for run_ref in plan.runs:
            texts, scores = answers[run_ref.name, temperature], scored[run_ref.name]
            paired = None
            if run_ref.name != plan.baseline.name:
                paired = PairedDifference.of(
                    scores.rouge_l_each, base.rouge_l_each, o.n_boot, o.seed
                )
            rouge_rows.append(
                RougeRow(run_ref.name, temperature, scores, mean_words(texts), paired)
            )
    return rouge_rows


def _attribute_rows(plan: Plan, answers: Answers, prompts: Sequence[str]) -> list[AttributeRow]:
    """Each attribute judge's mean score of every run's answers (with a bootstrap
    interval). Apart from the win rates because these score answers one at a time, not in
    pairs against the baseline."""
    o = plan.options
    return [
        AttributeRow(
            run_ref.name,
            judge.name,
            temperature,
            *bootstrap_mean(scores, o.n_boot, o.seed),
            len(scores),
        )
        for judge in plan.judges
        if isinstance(judge, AttributeJudge)
        for temperature in o.temperatures
        for run_ref in [plan.baseline, *plan.candidates]
        for scores in [judge.score(prompts, answers[run_ref.name, temperature])]
    ]


def evaluate(
    runs: Mapping[str, str | Path],
    baseline: tuple[str, str | Path],
    data: str,
    judges: Sequence[str],
    output: str | Path,
    options: EvalOptions | None = None,
) -> Path:
    """``prepare`` then ``run``: the whole of ``ctrlalign evaluate``, holding ``output``
    against a second process (``output_lock``) while it writes."""
    plan = prepare(runs, baseline, data, judges, output, options)
    with output_lock(plan.output):
        return run(plan)
