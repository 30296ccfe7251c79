"""The records a run trains on and holds out: the preferences asked for, checked against
what the method needs, split, and the counts every run reports about them."""

from __future__ import annotations

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


def load_splits(config: TrainConfig) -> tuple[PreferenceData, PreferenceData]:
    """Train and held-out records, checked against what the method needs before any work."""
    data = load_preference_data(
        config.data,
        levels=config.levels,
        chosen=config.chosen,
        rejected=config.rejected,
        joint=config.joint_attributes,
    )
    data = select_preferences(data, config.preferences)
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
    train_data, eval_data = split_records(data, config.eval_fraction, config.seed)
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
