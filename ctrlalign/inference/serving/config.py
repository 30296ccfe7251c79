"""``ServeConfig``: the server's settings, help beside each field; ``ctrlalign serve``
builds one flag per field."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ctrlalign.inference.engine import SCHEDULERS
from ctrlalign.inference.serving.engines import ENGINE_CHOICES

API_KEY_ENV = "CTRLALIGN_API_KEY"


def _option(default: object, help: str, **metadata: object) -> object:
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class ServeConfig:
    host: str = _option("127.0.0.1", "address to listen on (0.0.0.0 exposes it)")
    port: int = _option(8000, "port (0 picks a free one)")
    name: str | None = _option(None, "model name in responses (default: the run's folder name)")
    max_new_tokens: int = _option(
        512, "cap on a request's max_tokens, and its default when it sends none"
    )
    max_batch_size: int = _option(
        32, "answers decoded together in one step (a request with n choices counts n)"
    )
    max_queue: int = _option(
        256, "requests that may wait to join the batch; one more gets HTTP 429"
    )
    max_n: int = _option(8, "cap on a request's n (choices)")
    max_prefill_tokens: int = _option(
        4096,
        "prompt tokens one step prefills at most (one request always joins): a burst of "
        "arrivals then joins over several steps while the running answers keep advancing",
    )
    batch_wait_ms: float = _option(
        20.0, "how long an idle server waits for more requests before it starts a batch"
    )
    scheduler: str = _option(
        "continuous",
        "continuous: requests join and leave the running batch at every step; static: a "
        "batch starts only when the previous one has finished (for comparison)",
        choices=SCHEDULERS,
    )
    api_key: str | None = _option(
        None,
        f"require `Authorization: Bearer KEY` on every route but /health "
        f"(default: ${API_KEY_ENV}; unset: no key)",
    )
    max_body_bytes: int = _option(
        1 << 20, "request bodies over this size get HTTP 413 without being read whole"
    )
    drain_timeout: float = _option(
        30.0, "on SIGTERM, seconds to finish requests in flight before cancelling them"
    )
    access_log: bool = _option(
        True, "log one line per request (method, path, status) to stderr, as uvicorn does"
    )
    engine: str = _option(
        "auto",
        "what decodes: builtin (the project's continuous batching), vllm (vLLM's engine in "
        "process; the dial's mixed rows go to the builtin engine beside it), auto (vllm on a "
        "GPU where it is installed, builtin elsewhere: faster on CPUs)",
        choices=ENGINE_CHOICES,
    )
    vllm_export: str | None = _option(
        None, "vllm: folder the run is exported to for vLLM, made once (default: RUN/vllm)"
    )
    tensor_parallel_size: int = _option(1, "vllm: GPUs each layer is split across")
    pipeline_parallel_size: int = _option(1, "vllm: GPUs the layers are divided among")
    gpu_memory_utilization: float | None = _option(
        None,
        "vllm: fraction of the device's memory vLLM reserves (weights and KV cache); on a "
        "CPU, of the machine's RAM (default: vLLM's 0.92 on GPUs, 0.15 on CPUs)",
    )
    enforce_eager: bool = _option(False, "vllm: no CUDA graphs (less memory, slower decode)")
    max_lora_rank: int | None = _option(
        None,
        "vllm: the LoRA rank every LoRA row pays for; a blend of a larger summed rank is "
        "decoded by the builtin engine (default: the run's largest rank, rounded up to one "
        "vLLM accepts)",
    )

    def __post_init__(self) -> None:
        positive = ("max_batch_size", "max_new_tokens", "max_queue", "max_n", "max_body_bytes")
        for name in (*positive, "max_prefill_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        for name in ("batch_wait_ms", "drain_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
        for name in ("tensor_parallel_size", "pipeline_parallel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        memory = self.gpu_memory_utilization
        if memory is not None and not 0 < memory <= 1:
            raise ValueError("--gpu-memory-utilization must be in (0, 1]")

    def engine_options(self) -> dict[str, object]:
        """What the builtin engine takes of these settings."""
        return {
            "max_batch_size": self.max_batch_size,
            "max_queue": self.max_queue,
            "scheduler": self.scheduler,
            "batch_wait_s": self.batch_wait_ms / 1000,
            "max_prefill_tokens": self.max_prefill_tokens,
        }

    def vllm_options(self, run_dir: str | Path, on_cpu: bool) -> dict[str, object]:
        """What the vLLM engine takes besides the builtin engine's settings."""
        memory = self.gpu_memory_utilization
        args = {
            "tensor_parallel_size": self.tensor_parallel_size,
            "pipeline_parallel_size": self.pipeline_parallel_size,
            "gpu_memory_utilization": 0.15 if memory is None and on_cpu else memory,
            "enforce_eager": self.enforce_eager,
        }
        folder = self.vllm_export or Path(run_dir) / "vllm"
        return {"export_dir": folder, "vllm_args": args, "max_lora_rank": self.max_lora_rank}
