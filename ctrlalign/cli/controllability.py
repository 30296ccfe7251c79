"""``ctrlalign controllability``: each control against its opposite, every combination, and
the alpha curves, measured on two attributes; tables, CSVs and the Pareto plot."""

from __future__ import annotations

import argparse

from ctrlalign.cli.flags import (
    add_device_flags,
    add_generation_flags,
    add_prompt_flags,
    generation_config,
    placement,
    read_prompt_rows,
    usage_errors,
)
from ctrlalign.evaluation.judges import ATTRIBUTES


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ctrlalign.evaluation.controllability import Axis
    from ctrlalign.inference.dial import COMPOSE_MODES, parse_alphas

    parser = sub.add_parser(
        "controllability",
        help="does each control move its own attribute, and only it? (MEET runs)",
    )
    parser.add_argument("--run", required=True, help="a MEET run with both axes' controls")
    parser.add_argument(
        "--axis",
        action="append",
        required=True,
        type=usage_errors(Axis.parse),
        help="NAME:ATTRIBUTE:LOW:HIGH, twice, e.g. length:length:concise:detailed and "
        f"tone:sentiment:neutral:warm (ATTRIBUTE: an attr: judge, {'|'.join(ATTRIBUTES)})",
    )
    parser.add_argument(
        "--alphas",
        type=usage_errors(parse_alphas),
        default=parse_alphas("0,0.5,1,1.5"),
        help="alpha steps from each axis's LOW (0) to its HIGH (1) control",
    )
    parser.add_argument(
        "--compose",
        choices=COMPOSE_MODES,
        default="native",
        help="how the combinations are composed (see generate --compose)",
    )
    parser.add_argument(
        "--held-out",
        action="append",
        default=[],
        help="a combination no training record had, e.g. detailed+warm (marked in the tables)",
    )
    add_prompt_flags(parser)
    parser.add_argument("--output", required=True, help="folder for the tables, CSVs, PNG")
    add_generation_flags(parser)
    add_device_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ctrlalign.evaluation.controllability import (
        check_axes,
        evaluate_controllability,
        report_markdown,
        write_controllability,
    )
    from ctrlalign.inference.dial import DialError
    from ctrlalign.inference.serving.engines import offline_engine
    from ctrlalign.model.rundir import load_run, read_run_info

    axes = check_axes(args.axis)
    prompts = [row["prompt"] for row in read_prompt_rows(args)]
    info = read_run_info(args.run)
    known = info.get("preferences") or []
    missing = [c for a in axes for c in (a.low, a.high) if c not in known]
    if not info.get("control") or missing:
        raise DialError(f"--axis controls {missing} are not among the run's {known}")
    generation = generation_config(args)  # checked before the model loads
    run = load_run(args.run, **placement(args))
    with offline_engine(run, args.run, generation.engine, generation.batch_size) as engine:
        result = evaluate_controllability(
            run,
            prompts,
            axes,
            args.alphas,
            generation,
            args.compose,
            args.held_out,
            progress=True,
            engine=engine,
        )
    for path in write_controllability(result, args.output, args.run):
        print(f"wrote {path}")
    print(report_markdown(result), end="")
    return 0
