"""Every run's answers at every temperature, cached in the report folder batch by batch.

Generation is the slow part of an evaluation on CPU, so each (run, temperature) cell is a
JSON-lines file that grows one batch at a time: a killed evaluation loses at most the
batch in flight, and a rerun generates only prompts the file lacks. A cached answer counts
only if it came from the same trained run (a fingerprint of its ``run.yaml`` and
``metrics.json``, so retraining invalidates it) under the same generation settings.
Each batch is sampled with its own seed (``seed`` + its first prompt's index), so an
evaluation that was interrupted gives the answers an uninterrupted one gives.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ctrlalign.data import Record
from ctrlalign.data.io import append_jsonl, read_jsonl_rows
from ctrlalign.inference.generation import GenerationConfig, generate
from ctrlalign.inference.jobs import ServingEngine
from ctrlalign.inference.serving.engines import offline_engine
from ctrlalign.model.device import Placement
from ctrlalign.model.rundir import RUN_FILE, Run, default_preference, load_run, read_run_info

log = logging.getLogger(__name__)


def digest(*parts: object) -> str:
    text = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_key(record: Record) -> str:
    return digest(record.messages)[:24]


@dataclass(frozen=True)
class RunRef:
    """A run directory under the name the report gives it, checked and fingerprinted."""

    name: str
    path: Path
    info: dict
    fingerprint: str
    #: the run's ``metrics.json`` (training time, peak memory, held-out loss), {} if none
    metrics: dict = field(default_factory=dict)

    @classmethod
    def read(cls, name: str, path: str | Path) -> RunRef:
        """Raises ``RunError`` when ``path`` is not a finished run directory."""
        path = Path(path)
        info = read_run_info(path)
        metrics = path / "metrics.json"
        extra = metrics.read_text() if metrics.is_file() else ""
        fingerprint = digest((path / RUN_FILE).read_text(), extra)[:16]
        return cls(name, path, info, fingerprint, json.loads(extra) if extra else {})

    @property
    def preference(self) -> str | None:
        return default_preference(self.info)


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 128
    batch_size: int = 8
    seed: int = 0
    #: where runs generate (``load_run``'s flags); the resolved dtype is part of the
    #: cache signature, so bf16 answers never stand in for fp32 ones
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str = "auto"
    #: what decodes (``serving.engines``); another engine's answers are cached apart, as
    #: its kernels may break a near-tie the other way
    engine: str = "builtin"

    def placement(self) -> dict[str, str]:
        return {
            "device": self.device,
            "dtype": self.dtype,
            "attn_implementation": self.attn_implementation,
        }


class GenerationStore:
    """The cached answers of every cell under ``folder``; see the module docstring."""

    def __init__(self, folder: Path, settings: GenerationSettings) -> None:
        self.folder = folder
        self.settings = settings

    def path(self, run: RunRef, temperature: float) -> Path:
        return self.folder / f"{run.name}_t{temperature:g}.jsonl"

    def _signature(self, run: RunRef, temperature: float) -> str:
        s = self.settings
        parts = [run.fingerprint, temperature, s.max_new_tokens, s.batch_size, s.seed]
        dtype = Placement.resolve(s.device, s.dtype).dtype
        if dtype != torch.float32:  # fp32 answers keep the signature they always had
            parts.append(str(dtype))
        if s.engine != "builtin":
            parts.append(s.engine)
        return digest(*parts)[:16]

    def cached(self, run: RunRef, temperature: float) -> dict[str, str]:
        """prompt key -> answer for rows of this exact run and settings (torn lines skipped)."""
        return cached_answers(self.path(run, temperature), self._signature(run, temperature))

    def missing(self, run: RunRef, temperature: float, records: Sequence[Record]) -> bool:
        cached = self.cached(run, temperature)
        return any(prompt_key(record) not in cached for record in records)

    def answers(
        self,
        run: RunRef,
        temperature: float,
        records: Sequence[Record],
        loaded: Run | None,
        engine: ServingEngine | None = None,
    ) -> list[str]:
        """Answers for ``records`` in order, generating the batches the cache lacks.

        ``loaded`` is the run's model, needed only when something is missing.
        """
        size = self.settings.batch_size

        def answer(start: int, stop: int) -> list[str]:
            if loaded is None:
                raise ValueError(f"answers for {run.name} are missing and no model was loaded")
            config = GenerationConfig(
                max_new_tokens=self.settings.max_new_tokens,
                temperature=temperature,
                seed=self.settings.seed + start,
                batch_size=size,
            )
            chats = [r.chat for r in records[start:stop]]
            return generate(
                loaded.model, loaded.tokenizer, chats, run.preference, config, engine=engine
            )

        return answers_by_block(
            self.path(run, temperature),
            self._signature(run, temperature),
            [prompt_key(record) for record in records],
            size,
            answer,
            lambda i: {"prompt": records[i].prompt_text},
            desc=f"{run.name} t={temperature:g}",
        )


def cached_answers(path: Path, signature: str) -> dict[str, str]:
    """key -> answer of the rows in ``path`` made under ``signature`` (torn lines skipped)."""
    rows = read_jsonl_rows(path)
    return {row["key"]: row["response"] for row in rows if row.get("signature") == signature}


def answers_by_block(
    path: Path,
    signature: str,
    keys: Sequence[str],
    size: int,
    answer: Callable[[int, int], list[str]],
    fields: Callable[[int], dict] = lambda i: {},
    desc: str = "answers",
    progress: bool = True,
) -> list[str]:
    """The answer of every key, from ``path`` (JSON lines) where a row of the same
    ``signature`` holds it, else from ``answer(start, stop)`` over the block of ``size``
    keys it falls in, appended to ``path`` block by block (with ``fields(i)`` beside) so a
    killed run keeps what it answered. Blocks, not single rows: a block's sampling seed
    follows its start, so answering only missing rows would change what is sampled."""
    done = cached_answers(path, signature)
    starts = [
        start
        for start in range(0, len(keys), size)
        if any(key not in done for key in keys[start : start + size])
    ]
    for start in tqdm(starts, desc=desc, disable=not progress or not starts):
        part = range(start, min(start + size, len(keys)))
        texts = answer(part.start, part.stop)
        fresh = [
            {"key": keys[i], "signature": signature, **fields(i), "response": text}
            for i, text in zip(part, texts, strict=True)
        ]
        append_jsonl(path, fresh)
        done |= {row["key"]: row["response"] for row in fresh}
    return [done[key] for key in keys]


def generate_all(
    store: GenerationStore,
    runs: Sequence[RunRef],
    temperatures: Sequence[float],
    records: Sequence[Record],
) -> dict[tuple[str, float], list[str]]:
    """(run name, temperature) -> answers; each run's model is loaded only if it must answer."""
    answers = {}
    for run in runs:
        needed = any(store.missing(run, t, records) for t in temperatures)
        if not needed:
            for temperature in temperatures:
                answers[run.name, temperature] = store.answers(run, temperature, records, None)
            continue
        loaded = load_run(run.path, **store.settings.placement())
        log.info("generating with %s (%d prompts)", run.name, len(records))
        settings = store.settings
        with offline_engine(loaded, run.path, settings.engine, settings.batch_size) as engine:
            for temperature in temperatures:
                answers[run.name, temperature] = store.answers(
                    run, temperature, records, loaded, engine
                )
        del loaded
    return answers
