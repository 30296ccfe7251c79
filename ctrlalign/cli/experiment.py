"""``ctrlalign experiment``: train what is missing, then generate, judge and report, from YAML."""

from __future__ import annotations

import argparse

from ctrlalign.cli.flags import add_device_flags, placement
from ctrlalign.evaluation.judges import judge_usages
from ctrlalign.inference.serving.engines import ENGINE_CHOICES


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("experiment", help="train, generate, judge and report from YAML")
    parser.add_argument("file", help="experiment YAML, e.g. experiments/paper_table2_hh.yaml")
    parser.add_argument("--output", required=True, help="folder for runs, caches and report")
    parser.add_argument("--scale", help="a scale named in the YAML's `scales`, e.g. small")
    parser.add_argument(
        "--judge",
        action="append",
        help=f"replace the YAML's judges: {judge_usages()} or rm:trained (repeatable)",
    )
    parser.add_argument("--judge-model", help="model name sent to an llm: judge")
    parser.add_argument(
        "--eval-data",
        help="evaluation prompts (KIND:PATH, e.g. prompts:posts.jsonl) in place of the file's "
        "data.eval; checked before any training: it must exist, hold references when ROUGE "
        "is asked for, and share no prompt with the runs' training data",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINE_CHOICES,
        help="what decodes the answers (the file's evaluation.engine, default builtin): "
        "builtin, vllm (needs `make serve-env`), auto",
    )
    add_device_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ctrlalign.experiment import run_experiment

    report = run_experiment(
        args.file,
        args.output,
        scale=args.scale,
        judges=args.judge,
        judge_model=args.judge_model,
        placement=placement(args),
        engine=args.engine,
        eval_data=args.eval_data,
    )
    print(f"report written to {report}")
    print(report.read_text())
    return 0
