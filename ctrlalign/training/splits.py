"""The records a run trains on and holds out: the preferences asked for, checked against
what the method needs, split, and the counts every run reports about them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ctrlalign.data import DataError, PreferenceData, Record, load_preference_data, split_records
from ctrlalign.data.records import blend_parts
from ctrlalign.training.config import METHODS, TrainConfig


def select_preferences(data: PreferenceData, wanted: list[str] | None) -> PreferenceData:
    """Keep only the responses of the wanted preferences (all of them by default)."""
    if not wanted:
        return data
    unknown = sorted(set(wanted) - set(data.preferences))
    if unknown:
        raise ValueError(f"preferences {unknown} are not in the data, which has {data.preferences}")
    keep = set(wanted)
    records = [
        Record(r.messages, _kept_responses(r.responses, keep), r.reference, r.source)
        for r in data.records
    ]
    records = [r for r in records if r.responses]
    return PreferenceData(
        records, list(wanted), data.pairwise, data.chosen, data.rejected, dict(data.dropped)
    )


def _kept_responses(responses: dict[str, str], keep: set[str]) -> dict[str, str]:
    """The responses of the kept preferences; a joint record's blend key
    (``a-1+b-0``) keeps its kept parts."""
    kept = {}
    for key, text in responses.items():
        parts = [p for p in blend_parts(key, list(keep)) if p in keep]
        if parts:
            kept["+".join(parts)] = text
    return kept


@dataclasses.dataclass(frozen=True)
class DataSplit:
    """What decides which records a run trains on and holds out: the data, the options
    that shape its records, the preferences kept (a prompt left with no response drops
    out, which moves the split) and the split itself. Evaluation rebuilds a run's training
    prompts from its info with this, to leave out exactly what training saw."""

    data: str
    eval_fraction: float
    seed: int
    levels: int
    joint_attributes: bool
    chosen: str
    rejected: str
    preferences: tuple[str, ...] | None

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> DataSplit:
        """From a ``TrainConfig.to_dict()`` or a run's info. A setting the run did not
        record (older runs), or recorded as None (chosen and rejected of pointwise data),
        takes ``TrainConfig``'s default: what the run loaded with."""
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        values = {}
        for f in dataclasses.fields(cls):
            value = settings.get(f.name)
            values[f.name] = defaults[f.name] if value is None else value
        values["preferences"] = tuple(values["preferences"]) if values["preferences"] else None
        return cls(**values)

    def split(self) -> tuple[PreferenceData, PreferenceData]:
        """(train, held-out) records, before ``max_examples`` caps the training part."""
        data = load_preference_data(
            self.data,
            levels=self.levels,
            chosen=self.chosen,
            rejected=self.rejected,
            joint=self.joint_attributes,
        )
        data = select_preferences(data, list(self.preferences or ()))
        return split_records(data, self.eval_fraction, self.seed)


def load_splits(config: TrainConfig) -> tuple[PreferenceData, PreferenceData]:
    """Train and held-out records, checked against what the method needs before any work."""
    train_data, eval_data = DataSplit.of(config.to_dict()).split()
    data = train_data  # its preferences and pairing are the whole data's
    method = METHODS[config.method]
    if method.pairwise and not data.pairwise:
        pointwise = [name for name, m in METHODS.items() if not m.pairwise]
        raise DataError(
            f"--method {config.method} learns from (chosen, rejected) pairs, but {config.data} "
            f"is pointwise (preferences {data.preferences}); methods that accept pointwise "
            f"data: {', '.join(pointwise)}"
        )
    if method.control is None and data.chosen not in data.preferences:
        raise DataError(
            f"--method {config.method} trains on the chosen responses, but {config.data} has "
            f"no preference {config.chosen!r} (it has {data.preferences}): pass --chosen NAME"
        )
    if config.max_examples is not None:
        train_data.records = train_data.records[: config.max_examples]
    return train_data, eval_data


def data_metrics(
    train_count: int, eval_count: int, dropped: tuple[int, int], data: PreferenceData
) -> dict:
    """The counts every run reports: what trained, what was held out, what was dropped
    (``dropped``: training and held-out examples over ``max_length``; the total is what
    runs recorded before the training part was kept apart)."""
    return {
        "train_examples": train_count,
        "eval_examples": eval_count,
        "dropped_too_long": sum(dropped),
        "dropped_too_long_train": dropped[0],
        "dropped_while_loading": data.dropped,
        "stages": {},
    }
