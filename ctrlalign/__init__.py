"""ctrlalign: controllable alignment of language models.

The names most users need, importable from here (loaded on first use, so importing the
package, or running ``ctrlalign --help``, does not load torch)::

    from ctrlalign import TrainConfig, train_any, load_run, generate, GenerationConfig
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "TrainConfig": "ctrlalign.training.config",
    "train_any": "ctrlalign.training",
    "load_run": "ctrlalign.model.rundir",
    "generate": "ctrlalign.inference.generation",
    "GenerationConfig": "ctrlalign.inference.generation",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ctrlalign' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
