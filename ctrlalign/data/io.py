"""File helpers every layer shares: atomic writes (file and folder), JSONL, prompt files."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from ctrlalign.data.records import DataError


def write_atomic(
    path: str | Path, content: str | Callable[[IO], None], binary: bool = False
) -> Path:
    """Write ``content`` (text, or a function writing to a file handle; ``binary`` for a
    byte handle) to a temporary file in the same folder, then rename it into place.

    Never a half-written file: on any error the temporary file goes and an existing
    ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        options = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, "wb" if binary else "w", **options) as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_dir(target: Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder beside ``target`` and rename it into place, so a crash leaves no half.

    When another process finished ``target`` first, its folder is kept and ours dropped.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


LOCK_FILE = ".lock"


class OutputLocked(RuntimeError):
    """Another live process writes to the same output folder."""


@contextlib.contextmanager
def output_lock(folder: str | Path) -> Iterator[Path]:
    """Hold ``folder`` for this process alone while the block runs.

    An OS lock (``flock``) on ``folder/.lock``: the kernel drops it when the process dies,
    however it dies, so a SIGKILL leaves no stale lock to clear by hand. A second process
    fails at once, naming the holder's PID. A folder this call created and the block left
    holding nothing but the lock file (it failed before writing) is removed again, so a
    refused command leaves no trace.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the whole block)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise OutputLocked(
                f"{folder} is in use by another ctrlalign process (PID {holder}); wait for it "
                "to finish or choose another output folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield folder
        finally:
            if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        handle.close()


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Add rows to a growing JSON-lines cache. A kill mid-line leaves a torn last line
    (``read_jsonl_rows`` skips it); it is ended first, so the new rows do not run on from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        if handle.tell() and (handle.seek(-1, 2), handle.read(1))[1] != b"\n":
            handle.write(b"\n")
        handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())


def read_jsonl_rows(path: str | Path) -> list[dict]:
    """The whole rows of a cache ``append_jsonl`` grows (none when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    # split("\n"), not splitlines(): an answer may hold a raw U+2028 (ensure_ascii=False)
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_prompts(path: str | Path) -> list[dict]:
    """Prompts for generation: JSONL with ``prompt`` (text or messages), optional ``preference``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    rows = []
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 and similar breaks
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or "prompt" not in row:
            raise DataError(f"{path} line {number}: field 'prompt' is missing")
        prompt = row["prompt"]
        is_messages = (
            isinstance(prompt, list)
            and bool(prompt)
            and all(
                isinstance(m, dict)
                and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str)
                for m in prompt
            )
        )
        if not (isinstance(prompt, str) and prompt.strip()) and not is_messages:
            raise DataError(
                f"{path} line {number}: field 'prompt' must be non-empty text or messages"
            )
        pref = row.get("preference")
        blend = isinstance(pref, dict) and all(
            isinstance(w, int | float) and not isinstance(w, bool) for w in pref.values()
        )
        if pref is not None and not isinstance(pref, str) and not blend:
            raise DataError(
                f"{path} line {number}: field 'preference' must be a name or a blend "
                '{"name": weight, ...}'
            )
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no prompts")
    return rows
