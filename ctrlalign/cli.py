"""The ``ctrlalign`` command line: train, generate (and the commands later modules add).

Training flags are generated from ``TrainConfig`` so that ``--config FILE.yaml`` and the
flags always accept the same keys; flags given on the command line override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path

from ctrlalign.data.records import DataError

HELP = {
    "data": "KIND:PATH, e.g. hh-rlhf:data.jsonl.gz, pairwise:x.jsonl, scores:x.jsonl, hf:ID",
    "output": "run directory to create (or resume)",
    "method": "coh, special-token, meet-prompt, meet-lora, meet-token, sft, dpo, clm",
    "model": "Hugging Face id, local folder, smollm2 (default, offline) or tiny",
    "stages": "first (controls only), second (LM + controls) or both (MEET)",
    "preferences": "comma-separated preferences to train (default: all in the data)",
    "prompt_texts": "hand-written prompt per preference: good='A good answer',bad=...",
}


def _parse_mapping(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split(",") if item]
    if any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected key=value,... got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def _add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        kwargs: dict = {"dest": f.name, "default": argparse.SUPPRESS, "help": HELP.get(f.name)}
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is list:
            kwargs["type"] = lambda s: [x.strip() for x in s.split(",") if x.strip()]
        elif typing.get_origin(base) is dict:
            kwargs["type"] = _parse_mapping
        elif base in (int, float, str):
            kwargs["type"] = base
        parser.add_argument(flag, **kwargs)


def _train_config(args: argparse.Namespace, config_cls):
    values = {}
    if args.config:
        values = config_cls.from_yaml(args.config).to_dict()
    for f in dataclasses.fields(config_cls):
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return config_cls.from_dict(values)


def cmd_train(args: argparse.Namespace) -> int:
    from ctrlalign.training import train_any
    from ctrlalign.training.config import TrainConfig

    config = _train_config(args, TrainConfig)
    run_dir = train_any(config)
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    print(f"run saved to {run_dir}")
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ctrlalign.generation import GenerationConfig, generate
    from ctrlalign.io import read_prompts, write_jsonl
    from ctrlalign.rundir import load_run

    if not args.prompt and not args.prompts:
        raise DataError("nothing to answer: pass --prompt TEXT or --prompts FILE.jsonl")
    rows = [{"prompt": p} for p in args.prompt or []]
    if args.prompts:
        rows += read_prompts(args.prompts)
    run = load_run(args.run)
    if args.preference is None and run.model.control is not None:
        args.preference = run.info.get("chosen") or run.preferences[0]
    for row in rows:
        row.setdefault("preference", args.preference)
        if row["preference"] is not None and run.model.control is not None:
            run.model.control.index(row["preference"])
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    prefs = [r["preference"] for r in rows] if run.model.control is not None else None
    answers = generate(
        run.model, run.tokenizer, [r["prompt"] for r in rows], prefs, config, progress=True
    )
    out = [
        {"prompt": r["prompt"], "preference": r["preference"], "response": a}
        for r, a in zip(rows, answers, strict=True)
    ]
    if args.output:
        write_jsonl(args.output, out)
        print(f"wrote {len(out)} answers to {args.output}")
    else:
        for row in out:
            print(json.dumps(row, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ctrlalign.training.config import TrainConfig

    parser = argparse.ArgumentParser(prog="ctrlalign", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a method into a run directory")
    train.add_argument("--config", help="YAML file with the same keys as the flags")
    _add_config_flags(train, TrainConfig)
    train.set_defaults(func=cmd_train)

    gen = sub.add_parser("generate", help="answer prompts with a trained run")
    gen.add_argument("--run", required=True, help="run directory made by `ctrlalign train`")
    gen.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    gen.add_argument("--prompts", help="JSONL with `prompt` and optional `preference` per line")
    gen.add_argument("--preference", help="preference for every prompt without its own")
    gen.add_argument("--output", help="JSONL to write (default: print)")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--batch-size", type=int, default=8)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    try:
        return args.func(args)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"ctrlalign {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
