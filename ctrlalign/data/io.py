"""File helpers every layer shares: atomic writes (file and folder), JSONL, prompt files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
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


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_prompts(path: str | Path) -> list[dict]:
    """Prompts for generation: JSONL with ``prompt`` (text or messages), optional ``preference``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
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
        if pref is not None and not isinstance(pref, str):
            raise DataError(f"{path} line {number}: field 'preference' must be a string")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no prompts")
    return rows
