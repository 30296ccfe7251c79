"""A run's peak memory is its own: an experiment trains many runs in one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctrlalign.training.memory import peak_memory, reset_peak


def _resettable() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _resettable(), reason="needs Linux's /proc/self/clear_refs")
def test_a_reset_forgets_an_earlier_larger_peak():
    size = 400 * 2**20  # far above the few MiB the interpreter's RSS drifts by
    block = np.ones(size, dtype=np.uint8)  # touched, so resident
    high = peak_memory()["peak_rss_gib"]
    del block
    reset_peak()
    after = peak_memory()["peak_rss_gib"]
    assert after <= high - 0.9 * size / 2**30
    again = np.ones(size, dtype=np.uint8)
    assert peak_memory()["peak_rss_gib"] >= after + 0.9 * size / 2**30
    del again
