"""``ctrlalign generate``: answer prompts with a run, each line through the dial."""

from __future__ import annotations

import argparse
import json

from ctrlalign.cli.flags import (
    add_device_flags,
    add_generation_flags,
    add_prompt_flags,
    generation_config,
    placement,
    read_prompt_rows,
    usage_errors,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ctrlalign.inference.dial import parse_alpha

    parser = sub.add_parser("generate", help="answer prompts with a trained run")
    parser.add_argument("--run", required=True, help="run directory made by `ctrlalign train`")
    add_prompt_flags(parser)
    parser.add_argument(
        "--preference",
        help="preference for every prompt without its own; several at once as a blend, "
        "e.g. concise+warm or concise=1+warm=0.5",
    )
    parser.add_argument(
        "--compose",
        choices=["native", "logits"],
        default="native",
        help="how a blend is composed: native (prompts and tokens one after another, LoRA "
        "deltas summed with the weights) or logits (one stream per preference, logits mixed "
        "with the weights scaled to sum to 1; any control kind)",
    )
    parser.add_argument("--output", help="JSONL to write (default: print)")
    add_generation_flags(parser)
    add_device_flags(parser)
    parser.add_argument(
        "--alpha",
        type=usage_errors(parse_alpha),
        help="alignment dial: CLM run (0 = base, 1 = aligned, >1 extrapolates), or with "
        "--against on a MEET run; a prompts line may carry its own `alpha`",
    )
    parser.add_argument("--against", help="MEET run: the control --alpha moves away from")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ctrlalign.data.io import write_jsonl
    from ctrlalign.inference.dial import DialRequest, check_dial, dial_row, parse_preference
    from ctrlalign.inference.generation import generate_rows
    from ctrlalign.model.controls import Blend
    from ctrlalign.model.rundir import default_preference, load_run, read_run_info

    prompts = read_prompt_rows(args)
    info = read_run_info(args.run)
    check_dial(info, args.alpha, args.preference or default_preference(info), args.against)
    run = load_run(args.run, **placement(args))
    requests = [
        DialRequest(
            p["prompt"],
            p.get("preference", args.preference),
            args.against,
            p.get("alpha", args.alpha),
            compose=args.compose,
        )
        for p in prompts
    ]
    rows = [dial_row(run, request) for request in requests]
    answers = generate_rows(run.model, run.tokenizer, rows, generation_config(args), progress=True)
    dial = args.alpha is not None or info.get("clm") or any("alpha" in p for p in prompts)
    out = []
    for request, answer in zip(requests, answers, strict=True):
        preference = request.preference
        if preference is None:
            preference = default_preference(info)
        line = {"prompt": request.prompt, "preference": preference, "response": answer}
        if isinstance(parse_preference(preference, run.preferences), Blend):
            line["compose"] = args.compose
        if dial:
            alpha = 1.0 if request.alpha is None else float(request.alpha)
            line.update(alpha=alpha, against=args.against)
        out.append(line)
    if args.output:
        write_jsonl(args.output, out)
        print(f"wrote {len(out)} answers to {args.output}")
    else:
        for line in out:
            print(json.dumps(line, ensure_ascii=False))
    return 0
