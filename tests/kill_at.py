"""Run the ctrlalign CLI and SIGKILL this very process at one chosen point.

    python tests/kill_at.py POINT N -- ctrlalign arguments...

The crash tests' fault injector: a real ``kill -9`` (no cleanup, no ``finally``), placed
exactly where a timed kill from outside could land only by luck. POINT is one of
``KILL_POINTS``; the process dies on the N-th time it passes there.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

from ctrlalign.cli import main
from ctrlalign.evaluation import generations
from ctrlalign.training.trainer import ControlTrainer


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_on_call(owner: object, name: str, n: int, after: bool, counts=lambda *a: True) -> None:
    """Patch ``owner.name`` (a class's method, a module's function) to die on its n-th
    counted call, before or after it runs."""
    original = getattr(owner, name)
    seen = 0

    def patched(*args, **kwargs):
        nonlocal seen
        counted = counts(*args)
        seen += counted
        if counted and seen == n and not after:
            die()
        result = original(*args, **kwargs)
        if counted and seen == n and after:
            die()
        return result

    setattr(owner, name, patched)


KILL_POINTS = {
    # in the middle of an optimiser step (before its N-th micro-batch)
    "step": lambda n: kill_on_call(ControlTrainer, "training_step", n, after=False),
    # during a checkpoint write: the trainable tensors written, optimizer and state not yet
    "checkpoint": lambda n: kill_on_call(ControlTrainer, "_save", n, after=True),
    # during the final save: the N-th artifact moved from staging into the run directory
    "final-save": lambda n: kill_on_call(
        pathlib.Path, "replace", n, after=True, counts=lambda p, *_: p.parent.name == ".staging"
    ),
    # evaluate: before generating the N-th batch of answers (earlier batches are cached)
    "generate": lambda n: kill_on_call(generations, "generate", n, after=False),
}


def run_cli(
    *argv: str, kill: tuple[str, int] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``ctrlalign ARGV`` in a fresh process on one thread (reductions then run in one fixed
    order, so its results can be compared bit for bit); ``kill=(POINT, N)`` runs it through
    this injector, to die there."""
    prefix = ["-m", "ctrlalign.cli"]
    if kill:
        prefix = [__file__, kill[0], str(kill[1]), "--"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *prefix, *argv], env=env, capture_output=True, text=True, timeout=timeout
    )


if __name__ == "__main__":
    point, n, separator, *argv = sys.argv[1:]
    assert separator == "--", __doc__
    KILL_POINTS[point](int(n))
    sys.exit(main(argv))
