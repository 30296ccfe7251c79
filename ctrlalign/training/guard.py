"""One writer per run directory, and no silent reuse of another run's work.

A run directory is claimed before any work: an OS lock (``data.io.output_lock``) keeps a
second process out, and ``settings.json`` records what the run is made of: every setting
that changes the result, plus fingerprints of the data and model files. A rerun with the
same settings resumes (or, if finished, returns the run at once); a rerun with other ones
is refused before anything is loaded, naming the keys that differ and the ways out.
Everything written under the directory afterwards (checkpoints, the DPO reference cache,
the run) therefore belongs to one set of settings. Records and folders an older ctrlalign
wrote are read as today's (``config.upgrade_settings``, ``adopt_old_layout``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from ctrlalign.data.io import LOCK_FILE, output_lock, write_atomic
from ctrlalign.model.rundir import RUN_FILE
from ctrlalign.training.config import METHODS, ONLY_STEP, TrainConfig, upgrade_settings
from ctrlalign.training.distributed import is_main_process

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
#: settings that change where, how fast or how much is written, not what is learned (a run
#: started on one GPU may resume on another)
RUNTIME_SETTINGS = (
    "output",
    "overwrite",
    "keep_checkpoints",
    "logging_steps",
    "report_to",
    "device",
    "attn_implementation",
    "gradient_checkpointing",
)
#: data and model are compared by content (``fingerprint``), not by how they are named
NOT_RESULT_SETTINGS = (*RUNTIME_SETTINGS, "data", "model")


class SettingsChanged(ValueError):
    """The output folder holds (part of) a run made with other settings."""


def _file_digest(path: Path, digest: hashlib._Hash) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def fingerprint(target: str) -> str:
    """A file's content hash; for a folder (a local model), the hash of its small files
    and the sizes of the rest (weights are not read whole); anything else (a Hub id,
    ``smollm2``, ``tiny``) is its own name."""
    path = Path(target).expanduser()
    digest = hashlib.sha256()
    if path.is_file():
        _file_digest(path, digest)
    elif path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(child.relative_to(path)).encode())
            if child.stat().st_size < 1 << 20:
                _file_digest(child, digest)
            else:
                digest.update(str(child.stat().st_size).encode())
    else:
        return target
    return digest.hexdigest()


def run_settings(config: TrainConfig) -> dict:
    """What a run is made of: its result-changing settings, data and model fingerprints."""
    settings = {k: v for k, v in config.to_dict().items() if k not in NOT_RESULT_SETTINGS}
    _, _, data_path = config.data.partition(":")
    return {
        **settings,
        "data_fingerprint": fingerprint(data_path or config.data),
        "model_fingerprint": fingerprint(config.model),
    }


def _defaults() -> dict:
    """Every ``TrainConfig`` field's default, as it reads back from JSON."""
    values = {}
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return json.loads(json.dumps(values))


def _differences(stored: dict, wanted: dict) -> list[str]:
    """Settings that differ. A setting the record lacks was added to ctrlalign after the
    run started: it matches when asked at its default (the value the run had in effect)."""
    defaults = _defaults()
    return [
        f"{k}: {stored.get(k)!r} there, {value!r} now"
        for k, value in sorted(wanted.items())
        if (stored[k] != value if k in stored else value != defaults.get(k, value))
    ]


def adopt_old_layout(folder: Path, config: TrainConfig) -> None:
    """A run of dpo or clm interrupted before they had a step of their own kept its
    checkpoints in ``checkpoints/second``: moved to ``checkpoints/main`` to resume there."""
    checkpoints = folder / "checkpoints"
    old, new = checkpoints / "second", checkpoints / ONLY_STEP
    if METHODS[config.method].stages == ONLY_STEP and old.is_dir() and not new.exists():
        log.info("%s: moving %s to %s, where this version resumes it", folder, old, new)
        old.rename(new)


def _clear(folder: Path) -> None:
    for child in folder.iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


@contextlib.contextmanager
def claim(config: TrainConfig) -> Iterator[bool]:
    """Hold ``config.output`` for this run; yields True when it already holds the finished
    run of these settings (nothing to do). ``config.overwrite`` clears it first."""
    folder = Path(config.output)
    if not is_main_process():
        # under accelerate/torchrun the main process holds the folder and checks the
        # settings; if it refuses, the launcher stops the other processes
        yield (folder / SETTINGS_FILE).is_file() and (folder / RUN_FILE).is_file()
        return
    with output_lock(folder):
        wanted = json.loads(json.dumps(run_settings(config)))  # as it reads back from JSON
        record = folder / SETTINGS_FILE
        if config.overwrite:
            _clear(folder)
        elif record.is_file():
            changed = _differences(upgrade_settings(json.loads(record.read_text())), wanted)
            if changed:
                raise SettingsChanged(
                    f"{folder} holds a run made with other settings ({'; '.join(changed)}); "
                    "rerun with --overwrite to start again, or choose another --output"
                )
        elif any(child.name != LOCK_FILE for child in folder.iterdir()):
            raise SettingsChanged(
                f"{folder} already holds files that are not a ctrlalign run in progress (no "
                f"{SETTINGS_FILE}); rerun with --overwrite to replace them, or choose another "
                "--output"
            )
        finished = record.is_file() and (folder / RUN_FILE).is_file()
        if finished:
            log.info("%s already holds this run, trained with these settings", folder)
            if not config.keep_checkpoints:  # a kill between the save and this cleanup
                shutil.rmtree(folder / "checkpoints", ignore_errors=True)
            yield True
            return
        wrote = not record.is_file()
        adopt_old_layout(folder, config)
        write_atomic(record, json.dumps(wanted, indent=2, sort_keys=True) + "\n")
        try:
            yield False
        except BaseException:
            # failed before training wrote anything: leave no trace of this attempt
            if wrote and {p.name for p in folder.iterdir()} <= {LOCK_FILE, SETTINGS_FILE}:
                record.unlink()
            raise
