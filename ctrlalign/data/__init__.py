"""Preference data: the ``Record`` every recipe consumes and the loaders that produce it."""

from ctrlalign.data.loaders import load_preference_data
from ctrlalign.data.partition import split_records
from ctrlalign.data.records import DataError, PreferenceData, Record

__all__ = ["DataError", "PreferenceData", "Record", "load_preference_data", "split_records"]
