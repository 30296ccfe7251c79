"""Helpers shared by the benchmarks in ``bench/``: data, step timing, token counts, memory.

A benchmark measures each configuration in its own child process (``run_worker``) so that
memory figures start from a clean allocator and one configuration's leftovers cannot slow
or flatter the next. Inside a child, ``instrument(trainer, meter, identify)`` hooks a
``transformers.Trainer`` (ours or TRL's) without changing what it computes:

- the data collator is wrapped to count, per batch, the real (non-pad) tokens, the tokens
  that carry loss and the padded size, and to name the examples it holds;
- a ``TrainerCallback`` records the wall and process-CPU clock at the end of every
  optimizer step, and starts / stops an RSS sampler around the step loop.

A timed step is the interval from the end of the previous optimizer step to the end of
this one, so it holds everything the loop does per step (batch fetch and collation,
forward, backward, clipping, optimizer, scheduler, logging); warm-up steps are excluded.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil
import torch
from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]
HH_TEST = REPO.parent / "shared" / "data" / "hh-rlhf" / "helpful-base-test.jsonl.gz"
IGNORE_INDEX = -100


def require_file(path: Path, what: str, flag: str = "--data") -> Path:
    """Exit with a clear message (not a traceback) when benchmark input is missing."""
    if not Path(path).is_file():
        sys.exit(
            f"error: {what} not found at {path}\n"
            f"The benchmark needs it; put the file there or pass {flag} PATH."
        )
    return Path(path)


class RssSampler:
    """Peak resident set size of this process, sampled in a background thread.

    ``start`` records the baseline RSS and begins sampling every ``interval`` seconds;
    ``stop`` ends it. ``peak_delta`` is the highest sample minus the baseline: the extra
    resident memory the measured code needed (gradients, optimizer state, activations,
    allocator caching), as the OS sees it. Spikes shorter than the interval can be missed.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.process = psutil.Process()
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        gc.collect()
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.samples += 1
            self._stop.wait(self.interval)

    def stop(self) -> None:
        if self._thread is None:
            return
        self.peak = max(self.peak, self.process.memory_info().rss)
        self._stop.set()
        self._thread.join()
        self._thread = None

    @property
    def peak_delta(self) -> int:
        return self.peak - self.baseline


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all cores)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def clocks() -> tuple[float, float, float]:
    """(wall clock, this process's CPU time, machine busy CPU time), in seconds."""
    return time.perf_counter(), time.process_time(), busy_cpu_seconds()


def others_cpu_share(seconds: float = 3.0) -> float:
    """Share of the machine's cores that other processes keep busy over ``seconds``."""
    own0, busy0, t0 = psutil.Process().cpu_times(), busy_cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    own1, busy1, t1 = psutil.Process().cpu_times(), busy_cpu_seconds(), time.perf_counter()
    own = (own1.user + own1.system) - (own0.user + own0.system)
    return max(busy1 - busy0 - own, 0.0) / ((t1 - t0) * (os.cpu_count() or 1))


def wait_for_quiet(threshold: float, max_wait: float, log=print) -> tuple[float, float]:
    """Wait (at most ``max_wait`` s) until other processes use less than ``threshold`` of
    the cores; returns (seconds waited, last measured share). A shared machine is never
    silent, so this only avoids starting a measurement in the middle of someone's burst."""
    start = time.perf_counter()
    share = others_cpu_share()
    while share > threshold and time.perf_counter() - start < max_wait:
        log(f"[bench] other processes use {share:.0%} of the CPUs; waiting for < {threshold:.0%}")
        time.sleep(7.0)
        share = others_cpu_share()
    return round(time.perf_counter() - start, 1), round(share, 3)


@dataclass
class BatchCount:
    tokens: int  # non-pad tokens (attention mask ones), control positions excluded
    loss_tokens: int  # tokens that carry loss (response tokens and their end-of-turn)
    padded: int  # batch rows x padded width
    examples: tuple[str, ...] = ()  # the bench's ids of the examples it holds, in batch order


#: the dataset column carrying a bench example id through TRL's tokenization to its collator
EXAMPLE_ID = "example_id"
#: names one example as a collator receives it (``id_from_column``, ``id_by_object``)
Identify = Callable[[object], str]


def example_id(record: int, preference: str) -> str:
    """One training example's id: its record's position in the selection, and its response.
    Every trainer of a bench builds its examples from the same records, so equal ids in a
    step mean the same text."""
    return f"{record}:{preference}"


def id_from_column(example: dict) -> str:
    """The id a TRL dataset row carries in ``EXAMPLE_ID``, taken out so that TRL's collator
    sees only its own columns."""
    return example.pop(EXAMPLE_ID)


def id_by_object(examples: list, ids: list[str]) -> Identify:
    """Ids of example objects our trainers collate as they are (not copies): looked up by
    identity, so the examples need no field of the bench's."""
    table = {id(example): i for example, i in zip(examples, ids, strict=True)}
    return lambda example: table[id(example)]


def keep_id_column(trainer) -> None:
    """TRL keeps only the model's columns for its collator; the bench's ids must survive."""
    if EXAMPLE_ID not in trainer.train_dataset.column_names:
        raise RuntimeError(f"TRL's preprocessing dropped the {EXAMPLE_ID!r} column")
    trainer._set_signature_columns_if_needed()
    trainer._signature_columns = [*trainer._signature_columns, EXAMPLE_ID]


def count_lm_batch(batch: dict) -> BatchCount:
    """What a conditional-LM batch holds (ours and TRL's SFT alike)."""
    ids, labels = batch["input_ids"], batch["labels"]
    mask = batch.get("attention_mask")
    tokens = int(mask.sum()) if mask is not None else ids.numel()
    # control positions (a soft prompt, a hand-written prefix) are not the text's tokens
    prefix = batch.get("prefix_mask")
    tokens -= int(prefix.sum()) if prefix is not None else 0
    # labels sit on the input positions; position t is predicted from t - 1
    loss_tokens = int((labels[:, 1:] != IGNORE_INDEX).sum())
    return BatchCount(tokens, loss_tokens, ids.numel())


class CountingCollator:
    """Wraps a data collator and records what every batch it builds holds (``count``) and
    which examples (``identify``: ``id_from_column``, ``id_by_object``)."""

    def __init__(
        self,
        collator,
        log: list[BatchCount],
        identify: Identify,
        count: Callable[[dict], BatchCount] = count_lm_batch,
    ):
        self.collator = collator
        self.log = log
        self.identify = identify
        self.count = count

    def __call__(self, examples):
        names = tuple(self.identify(e) for e in examples)
        batch = self.collator(examples)
        self.log.append(replace(self.count(batch), examples=names))
        return batch


class ProfileStep(TrainerCallback):
    """Runs optimizer step ``step`` (1-based) under ``torch.profiler`` and keeps its top
    operators by self CPU time: where a step's time goes, for a target that falls short.
    The profiled step is an extra one after the timed steps (the profiler slows it)."""

    def __init__(self, step: int, top: int = 15):
        self.step, self.top = step, top
        self.profiler: torch.profiler.profile | None = None
        self.table: list[dict] = []

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profiler.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self.profiler is None or state.global_step != self.step:
            return
        self.profiler.__exit__(None, None, None)
        events = self.profiler.key_averages()
        total = sum(e.self_cpu_time_total for e in events) or 1.0
        ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
        self.table = [
            {
                "op": e.key,
                "self_cpu_ms": round(e.self_cpu_time_total / 1000, 1),
                "share": round(e.self_cpu_time_total / total, 3),
                "calls": e.count,
            }
            for e in ranked[: self.top]
        ]
        self.profiler = None


@dataclass
class StepMeter(TrainerCallback):
    """Step clock + memory sampler, as a Trainer callback."""

    sampler: RssSampler = field(default_factory=RssSampler)
    batches: list[BatchCount] = field(default_factory=list)
    step_ends: list[tuple[float, float, float]] = field(default_factory=list)  # wall, cpu, busy
    train_begin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    threads_in_loop: int = 0
    max_steps: int = 0
    accumulation: int = 1  # micro-batches (collator calls) per optimizer step
    last_step: int = 0  # the step after which memory stops being sampled (0: the last one)
    profile: ProfileStep | None = None  # a step to profile, added by ``instrument``

    def on_train_begin(self, args, state, control, **kwargs):
        self.max_steps = self.last_step or state.max_steps
        self.sampler.start()  # baseline: model, data, trainer and optimizer built, no step run
        self.train_begin = clocks()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_ends.append(clocks())
        self.threads_in_loop = torch.get_num_threads()
        if state.global_step >= self.max_steps:
            self.sampler.stop()  # the step loop is over; final saving is not measured

    def on_train_end(self, args, state, control, **kwargs):
        self.sampler.stop()

    def summary(self, warmup: int, timed: int | None = None) -> dict:
        """Throughput over the ``timed`` steps after ``warmup`` (all the rest when None: a
        profiled step after them is left out); memory over the whole step loop."""
        steps = len(self.step_ends) if timed is None else warmup + timed
        if steps <= warmup or steps > len(self.step_ends):
            raise RuntimeError(
                f"{len(self.step_ends)} steps ran; need {warmup} warm-up + {timed} timed steps"
            )
        micro = self.accumulation
        if len(self.batches) < micro * len(self.step_ends):
            raise RuntimeError(
                f"{len(self.batches)} batches for {len(self.step_ends)} optimizer steps of "
                f"{micro} micro-batches each"
            )
        counts = []
        for i in range(len(self.step_ends)):
            part = self.batches[i * micro : (i + 1) * micro]
            counts.append(
                BatchCount(
                    sum(b.tokens for b in part),
                    sum(b.loss_tokens for b in part),
                    sum(b.padded for b in part),
                    tuple(i for b in part for i in b.examples),
                )
            )
        marks = [self.train_begin, *self.step_ends][: steps + 1]
        wall = [marks[i + 1][0] - marks[i][0] for i in range(steps)]
        cpu = [marks[i + 1][1] - marks[i][1] for i in range(steps)]
        timed = range(warmup, steps)
        seconds = sum(wall[i] for i in timed)
        cpu_seconds = sum(cpu[i] for i in timed)
        machine_busy = marks[-1][2] - marks[warmup][2]
        others = max(machine_busy - cpu_seconds, 0.0) / (seconds * (os.cpu_count() or 1))
        tokens = sum(counts[i].tokens for i in timed)
        loss_tokens = sum(counts[i].loss_tokens for i in timed)
        padded = sum(counts[i].padded for i in timed)
        mib = 1024 * 1024
        return {
            "warmup_steps": warmup,
            "timed_steps": len(timed),
            "step_seconds": [round(w, 3) for w in wall],
            "step_tokens": [b.tokens for b in counts[:steps]],
            "step_response_tokens": [b.loss_tokens for b in counts[:steps]],
            "step_example_ids": [list(b.examples) for b in counts[:steps]],
            "timed_seconds": round(seconds, 3),
            "timed_tokens": tokens,
            "timed_response_tokens": loss_tokens,
            "timed_padded_tokens": padded,
            "tokens_per_s": round(tokens / seconds, 2),
            "response_tokens_per_s": round(loss_tokens / seconds, 2),
            "seconds_per_step": round(seconds / len(timed), 3),
            "cpu_seconds_per_token": round(cpu_seconds / tokens, 5),
            "tokens_per_cpu_s": round(tokens / cpu_seconds, 2),
            "other_processes_cpu_share": round(others, 3),
            "rss_baseline_mib": round(self.sampler.baseline / mib, 1),
            "rss_peak_mib": round(self.sampler.peak / mib, 1),
            "rss_peak_delta_mib": round(self.sampler.peak_delta / mib, 1),
            "rss_samples": self.sampler.samples,
            "torch_threads_in_loop": self.threads_in_loop,
        }


def instrument(
    trainer,
    meter: StepMeter,
    identify: Identify,
    count: Callable[[dict], BatchCount] = count_lm_batch,
):
    """Count every batch the trainer collates (``count``), naming its examples with
    ``identify``, and time its steps; returns the trainer."""
    trainer.data_collator = CountingCollator(trainer.data_collator, meter.batches, identify, count)
    return add_callbacks(trainer, meter)


def add_callbacks(trainer, meter: StepMeter):
    """Time the trainer's steps with ``meter`` (and profile its step, if it has one)."""
    trainer.add_callback(meter)
    if meter.profile:
        trainer.add_callback(meter.profile)
    return trainer


def environment() -> dict:
    """Versions and hardware, as the results file records them."""
    import peft
    import transformers
    import trl

    from ctrlalign.model.device import cpu_description, cpu_flags, resolve_dtype

    cpu = cpu_description()
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpu_flags(cpuinfo.read_text()) if cpuinfo.is_file() else set()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "cpu": cpu["model"],
        "bf16_units": cpu["bf16_units"],
        "auto_dtype": str(resolve_dtype("auto", torch.device("cpu"))).removeprefix("torch."),
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "torch_threads_default": torch.get_num_threads(),
        "niceness": os.nice(0),
        "gpu": torch.cuda.is_available(),
    }


def source_commit() -> str | None:
    """The commit the benchmarked code comes from (the checkout or worktree this file is
    in), ``-dirty`` when its tracked files other than ``bench/results/`` differ from it (a
    run of ``make bench`` rewrites earlier results, which changes no measured code); None
    outside a git checkout."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    return head.stdout.strip() + ("-dirty" if changed.stdout.strip() else "")


def run_header(benchmark: str, started: float) -> dict:
    """What every results file opens with: the script, the command that reproduces it (under
    ``nice`` when it ran niced), when, how long it took since ``started``, and on what."""
    nice = ["nice", "-n", str(os.nice(0))] if os.nice(0) else []
    python = Path(sys.executable)
    python = python.relative_to(REPO) if python.is_relative_to(REPO) else python
    command = [*nice, str(python), f"bench/{benchmark}.py", *sys.argv[1:]]
    return {
        "benchmark": benchmark,
        "command": " ".join(command),
        "commit": source_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": round(time.time() - started, 1),
        "environment": environment(),
    }


def run_worker(script: Path, name: str, argv: list[str], timeout: float | None = None) -> dict:
    """Run ``script --worker NAME ARGV`` in a fresh process and return the JSON it writes."""
    fd, out = tempfile.mkstemp(prefix=f"bench-{name}.", suffix=".json")
    os.close(fd)
    try:
        cmd = [sys.executable, str(script), "--worker", name, "--worker-out", out, *argv]
        subprocess.run(cmd, check=True, timeout=timeout)
        return json.loads(Path(out).read_text())
    finally:
        Path(out).unlink(missing_ok=True)


@dataclass(frozen=True)
class Quiet:
    """How a round guards against the other jobs of a shared machine: wait before it until
    they use less than ``wait_below`` of the CPUs (``max_wait`` s at most), and repeat it
    (``tries`` times in all) when they took more than ``reject_above`` while it ran."""

    wait_below: float
    max_wait: float
    reject_above: float
    tries: int

    def settings(self) -> dict:
        return {
            "wait_before_round_until_others_below": self.wait_below,
            "max_wait_s": self.max_wait,
            "round_repeated_when_others_above": self.reject_above,
            "tries_per_round": self.tries,
        }


def add_quiet_arguments(p) -> None:
    """The flags of ``Quiet``, for a benchmark that runs ``run_rounds``."""
    p.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.10,
        help="before each configuration, wait until other processes use less than this "
        "share of the CPUs ...",
    )
    p.add_argument("--max-quiet-wait", type=float, default=30.0, help="... for at most this (s)")
    p.add_argument(
        "--reject-above",
        type=float,
        default=0.10,
        help="repeat a round in which other processes took more than this share of the CPUs "
        "(the rejected round stays in the results, marked)",
    )
    p.add_argument(
        "--tries",
        type=int,
        default=3,
        help="runs of one round at most; every try is kept, marked quiet or not, and a "
        "configuration with no quiet try at all is judged on its fastest disturbed one "
        "(its quiet_tries is 0)",
    )


def quiet_from(args) -> Quiet:
    if args.tries < 1:
        raise SystemExit("error: --tries must be at least 1")
    return Quiet(args.quiet_threshold, args.max_quiet_wait, args.reject_above, args.tries)


def disturbed(quiet: bool, again: bool) -> str:
    if quiet:
        return ""
    return " (disturbed: repeated)" if again else " (disturbed: kept, marked not quiet)"


ROUND_FIELDS = (
    "round",
    "try",
    "kept_as_quiet",
    "tokens_per_s",
    "tokens_per_cpu_s",
    "seconds_per_step",
    "step_seconds",
    "other_processes_cpu_share",
    "rss_peak_delta_mib",
)


def run_rounds(
    script: Path,
    names: list[str],
    argv: list[str],
    rounds: int,
    quiet: Quiet,
    last_round_argv: list[str] = (),
) -> dict[str, dict]:
    """Every configuration in ``names`` once per round, rounds interleaved (A B A B, so a
    slow spell of a shared machine hits all of them), each run in a fresh process after
    waiting for other jobs to go quiet. A run during which others took more than
    ``quiet.reject_above`` of the CPUs is repeated (every try stays in ``all_rounds``).
    Keeps each configuration's fastest quiet round; the last round gets ``last_round_argv``
    too (a profiled step, which does not change the timed ones)."""
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for round_ in range(rounds):
        extra = list(last_round_argv) if round_ == rounds - 1 else []
        for name in names:
            for try_ in range(1, quiet.tries + 1):
                waited, share = wait_for_quiet(quiet.wait_below, quiet.max_wait)
                print(f"[bench] round {round_ + 1} try {try_}: {name} ...", flush=True)
                r = run_worker(script, name, [*argv, *extra])
                others = r["other_processes_cpu_share"]
                r.update(
                    round=round_ + 1,
                    waited_for_quiet_s=waited,
                    others_cpu_share_at_start=share,
                    kept_as_quiet=others <= quiet.reject_above,
                    **{"try": try_},
                )
                runs[name].append(r)
                print(
                    f"[bench] {name}: {r['tokens_per_s']:.1f} tok/s, {r['seconds_per_step']:.2f} "
                    f"s/step, {r['tokens_per_cpu_s']:.1f} tok/CPU-s, peak RSS "
                    f"+{r['rss_peak_delta_mib']:.0f} MiB, others used {others:.0%} of the CPUs"
                    + disturbed(r["kept_as_quiet"], try_ < quiet.tries),
                    flush=True,
                )
                if r["kept_as_quiet"]:
                    break
    configs = {}
    for name, tries in runs.items():
        quiet_runs = [r for r in tries if r["kept_as_quiet"]]
        best = dict(max(quiet_runs or tries, key=lambda r: r["tokens_per_s"]))
        best["profile"] = next((r["profile"] for r in reversed(tries) if r.get("profile")), [])
        best["all_rounds"] = [{key: r[key] for key in ROUND_FIELDS} for r in tries]
        best["quiet_tries"] = len(quiet_runs)
        best["disturbed_tries"] = len(tries) - len(quiet_runs)
        configs[name] = best
    return configs


def same_examples(configs: dict[str, dict]) -> dict:
    """Whether every configuration's kept round trained on the same examples, step by step
    (warm-up steps included): the precondition of any ratio between them."""
    steps = {name: r["step_example_ids"] for name, r in configs.items()}
    first = next(iter(steps), None)
    differ = [name for name, ids in steps.items() if ids != steps[first]]
    return {"all_equal": not differ, "compared_with": first, "differ": differ}


def write_json_atomic(path: Path, data: dict) -> Path:
    from ctrlalign.data.io import write_atomic

    path = write_atomic(path, json.dumps(data, indent=2) + "\n")
    path.chmod(0o644)  # the temporary file it was renamed from is private to its owner
    return path
