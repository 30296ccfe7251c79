"""Peak memory of one training run, for the tables that quote it beside the run's time.

An experiment trains every method in one process, so the process's high-water mark
(``ru_maxrss``) would carry the largest earlier run into every later one. Linux lets a
process reset its mark (writing 5 to ``/proc/self/clear_refs`` resets ``VmHWM``), and CUDA
keeps its own peak, which ``torch.cuda`` resets. Elsewhere the mark is the process's.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path

import torch

_PROC = Path("/proc/self")


def reset_peak() -> None:
    """Start measuring a run's peak from now."""
    with contextlib.suppress(OSError):  # not Linux, or not allowed: the process's peak
        (_PROC / "clear_refs").write_text("5")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, float]:
    """``peak_rss_gib`` since ``reset_peak`` (the process's where it cannot be reset) and,
    on CUDA, ``peak_gpu_gib`` allocated by torch."""
    peak = {"peak_rss_gib": round(_peak_rss_bytes() / 2**30, 2)}
    if torch.cuda.is_available():
        peak["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return peak


def _peak_rss_bytes() -> int:
    try:
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
