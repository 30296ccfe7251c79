"""Every ``--help`` that lists kinds lists every kind of its registry: the text is built
from the registry, so a new judge, method, loss or mode cannot be left out of it."""

from __future__ import annotations

import argparse
import re

import pytest

from ctrlalign.cli import build_parser
from ctrlalign.evaluation.judges import ATTRIBUTES, JUDGES
from ctrlalign.evaluation.judges.llm import TASKS
from ctrlalign.inference.dial import COMPOSE_MODES
from ctrlalign.training.config import CLM_LOSSES, METHODS
from ctrlalign.training.objectives import PAIR_OBJECTIVES

ALL_JUDGES = [f"{kind}:" for kind in JUDGES]
SCORING_JUDGES = [f"{kind}:" for kind, entry in JUDGES.items() if entry.scorer is not None]

LISTS = [
    ("evaluate", "--judge", ALL_JUDGES),
    ("experiment", "--judge", ALL_JUDGES),
    ("alpha-sweep", "--judge", SCORING_JUDGES),
    ("evaluate", "--task", TASKS),
    ("controllability", "--axis", ATTRIBUTES),
    ("controllability", "--compose", COMPOSE_MODES),
    ("generate", "--compose", COMPOSE_MODES),
    ("train", "--method", METHODS),
    ("train", "--loss-type", PAIR_OBJECTIVES),
    ("train", "--clm-loss", CLM_LOSSES),
]


def command_help(command: str) -> str:
    """What ``ctrlalign COMMAND --help`` prints."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command].format_help()


def flag_help(text: str, flag: str) -> str:
    """The block of ``--help`` text that describes ``flag``, up to the next flag, joined
    into one line (argparse wraps at spaces only, and no key has one)."""
    blocks = re.split(r"\n(?=  -)", text)
    block = next(b for b in blocks if re.match(rf"  (-\w, )?{re.escape(flag)}[ ,\n]", b))
    return " ".join(block.split())


@pytest.mark.parametrize(("command", "flag", "keys"), LISTS, ids=[f"{c} {f}" for c, f, _ in LISTS])
def test_help_lists_every_registry_key(command, flag, keys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = flag_help(command_help(command), flag)
    missing = [key for key in keys if key not in text]
    assert not missing, f"ctrlalign {command} --help, {flag}: {missing} missing from {text!r}"


def test_scoring_judges_are_a_proper_subset():
    """``alpha-sweep`` scores single answers: the pairwise-only ``llm:`` is not offered."""
    assert "llm:" in ALL_JUDGES and "llm:" not in SCORING_JUDGES
    assert "llm:" not in flag_help(command_help("alpha-sweep"), "--judge")
