"""The ``ctrlalign`` command line: one module per command, shared flags in ``flags``.

Each command module has ``add_parser(sub)`` and ``run(args)``; ``COMMANDS`` lists them in
the order ``--help`` shows. Heavy imports happen inside ``run`` (building ``train``'s flags
reads its config dataclass), so a command loads only what it uses.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ctrlalign.cli import (
    alpha_sweep,
    controllability,
    evaluate,
    experiment,
    export,
    generate,
    serve,
    train,
    train_rm,
)
from ctrlalign.data.io import OutputLocked
from ctrlalign.data.records import DataError

COMMANDS = (
    train,
    generate,
    alpha_sweep,
    controllability,
    serve,
    export,
    train_rm,
    evaluate,
    experiment,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctrlalign", description="Controllable alignment of language models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


#: exit status per error kind, first match wins: bad input is a usage error (2), another
#: process holding the output 3, any other OS error (a full disk, a lost mount: what was
#: written before stays whole) 1
EXIT_CODES = (
    ((DataError, ValueError, FileNotFoundError), 2),
    (OutputLocked, 3),
    (OSError, 1),
)


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``--alphas -1,0,1``: argparse reads a value like ``-1,0,1`` as an unknown flag."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--alpha", "--alphas") and arg.startswith("-"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = _attach_negative_values(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    try:
        return args.func(args)
    except (DataError, ValueError, FileNotFoundError, OutputLocked, OSError) as err:
        code = next(code for kinds, code in EXIT_CODES if isinstance(err, kinds))
        if code == 1 and args.verbose:
            raise
        print(f"ctrlalign {args.command}: error: {err}", file=sys.stderr)
        return code
