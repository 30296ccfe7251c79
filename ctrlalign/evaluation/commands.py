"""The evaluation commands of the ``ctrlalign`` CLI: ``train-rm``, ``evaluate``, ``experiment``.

Kept out of ``cli.py`` so the evaluation harness owns its flags; ``cli.build_parser`` calls
``add_parsers`` once. Heavy imports happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0,0.5,1, got {text!r}") from None


def _band(text: str) -> tuple[float, float]:
    values = _floats(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH like 0.45,0.55, got {text!r}")
    return values[0], values[1]


def cmd_train_rm(args: argparse.Namespace) -> int:
    from ctrlalign.cli import _train_config
    from ctrlalign.training.reward_model import RewardModelConfig, train_reward_model

    folder = train_reward_model(_train_config(args, RewardModelConfig))
    metrics = json.loads((folder / "metrics.json").read_text())
    print(f"reward model saved to {folder}")
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2))
    return 0


def _eval_options(args: argparse.Namespace):
    from ctrlalign.evaluation.runner import EvalOptions

    return EvalOptions(
        temperatures=args.temperatures,
        max_examples=args.max_examples,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        rouge=args.rouge,
        tie_band=args.tie_band,
        task=args.task,
        judge_model=args.judge_model,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ctrlalign.evaluation.runner import evaluate

    runs = {Path(path).name: path for path in args.runs}
    if len(runs) != len(args.runs):
        raise ValueError(f"two --runs folders share a name: {args.runs}")
    baseline = (Path(args.baseline).name, args.baseline)
    report = evaluate(runs, baseline, args.data, args.judge, args.output, _eval_options(args))
    print(f"report written to {report}")
    print(report.read_text())
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from ctrlalign.evaluation.experiment import run_experiment

    report = run_experiment(
        args.file, args.output, scale=args.scale, judges=args.judge, judge_model=args.judge_model
    )
    print(f"report written to {report}")
    print(report.read_text())
    return 0


def _add_eval_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--judge-model", help="model name sent to an llm: judge")
    parser.add_argument("--temperatures", type=_floats, default=[0.0], help="e.g. 0,0.5,1")
    parser.add_argument("--max-examples", type=int, help="evaluate the first N prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rouge",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ROUGE against references (default: when every prompt has one)",
    )
    parser.add_argument("--tie-band", type=_band, default=(0.45, 0.55), help="LOW,HIGH")
    parser.add_argument(
        "--task",
        choices=["summary", "dialogue"],
        help="LLM judge prompt (default: summary when the data has references)",
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``train-rm``, ``evaluate`` and ``experiment`` on the CLI's subparsers."""
    from ctrlalign.cli import _add_config_flags
    from ctrlalign.training.rm_config import RewardModelConfig

    train_rm = sub.add_parser("train-rm", help="train a Bradley-Terry reward model (a judge)")
    train_rm.add_argument("--config", help="YAML file with the same keys as the flags")
    _add_config_flags(train_rm, RewardModelConfig)
    train_rm.set_defaults(func=cmd_train_rm)

    evaluate = sub.add_parser("evaluate", help="win rates of runs against a baseline")
    evaluate.add_argument("--runs", nargs="+", required=True, help="run directories to judge")
    evaluate.add_argument("--baseline", required=True, help="run directory to compare against")
    evaluate.add_argument("--data", required=True, help="evaluation prompts, KIND:PATH")
    evaluate.add_argument(
        "--judge", action="append", required=True, help="rm:DIR_OR_HF_ID or llm:URL (repeatable)"
    )
    evaluate.add_argument("--output", required=True, help="report folder (caches live here)")
    _add_eval_flags(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    experiment = sub.add_parser("experiment", help="train, generate, judge and report from YAML")
    experiment.add_argument("file", help="experiment YAML, e.g. experiments/paper_table2_hh.yaml")
    experiment.add_argument("--output", required=True, help="folder for runs, caches and report")
    experiment.add_argument("--scale", help="a scale named in the YAML's `scales`, e.g. small")
    experiment.add_argument("--judge", action="append", help="replace the YAML's judges")
    experiment.add_argument("--judge-model", help="model name sent to an llm: judge")
    experiment.set_defaults(func=cmd_experiment)
