"""ROUGE in percent against references, as in the paper's TL;DR tables."""

import pytest

from ctrlalign.data.records import Record
from ctrlalign.evaluation.rouge import MissingReferenceError, rouge, rouge_for_records


def test_identical_strings_score_100():
    scores = rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert (scores.rouge1, scores.rouge2, scores.rouge_l, scores.average) == (100, 100, 100, 100)
    assert scores.n == 1


def test_known_partial_overlap():
    scores = rouge(["the cat sat"], ["the cat sat on the mat"])
    # 3 of 3 predicted unigrams match, 3 of 6 reference ones: F = 2 * 1 * 0.5 / 1.5.
    assert scores.rouge1 == pytest.approx(200 / 3)
    # 2 of 2 predicted bigrams, 2 of 5 reference bigrams: F = 2 * 0.4 / 1.4.
    assert scores.rouge2 == pytest.approx(100 * 0.8 / 1.4)
    assert scores.rouge_l == pytest.approx(200 / 3)
    assert scores.average == pytest.approx((200 / 3 * 2 + 100 * 0.8 / 1.4) / 3)


def test_stemming_and_mean_over_examples():
    scores = rouge(["cats running", "dog"], ["cat run", "bird"])
    assert scores.rouge1 == pytest.approx(50.0)  # 100 (stems match) and 0, averaged
    assert scores.n == 2


def test_missing_references_name_how_many():
    with pytest.raises(MissingReferenceError, match="2 of 3 examples have no reference"):
        rouge(["a", "b", "c"], ["a", None, "  "])


def test_records_without_reference_are_an_error():
    records = [
        Record(messages=(("user", "post one"),), responses={}, reference="summary one"),
        Record(messages=(("user", "post two"),), responses={}),
    ]
    with pytest.raises(MissingReferenceError, match="1 of 2"):
        rouge_for_records(["summary one", "x"], records)
    assert rouge_for_records(["summary one"], records[:1]).rouge_l == 100


def test_length_mismatch_and_empty_input():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="zero examples"):
        rouge([], [])
