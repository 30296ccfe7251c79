"""``ctrlalign evaluate``: win rates (and ROUGE) of runs against a baseline run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctrlalign.cli.flags import add_device_flags, parse_band, parse_floats, placement
from ctrlalign.evaluation.judges import judge_usages
from ctrlalign.evaluation.judges.llm import TASKS
from ctrlalign.inference.serving.engines import ENGINE_CHOICES


def add_eval_flags(parser: argparse.ArgumentParser) -> None:
    """Generation and judging settings, shared with ``experiment``'s YAML keys."""
    parser.add_argument("--judge-model", help="model name sent to an llm: judge")
    parser.add_argument("--temperatures", type=parse_floats, default=[0.0], help="e.g. 0,0.5,1")
    parser.add_argument("--max-examples", type=int, help="evaluate the first N prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="cap on new tokens")
    parser.add_argument("--batch-size", type=int, default=8, help="rows decoded together")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument(
        "--engine",
        choices=ENGINE_CHOICES,
        default="builtin",
        help="what decodes the answers: builtin, vllm (vLLM over each run exported to RUN/vllm; "
        "needs `make serve-env`), auto (vllm on a GPU where it is installed)",
    )
    parser.add_argument(
        "--rouge",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ROUGE against references (default: when every prompt has one)",
    )
    parser.add_argument("--tie-band", type=parse_band, default=(0.45, 0.55), help="LOW,HIGH")
    parser.add_argument(
        "--task",
        choices=TASKS,
        help="LLM judge prompt (default: summary when the data has references)",
    )
    add_device_flags(parser)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="win rates of runs against a baseline")
    parser.add_argument("--runs", nargs="+", required=True, help="run directories to judge")
    parser.add_argument("--baseline", required=True, help="run directory to compare against")
    parser.add_argument("--data", required=True, help="evaluation prompts, KIND:PATH")
    parser.add_argument(
        "--judge", action="append", required=True, help=f"{judge_usages()} (repeatable)"
    )
    parser.add_argument("--output", required=True, help="report folder (caches live here)")
    add_eval_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ctrlalign.evaluation.runner import EvalOptions, evaluate

    runs = {Path(path).name: path for path in args.runs}
    if len(runs) != len(args.runs):
        raise ValueError(f"two --runs folders share a name: {args.runs}")
    baseline = (Path(args.baseline).name, args.baseline)
    options = EvalOptions(
        temperatures=args.temperatures,
        max_examples=args.max_examples,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        rouge=args.rouge,
        tie_band=args.tie_band,
        task=args.task,
        judge_model=args.judge_model,
        engine=args.engine,
        **placement(args),
    )
    report = evaluate(runs, baseline, args.data, args.judge, args.output, options)
    print(f"report written to {report}")
    print(report.read_text())
    return 0
