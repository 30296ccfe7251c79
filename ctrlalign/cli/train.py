"""``ctrlalign train``: a method into a run directory (flags from ``TrainConfig``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ctrlalign.cli.flags import add_config_flags, config_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ctrlalign.training.config import TrainConfig

    parser = sub.add_parser("train", help="train a method into a run directory")
    add_config_flags(parser, TrainConfig)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ctrlalign.training import TrainConfig, train_any
    from ctrlalign.training.distributed import is_main_process

    run_dir = train_any(config_from_args(args, TrainConfig))
    if not is_main_process():  # the main process writes the run and reports it
        return 0
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    print(f"run saved to {run_dir}")
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2))
    return 0
