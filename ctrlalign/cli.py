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
    "max_eval_examples": "held-out examples scored for eval_loss (default 256)",
    "data": "KIND:PATH, e.g. hh-rlhf:data.jsonl.gz, pairwise:x.jsonl, scores:x.jsonl, hf:ID",
    "output": "run directory to create (or resume)",
    "method": "coh, special-token, meet-prompt, meet-lora, meet-token, sft, dpo, clm",
    "model": "Hugging Face id, local folder, smollm2 (default, offline) or tiny",
    "stages": "first (controls only), second (LM + controls) or both (MEET)",
    "preferences": "comma-separated preferences to train (default: all in the data)",
    "prompt_texts": "hand-written prompt per preference: good='A good answer',bad=...",
    "beta": "dpo/clm: KL strength (tau for IPO), default 0.1",
    "loss_type": "dpo/clm: sigmoid (DPO) or ipo",
    "label_smoothing": "dpo/clm: label flip probability in [0, 0.5) (conservative DPO)",
    "use_lora": "dpo: train a LoRA adapter of --lora-rank instead of every weight",
    "clm_loss": "clm: train the identity layer with dpo (default) or lm (chosen responses)",
    "lr_second": "learning rate of the second (or only: sft, dpo, clm) training step",
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


def _alpha_arg(text: str) -> float:
    from ctrlalign.alpha import parse_alpha

    try:
        return parse_alpha(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _alphas_arg(text: str) -> list[float]:
    from ctrlalign.alpha import parse_alphas

    try:
        return parse_alphas(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_generate(args: argparse.Namespace) -> int:
    from ctrlalign.alpha import check_dial, dial_rows
    from ctrlalign.generation import GenerationConfig, generate, generate_rows
    from ctrlalign.io import read_prompts, write_jsonl
    from ctrlalign.rundir import default_preference, load_run, read_run_info

    if not args.prompt and not args.prompts:
        raise DataError("nothing to answer: pass --prompt TEXT or --prompts FILE.jsonl")
    rows = [{"prompt": p} for p in args.prompt or []]
    if args.prompts:
        rows += read_prompts(args.prompts)
    info = read_run_info(args.run)
    check_dial(info, args.alpha, args.preference, args.against)
    dial = args.alpha is not None or info.get("clm") or any("alpha" in r for r in rows)
    run = load_run(args.run)
    if args.preference is None:
        args.preference = default_preference(run.info)
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
    if dial:
        dialled = dial_rows(run, rows, args.alpha, args.preference, args.against)
        answers = generate_rows(run.model, run.tokenizer, dialled, config, progress=True)
    else:
        answers = generate(
            run.model, run.tokenizer, [r["prompt"] for r in rows], prefs, config, progress=True
        )
    out = [
        {"prompt": r["prompt"], "preference": r["preference"], "response": a}
        for r, a in zip(rows, answers, strict=True)
    ]
    if dial:
        for row, r in zip(out, rows, strict=True):
            alpha = r.get("alpha", args.alpha)
            row.update(alpha=1.0 if alpha is None else float(alpha), against=args.against)
    if args.output:
        write_jsonl(args.output, out)
        print(f"wrote {len(out)} answers to {args.output}")
    else:
        for row in out:
            print(json.dumps(row, ensure_ascii=False))
    return 0


def cmd_alpha_sweep(args: argparse.Namespace) -> int:
    from ctrlalign import alpha as dial
    from ctrlalign.generation import GenerationConfig
    from ctrlalign.io import read_prompts
    from ctrlalign.rundir import default_preference, load_run, read_run_info

    if not args.prompt and not args.prompts:
        raise DataError("nothing to answer: pass --prompt TEXT or --prompts FILE.jsonl")
    prompts = list(args.prompt or [])
    if args.prompts:
        prompts += [r["prompt"] for r in read_prompts(args.prompts)]
    info = read_run_info(args.run)
    preference = args.preference if args.preference is not None else default_preference(info)
    dial.check_dial(info, args.alphas[0], preference, args.against)
    judge = dial.load_judge(args.judge)
    run = load_run(args.run)
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    result = dial.sweep(
        run, prompts, args.alphas, config, preference, args.against, judge, progress=True
    )
    title = f"{args.run}" + (f": {preference} against {args.against}" if args.against else "")
    for path in dial.write_sweep(result, args.output, title):
        print(f"wrote {path}")
    print(dial.summary_csv(result.summary), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ctrlalign.rundir import load_run, read_run_info
    from ctrlalign.serving import Service, make_server

    read_run_info(args.run)
    if args.max_batch_size < 1 or args.max_new_tokens < 1 or args.batch_wait_ms < 0:
        raise ValueError("--max-batch-size and --max-new-tokens must be >= 1, --batch-wait-ms >= 0")
    run = load_run(args.run)
    name = args.name or Path(args.run).resolve().name
    service = Service(
        run, name, args.max_new_tokens, args.max_batch_size, args.batch_wait_ms / 1000
    )
    server = make_server(service, args.host, args.port)
    host, port = server.server_address[:2]
    prefs = ", ".join(run.preferences) or "none"
    print(f"serving {name} on http://{host}:{port}/v1 (preferences: {prefs})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.batcher.close()
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
    gen.add_argument(
        "--alpha",
        type=_alpha_arg,
        help="alignment dial: CLM run (0 = base, 1 = aligned, >1 extrapolates), or with "
        "--against on a MEET run; a prompts line may carry its own `alpha`",
    )
    gen.add_argument("--against", help="MEET run: the control --alpha moves away from")
    gen.set_defaults(func=cmd_generate)

    sweep = sub.add_parser("alpha-sweep", help="generate at several alphas; CSV and plot")
    sweep.add_argument("--run", required=True, help="a CLM run, or a MEET run with --against")
    sweep.add_argument("--alphas", required=True, type=_alphas_arg, help="e.g. -1,0,0.5,1,2")
    sweep.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    sweep.add_argument("--prompts", help="JSONL with a `prompt` per line")
    sweep.add_argument("--output", required=True, help="folder for answers.jsonl, CSV, PNG")
    sweep.add_argument("--judge", help="rm:ID_OR_DIR to score answers with a reward model")
    sweep.add_argument("--preference", help="MEET run: the control alpha moves towards")
    sweep.add_argument("--against", help="MEET run: the control alpha moves away from")
    sweep.add_argument("--max-new-tokens", type=int, default=128)
    sweep.add_argument("--temperature", type=float, default=0.0)
    sweep.add_argument("--top-p", type=float, default=1.0)
    sweep.add_argument("--batch-size", type=int, default=8)
    sweep.add_argument("--seed", type=int, default=0)
    sweep.set_defaults(func=cmd_alpha_sweep)

    serve = sub.add_parser(
        "serve", help="serve a run over OpenAI-compatible HTTP, preference and alpha per request"
    )
    serve.add_argument("--run", required=True, help="run directory made by `ctrlalign train`")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--name", help="model name in responses (default: the run's folder name)")
    serve.add_argument("--max-new-tokens", type=int, default=512, help="cap on max_tokens")
    serve.add_argument("--max-batch-size", type=int, default=16)
    serve.add_argument(
        "--batch-wait-ms",
        type=float,
        default=20.0,
        help="how long a batch waits for more requests before it starts",
    )
    serve.set_defaults(func=cmd_serve)

    from ctrlalign.evaluation.commands import add_parsers

    add_parsers(sub)
    return parser


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
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"ctrlalign {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
