"""Attribute judges: each number against a hand computation, the pairwise verdicts they
give, and ``alpha-sweep --judge attr:NAME``."""

from __future__ import annotations

import csv

import pytest

from ctrlalign.evaluation.judges import build_judge, parse_judge_spec, reward_scorer
from ctrlalign.evaluation.judges.attr import AttributeJudge, flesch_reading_ease, syllables
from ctrlalign.evaluation.judges.base import JudgeSpecError
from ctrlalign.evaluation.verdicts import Comparison, Verdict


def test_length_counts_words():
    judge = AttributeJudge("length")
    assert judge.score(["x", "y"], ["one two  three\nfour", ""]) == [4.0, 0.0]


def test_flesch_reading_ease_by_hand():
    # "The cat sat. It ran to a window!" 2 sentences, 8 words; Pyphen splits only "win-dow"
    assert [syllables(w) for w in ("The", "cat", "window")] == [1, 1, 2]
    want = 206.835 - 1.015 * (8 / 2) - 84.6 * (9 / 8)
    assert flesch_reading_ease("The cat sat. It ran to a window!") == pytest.approx(want)
    hard = "Notwithstanding institutional considerations, comprehensive reevaluation is necessary."
    assert flesch_reading_ease(hard) < 0 < flesch_reading_ease("I see a dog. It is big.")
    assert flesch_reading_ease("") == 0.0 and flesch_reading_ease("!!! 42") == 0.0


def test_sentiment_is_vaders_compound_score():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    judge = AttributeJudge("sentiment")
    texts = ["I love this, it is wonderful!", "This is terrible and sad.", "The box is red."]
    scores = judge.score([""] * 3, texts)
    vader = SentimentIntensityAnalyzer()
    assert scores == [vader.polarity_scores(t)["compound"] for t in texts]
    assert scores[0] > 0.5 and scores[1] < -0.5 and scores[2] == 0.0


def test_offensive_is_profanity_checks_probability():
    from profanity_check import predict_prob

    judge = AttributeJudge("offensive")
    texts = ["Thank you, that was kind of you.", "Shut up, you stupid idiot.", "The box is red."]
    scores = judge.score([""] * 3, texts)
    assert scores == [float(p) for p in predict_prob(texts)]
    assert scores[1] > 0.9 and scores[0] < 0.1 and scores[2] < 0.1


def test_more_of_the_attribute_wins_and_equal_ties(tmp_path):
    judge = build_judge("attr:length", tmp_path)
    judge.check()
    comparisons = [
        Comparison("p", "a b c", "a"),
        Comparison("p", "a", "a b"),
        Comparison("p", "x", "y"),
    ]
    assert judge.judge(comparisons).verdicts == [Verdict.WIN, Verdict.LOSE, Verdict.TIE]
    assert "measured, not a quality judge" in judge.describe()


def test_unknown_attribute_fails_at_check_naming_the_choices(tmp_path):
    assert parse_judge_spec("attr:politeness") == ("attr", "politeness")
    with pytest.raises(JudgeSpecError, match="no attribute 'politeness'.*length, sentiment"):
        build_judge("attr:politeness", tmp_path).check()
    with pytest.raises(JudgeSpecError, match="no attribute"):
        reward_scorer("attr:politeness")


def test_alpha_sweep_scores_answers_by_an_attribute(tmp_path, tiny_model_dir):
    """alpha-sweep's mean_score with attr:length is the answers' mean word count."""
    import json

    import torch

    from ctrlalign.cli import main
    from ctrlalign.model.controlled_lm import ControlledLM
    from ctrlalign.model.identity_layer import insert_identity_layer
    from ctrlalign.model.loading import load_model
    from ctrlalign.model.rundir import save_run

    lm, tok = load_model(str(tiny_model_dir))
    with torch.no_grad():
        for p in insert_identity_layer(lm).parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    info = {"model": str(tiny_model_dir), "method": "clm", "control": None, "preferences": None}
    save_run(tmp_path / "clm", ControlledLM(lm), tok, info, {}, save_lm=False)
    out = tmp_path / "sweep"
    argv = ["alpha-sweep", "--run", str(tmp_path / "clm"), "--alphas", "0,1", "--prompt", "Hi!"]
    assert (
        main([*argv, "--max-new-tokens", "6", "--output", str(out), "--judge", "attr:length"]) == 0
    )
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    with open(out / "sweep.csv") as fh:
        table = list(csv.DictReader(fh))
    for row in table:
        mine = [a for a in answers if a["alpha"] == float(row["alpha"])]
        assert all(a["score"] == len(a["response"].split()) for a in mine)
        assert float(row["mean_score"]) == pytest.approx(sum(a["score"] for a in mine) / len(mine))
