"""``ctrlalign alpha-sweep``: every prompt at several alphas; answers, CSV and plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctrlalign.cli.flags import (
    add_device_flags,
    add_generation_flags,
    add_prompt_flags,
    generation_config,
    placement,
    read_prompt_rows,
    usage_errors,
)
from ctrlalign.evaluation.judges import judge_usages

#: answers kept as they come, in ``--output``: a killed sweep's rerun answers only the rest
CACHE = "answers.cache.jsonl"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ctrlalign.inference.dial import parse_alphas

    parser = sub.add_parser("alpha-sweep", help="generate at several alphas; CSV and plot")
    parser.add_argument("--run", required=True, help="a CLM run, or a MEET run with --against")
    parser.add_argument(
        "--alphas", required=True, type=usage_errors(parse_alphas), help="e.g. -1,0,0.5,1,2"
    )
    add_prompt_flags(parser)
    parser.add_argument("--output", required=True, help="folder for answers.jsonl, CSV, PNG")
    parser.add_argument(
        "--judge", help=f"score each answer with a judge: {judge_usages(scoring=True)}"
    )
    parser.add_argument(
        "--pairs",
        help="CLM run: KIND:PATH held-out (chosen, rejected) pairs, for the DPO reward margin "
        "at each alpha (margins.csv and a panel of the plot)",
    )
    parser.add_argument("--preference", help="MEET run: the control alpha moves towards")
    parser.add_argument("--against", help="MEET run: the control alpha moves away from")
    add_generation_flags(parser)
    add_device_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ctrlalign.data import DataError, load_preference_data
    from ctrlalign.evaluation import sweep
    from ctrlalign.evaluation.judges import reward_scorer
    from ctrlalign.inference.dial import DialRequest, resolve
    from ctrlalign.inference.serving.engines import offline_engine
    from ctrlalign.model.device import resolve_device
    from ctrlalign.model.rundir import load_run, read_run_info

    rows = read_prompt_rows(args)
    prompts = [row["prompt"] for row in rows]
    references = prompt_references(rows, args)
    info = read_run_info(args.run)
    # the flags checked against run.yaml before the model loads (every alpha alike)
    dial = resolve(info, DialRequest("", args.preference, args.against, args.alphas[0]))
    preference = dial.preference
    pairs = None
    if args.pairs:  # checked before any generation
        if not info.get("clm"):
            raise DataError("--pairs: the reward margin needs a CLM run (its unaligned stream)")
        pairs = load_preference_data(args.pairs)
        if not pairs.pairwise:
            raise DataError(f"--pairs {args.pairs}: not (chosen, rejected) pairs")
    # the reward model scores on the policy's device
    judge = reward_scorer(args.judge, resolve_device(args.device))
    generation = generation_config(args)  # checked before the model loads
    run = load_run(args.run, **placement(args))
    with offline_engine(run, args.run, generation.engine, generation.batch_size) as engine:
        result = sweep.sweep(
            run,
            prompts,
            args.alphas,
            generation,
            preference,
            args.against,
            judge,
            progress=True,
            engine=engine,
            references=references,
            cache=sweep.AnswerCache.for_run(Path(args.output) / CACHE, args.run),
        )
    if pairs is not None:
        result.margins = sweep.margin_sweep(run, pairs, args.alphas, progress=True)
    title = f"{args.run}" + (f": {preference} against {args.against}" if args.against else "")
    for path in sweep.write_sweep(result, args.output, title):
        print(f"wrote {path}")
    fields = sweep.CSV_FIELDS + (sweep.ROUGE_FIELDS if result.has_references else ())
    print(sweep.summary_csv(result.summary, fields), end="")
    if result.margins:
        print(sweep.summary_csv(result.margins, sweep.MARGIN_FIELDS), end="")
    if trends := result.trends():
        print(sweep.summary_csv(trends, sweep.TREND_FIELDS), end="")
    return 0


def prompt_references(rows: list[dict], args: argparse.Namespace) -> list[str] | None:
    """Each row's ``reference`` (ROUGE-L per alpha) when any row has one; then every row
    must, so that every alpha is scored on the same prompts (``--prompt`` texts have none)."""
    from ctrlalign.data import DataError

    references = [row.get("reference") for row in rows]
    if not any(references):
        return None
    if args.prompt:
        raise DataError(
            f"--prompts {args.prompts} has references (ROUGE per alpha), --prompt texts have "
            "none: pass the prompts in the file only"
        )
    missing = [i for i, ref in enumerate(references) if not isinstance(ref, str) or not ref.strip()]
    if missing:
        raise DataError(
            f"--prompts {args.prompts}: {len(missing)} of {len(rows)} prompts have no "
            f"'reference' (the first: prompt {missing[0] + 1} of the file, blank lines not "
            "counted); ROUGE per alpha needs one for every prompt"
        )
    return references
