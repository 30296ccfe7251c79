"""Win-rate tables and plots: contents, valid PNGs, and no half-written files."""

import csv

import pytest

from ctrlalign.evaluation.report import (
    CSV_HEADER,
    ReportRow,
    mean_words,
    plot_delta_against,
    plot_delta_vs_temperature,
    write_atomic,
    write_csv,
    write_markdown,
)
from ctrlalign.evaluation.verdicts import Verdict, WinRate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def rate(win: float, lose: float, n: int = 100) -> WinRate:
    return WinRate(win, lose, 100 - win - lose, win - lose, n, win - lose - 5, win - lose + 5)


def rows() -> list[ReportRow]:
    return [
        ReportRow("MEET (LoRA)", "deberta", 0.0, rate(47.56, 29.77), 41.25, 38.0),
        ReportRow("MEET | prompt 50", "deberta", 0.0, rate(33.84, 30.31), 30.0, 38.0),
    ]


def test_mean_words_and_row_from_answers():
    assert mean_words(["one two three", "four"]) == 2.0
    assert mean_words([]) == 0.0
    verdicts = [Verdict.WIN, Verdict.WIN, Verdict.LOSE, Verdict.TIE]
    row = ReportRow.from_answers(
        "MEET", "gpt-4", 0.5, WinRate.from_verdicts(verdicts), ["a b", "c d e f"], ["x"] * 2
    )
    assert (row.candidate_words, row.baseline_words) == (3.0, 1.0)
    assert row.cells()[:8] == [
        "MEET",
        "gpt-4",
        "0.5",
        "50.00",
        "25.00",
        "25.00",
        "25.00",
        f"{row.win_rate.ci_low:.2f}",
    ]


def test_markdown_table(tmp_path):
    path = write_markdown(rows(), tmp_path / "out" / "table.md")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == (
        "| Method | Judge | Temp. | Win % | Lose % | Tie % | Δ % | CI low | CI high | n "
        "| Words (cand.) | Words (base.) |"
    )
    assert lines[1] == "| " + " | ".join(["---"] * 12) + " |"
    assert lines[2] == (
        "| MEET (LoRA) | deberta | 0 | 47.56 | 29.77 | 22.67 | 17.79 | 12.79 | 22.79 | 100 "
        "| 41.2 | 38.0 |"
    )
    assert lines[3].startswith("| MEET \\| prompt 50 | deberta |")
    assert len(lines) == 4


def test_csv_table(tmp_path):
    path = write_csv(rows(), tmp_path / "table.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == list(CSV_HEADER)
    assert table[0] == {
        "method": "MEET (LoRA)",
        "judge": "deberta",
        "temperature": "0",
        "win_pct": "47.56",
        "lose_pct": "29.77",
        "tie_pct": "22.67",
        "delta_pct": "17.79",
        "ci_low": "12.79",
        "ci_high": "22.79",
        "n": "100",
        "candidate_words": "41.2",
        "baseline_words": "38.0",
    }
    assert table[1]["method"] == "MEET | prompt 50"


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old contents\n")
    bad = [*rows(), ReportRow("broken", "deberta", 0.0, None, 1.0, 1.0)]
    with pytest.raises(AttributeError):
        write_csv(bad, path)
    with pytest.raises(AttributeError):
        write_markdown(bad, tmp_path / "table.md")
    assert path.read_text() == "old contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_write_atomic_binary_failure_midway(tmp_path):
    def write(handle):
        handle.write(PNG_SIGNATURE)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(tmp_path / "plot.png", write, binary=True)
    assert list(tmp_path.iterdir()) == []


def test_delta_against_temperature_png(tmp_path):
    table = [
        ReportRow(method, judge, t, rate(40 + 10 * t + shift, 30), 10.0, 12.0)
        for method, shift in (("MEET (LoRA)", 5), ("DPO", -3))
        for judge in ("deberta", "gpt-4")
        for t in (1.0, 0.0, 0.5)
    ]
    path = plot_delta_vs_temperature(table, tmp_path / "fig3.png", title="HH-RLHF")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["fig3.png"]


def test_delta_against_lora_rank_png(tmp_path):
    series = {"MEET (LoRA)": [(1, rate(42.8, 37.85)), (4, rate(42.31, 35.31)), (64, rate(42, 34))]}
    path = plot_delta_against("LoRA rank", series, tmp_path / "rank.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_delta_against("LoRA rank", {"empty": []}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
