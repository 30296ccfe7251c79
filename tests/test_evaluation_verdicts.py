"""Verdict rules of the paper: the reward tie band, the two-order rule, win-rate summaries."""

import math

import pytest

from ctrlalign.evaluation.verdicts import (
    Verdict,
    WinRate,
    combine_orders,
    probability_verdict,
    reward_verdict,
    sigmoid,
)

W, T, L = Verdict.WIN, Verdict.TIE, Verdict.LOSE


@pytest.mark.parametrize(
    ("p", "expected"),
    [(0.45, T), (0.55, T), (0.5, T), (0.4499, L), (0.5501, W), (0.0, L), (1.0, W)],
)
def test_tie_band_edges_are_inclusive(p, expected):
    assert probability_verdict(p) is expected


def test_reward_verdict_around_the_band():
    edge = math.log(0.55 / 0.45)  # sigmoid(edge) == 0.55
    assert reward_verdict(1.0, 1.0) is T
    assert reward_verdict(edge - 1e-6, 0.0) is T
    assert reward_verdict(edge + 1e-6, 0.0) is W
    assert reward_verdict(0.0, edge + 1e-6) is L
    assert reward_verdict(0.0, edge - 1e-6) is T
    assert reward_verdict(2.0, 1.0) is W
    assert reward_verdict(-3.0, 1.0) is L


def test_reward_verdict_custom_band_and_huge_gaps():
    assert reward_verdict(0.3, 0.0, band=(0.4, 0.6)) is T
    assert reward_verdict(0.3, 0.0, band=(0.5, 0.5)) is W
    assert reward_verdict(-1e6, 1e6) is L
    assert reward_verdict(1e6, -1e6) is W
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (W, W, W),
        (W, T, W),
        (T, W, W),
        (L, L, L),
        (L, T, L),
        (T, L, L),
        (T, T, T),
        (W, L, T),
        (L, W, T),
    ],
)
def test_combine_orders_all_nine_combinations(first, second, expected):
    assert combine_orders(first, second) is expected


def test_win_rate_percentages_and_delta():
    verdicts = [W] * 5 + [L] * 2 + [T] * 3
    rate = WinRate.from_verdicts(verdicts)
    assert rate.n == 10
    assert rate.win == pytest.approx(50.0)
    assert rate.lose == pytest.approx(20.0)
    assert rate.tie == pytest.approx(30.0)
    assert rate.delta == pytest.approx(30.0)
    assert rate.win + rate.lose + rate.tie == pytest.approx(100.0)


def test_win_rate_negative_delta():
    rate = WinRate.from_verdicts([L, L, L, W])
    assert rate.delta == pytest.approx(-50.0)
    assert rate.tie == 0.0


def test_bootstrap_interval_contains_estimate_and_is_seeded():
    verdicts = [W] * 40 + [L] * 25 + [T] * 35
    a = WinRate.from_verdicts(verdicts, n_boot=500, seed=7)
    b = WinRate.from_verdicts(verdicts, n_boot=500, seed=7)
    c = WinRate.from_verdicts(verdicts, n_boot=500, seed=8)
    assert a == b
    assert a.ci_low <= a.delta <= a.ci_high
    assert a.ci_low < a.ci_high
    assert (c.ci_low, c.ci_high) != (a.ci_low, a.ci_high)
    # The interval of a difference of two ~35% rates over 100 items is roughly +-25 points.
    assert 5 < a.ci_high - a.ci_low < 50


def test_bootstrap_degenerate_when_all_wins():
    rate = WinRate.from_verdicts([W] * 8)
    assert (rate.delta, rate.ci_low, rate.ci_high) == (100.0, 100.0, 100.0)


def test_win_rate_needs_verdicts():
    with pytest.raises(ValueError, match="zero verdicts"):
        WinRate.from_verdicts([])
