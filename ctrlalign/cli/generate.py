"""``ctrlalign generate``: answer prompts with a run, each line through the dial."""

from __future__ import annotations

import argparse
import json
import logging
import time

from ctrlalign.cli.flags import (
    add_device_flags,
    add_generation_flags,
    add_prompt_flags,
    generation_config,
    placement,
    read_prompt_rows,
    usage_errors,
)

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ctrlalign.inference.dial import COMPOSE_MODES, parse_alpha

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
        choices=COMPOSE_MODES,
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
    from ctrlalign.inference.dial import DialRequest, dial_row, resolve
    from ctrlalign.inference.generation import generate_rows
    from ctrlalign.inference.serving.engines import offline_engine
    from ctrlalign.model.controls import Blend
    from ctrlalign.model.rundir import load_run, read_run_info

    prompts = read_prompt_rows(args)
    info = read_run_info(args.run)
    # every line checked against run.yaml before the model loads
    dials = [
        resolve(
            info,
            DialRequest(
                p["prompt"],
                p.get("preference", args.preference),
                args.against,
                p.get("alpha", args.alpha),
                compose=args.compose,
            ),
        )
        for p in prompts
    ]
    generation = generation_config(args)  # checked before the model loads
    run = load_run(args.run, **placement(args))
    rows = [dial_row(run, dial) for dial in dials]
    with offline_engine(run, args.run, generation.engine, generation.batch_size) as engine:
        start = time.perf_counter()
        answers = generate_rows(run.model, run.tokenizer, rows, generation, True, engine)
        seconds = time.perf_counter() - start
    tokens = sum(len(run.tokenizer(a, add_special_tokens=False).input_ids) for a in answers)
    # the decoding alone (no model load), what a throughput comparison should read; tokens:
    # the answers' texts tokenized again (stop tokens not counted)
    log.info(
        "generated %d answers (%d tokens) in %.2f s: %.1f tokens/s",
        len(answers),
        tokens,
        seconds,
        tokens / seconds,
    )
    dialled = info.get("clm") or any(d.alpha is not None for d in dials)
    out = []
    for dial, answer in zip(dials, answers, strict=True):
        line = {"prompt": dial.request.prompt, "preference": dial.label, "response": answer}
        if isinstance(dial.preference, Blend):
            line["compose"] = args.compose
        if dialled:
            line.update(alpha=1.0 if dial.alpha is None else dial.alpha, against=args.against)
        out.append(line)
    if args.output:
        write_jsonl(args.output, out)
        print(f"wrote {len(out)} answers to {args.output}")
    else:
        for line in out:
            print(json.dumps(line, ensure_ascii=False))
    return 0
