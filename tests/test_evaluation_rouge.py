"""ROUGE in percent against references, as in the paper's TL;DR tables."""

import numpy as np
import pytest

from ctrlalign.data.records import Record
from ctrlalign.evaluation.rouge import (
    MissingReferenceError,
    PairedDifference,
    rouge,
    rouge_for_records,
)


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


def test_per_example_rouge_l_averages_to_the_mean():
    scores = rouge(["cats running", "dog", "the cat sat"], ["cat run", "bird", "the cat sat on"])
    assert len(scores.rouge_l_each) == 3
    assert sum(scores.rouge_l_each) / 3 == pytest.approx(scores.rouge_l, rel=1e-12)
    assert scores.rouge_l_each[1] == 0.0 and scores.rouge_l_each[0] == 100.0


def test_paired_difference_against_a_hand_bootstrap():
    """The mean is the mean of per-example differences; the interval is the percentile
    bootstrap of that mean, recomputed here with the same seeded draws."""
    mine, base = [10.0, 30.0, 25.0, 40.0, 5.0], [8.0, 20.0, 27.0, 30.0, 5.0]
    d = PairedDifference.of(mine, base, n_boot=500, seed=3)
    diff = np.array(mine) - np.array(base)
    assert d.mean == pytest.approx(diff.mean()) and d.n == 5
    picks = np.random.default_rng(3).integers(0, 5, size=(500, 5))
    low, high = np.percentile([diff[row].mean() for row in picks], [2.5, 97.5])
    assert (d.ci_low, d.ci_high) == pytest.approx((low, high))
    assert diff.min() <= d.ci_low <= d.mean <= d.ci_high <= diff.max()
    # a constant difference has no spread: the interval is the point
    same = PairedDifference.of([3.0, 4.0, 9.0], [1.0, 2.0, 7.0])
    assert (same.mean, same.ci_low, same.ci_high) == pytest.approx((2.0, 2.0, 2.0))
    with pytest.raises(ValueError, match="equal, non-empty"):
        PairedDifference.of([1.0], [1.0, 2.0])
