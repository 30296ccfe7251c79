"""Small file helpers shared by the CLI, the evaluator and the server."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ctrlalign.data.records import DataError


def write_atomic(path: str | Path, text: str) -> Path:
    """Write via a temporary file in the same folder and rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
