"""Flag builders every command shares: flags generated from a config dataclass, value
parsers that turn bad input into usage errors naming the flag, and the generation flags.

Config flags come from the dataclass fields (help from each field's ``metadata``), so
``--config FILE.yaml`` and the flags always accept the same keys; flags given on the
command line override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable


def parse_mapping(text: str) -> dict[str, str]:
    """``key=value,key=value`` (values may contain spaces, not commas)."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() for p in pairs):
        raise argparse.ArgumentTypeError(f"expected key=value,key=value, got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def parse_list(text: str) -> list[str]:
    """``a,b,c``; empty items are dropped."""
    return [x.strip() for x in text.split(",") if x.strip()]


def _value_type(hint: object) -> object:
    """``X | None`` -> ``X``; any other hint as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        return arms[0] if len(arms) == 1 else hint
    return hint


def _field_flag(config_cls: type, f: dataclasses.Field, hint: object) -> dict:
    """argparse keywords for one dataclass field: typed by its hint, its help text, and
    its ``choices`` when the field's metadata names them (from a registry)."""
    value = _value_type(hint)
    # argparse %-formats help texts: a field's "30%" must stay a percent sign
    kwargs: dict = {"dest": f.name, "help": (f.metadata.get("help") or "").replace("%", "%%")}
    if "choices" in f.metadata:
        kwargs["choices"] = list(f.metadata["choices"])
    if value is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(value) is list:
        kwargs["type"] = parse_list
    elif typing.get_origin(value) is dict:
        kwargs["type"] = parse_mapping
        kwargs["metavar"] = "KEY=VALUE,..."
    elif value is float:
        kwargs["type"] = finite_float
    elif value in (int, str):
        kwargs["type"] = value
    else:
        raise TypeError(f"{config_cls.__name__}.{f.name}: no flag parser for {value}")
    return kwargs


def add_fields_flags(
    parser: argparse.ArgumentParser, config_cls: type, skip: tuple[str, ...] = ()
) -> None:
    """One ``--flag`` per field of ``config_cls`` (but ``skip``), defaulting to the field's
    default; ``fields_config`` reads them back."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        kwargs = _field_flag(config_cls, f, hints[f.name])
        if f.default_factory is not dataclasses.MISSING:
            kwargs["default"] = f.default_factory()
        elif f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        else:
            kwargs["required"] = True
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def fields_config(args: argparse.Namespace, config_cls: type, **values: object):
    """``config_cls`` from the flags ``add_fields_flags`` made (plus ``values``)."""
    names = [f.name for f in dataclasses.fields(config_cls) if hasattr(args, f.name)]
    return config_cls(**{name: getattr(args, name) for name in names}, **values)


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """``--config FILE.yaml`` and one ``--flag`` per field of ``config_cls``, typed by its
    hint, with its help text (``config_from_args`` reads both)."""
    parser.add_argument("--config", help="YAML file with the same keys as the flags")
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        kwargs = _field_flag(config_cls, f, hints[f.name])
        kwargs["default"] = argparse.SUPPRESS
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def config_from_args(args: argparse.Namespace, config_cls: type):
    """The config a command runs with: ``--config`` file values, then the flags given."""
    values = {}
    if args.config:
        values = config_cls.from_yaml(args.config).to_dict()
    for f in dataclasses.fields(config_cls):
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return config_cls.from_dict(values)


def usage_errors(parse: Callable[[str], object]) -> Callable[[str], object]:
    """Make a parser's ``ValueError`` an argparse usage error (exit 2, naming the flag)."""

    def parser(text: str) -> object:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parser.__name__ = parse.__name__
    return parser


def finite_float(text: str) -> float:
    """A number; ``nan`` and ``inf``, which ``float`` accepts, are usage errors too."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def parse_floats(text: str) -> list[float]:
    try:
        return [finite_float(x) for x in text.split(",") if x.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0,0.5,1, got {text!r}") from None


def parse_band(text: str) -> tuple[float, float]:
    values = parse_floats(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH like 0.45,0.55, got {text!r}")
    return values[0], values[1]


def add_generation_flags(parser: argparse.ArgumentParser) -> None:
    """Decoding flags shared by ``generate`` and ``alpha-sweep``: one per field of
    ``GenerationConfig`` (stop ids come from the model)."""
    from ctrlalign.inference.generation import GenerationConfig

    add_fields_flags(parser, GenerationConfig, skip=("stop_ids",))


def generation_config(args: argparse.Namespace):
    from ctrlalign.inference.generation import GenerationConfig

    return fields_config(args, GenerationConfig)


def add_device_flags(parser: argparse.ArgumentParser) -> None:
    """Where the model runs: the same three flags on every command that loads a run."""
    parser.add_argument(
        "--device", default="auto", help="auto (first GPU, else MPS, else CPU), cpu, cuda:N, mps"
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights' precision; auto: bf16 on a GPU that has it, else fp32",
    )
    parser.add_argument(
        "--attn-implementation",
        default="auto",
        choices=["auto", "eager", "sdpa", "flash_attention_2"],
        help="auto: FlashAttention-2 on CUDA when installed, else SDPA",
    )


def placement(args: argparse.Namespace) -> dict[str, str]:
    """The device flags as ``load_run`` keywords."""
    return {
        "device": args.device,
        "dtype": args.dtype,
        "attn_implementation": args.attn_implementation,
    }


def add_prompt_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    parser.add_argument(
        "--prompts", help="JSONL with `prompt` and optional `preference`, `alpha` per line"
    )


def read_prompt_rows(args: argparse.Namespace) -> list[dict]:
    """``--prompt`` texts, then the ``--prompts`` file's rows; none at all is an error."""
    from ctrlalign.data import DataError
    from ctrlalign.data.io import read_prompts

    if not args.prompt and not args.prompts:
        raise DataError("nothing to answer: pass --prompt TEXT or --prompts FILE.jsonl")
    rows = [{"prompt": p} for p in args.prompt or []]
    if args.prompts:
        rows += read_prompts(args.prompts)
    return rows
