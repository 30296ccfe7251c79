"""``ctrlalign export``: a run as a plain Hugging Face folder plus PEFT adapters (vLLM)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="write a run as a plain Hugging Face model folder and one PEFT adapter folder per "
        "LoRA preference, for vLLM or plain transformers + peft",
    )
    parser.add_argument("--run", required=True, help="run directory made by `ctrlalign train`")
    parser.add_argument("--output", required=True, help="folder to create (must not exist)")
    parser.add_argument(
        "--name", help="model name in the printed vllm command (default: the output's name)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ctrlalign.inference.export import export_run
    from ctrlalign.model.rundir import load_run, read_run_info

    read_run_info(args.run)
    manifest = export_run(load_run(args.run), args.output, args.name)
    print(f"exported {args.run} to {args.output}")
    for pref, entry in manifest["preferences"].items():
        print(f"  {pref}: {entry}")
    print(manifest["vllm"])
    return 0
