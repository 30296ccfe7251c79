"""``ctrlalign train-rm``: a Bradley-Terry reward model, to use as an ``rm:`` judge."""

from __future__ import annotations

import argparse
import json

from ctrlalign.cli.flags import add_config_flags, config_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ctrlalign.training.config import RewardModelConfig

    parser = sub.add_parser("train-rm", help="train a Bradley-Terry reward model (a judge)")
    add_config_flags(parser, RewardModelConfig)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ctrlalign.training.config import RewardModelConfig
    from ctrlalign.training.reward_model import train_reward_model

    folder = train_reward_model(config_from_args(args, RewardModelConfig))
    metrics = json.loads((folder / "metrics.json").read_text())
    print(f"reward model saved to {folder}")
    shown = {k: v for k, v in metrics.items() if not isinstance(v, dict | list)}
    print(json.dumps(shown, indent=2))
    return 0
