"""``train-rm``: a tiny reward model learns a planted preference and judges with it."""

import json
import random

import pytest

from ctrlalign.evaluation.judges.rm import RewardModelJudge
from ctrlalign.evaluation.verdicts import Comparison, Verdict
from ctrlalign.training.reward_model import (
    RewardModelConfig,
    bradley_terry_loss,
    is_trained,
    train_reward_model,
)

MARKER = "certainly"
WORDS = [
    "the",
    "cat",
    "dog",
    "sun",
    "tree",
    "river",
    "stone",
    "house",
    "car",
    "bird",
    "green",
    "blue",
    "small",
    "large",
    "warm",
    "cold",
]


def planted_pairs(n: int, seed: int = 0) -> list[dict]:
    """Chosen answers hold MARKER somewhere; otherwise both answers are random words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        chosen = rng.choices(WORDS, k=rng.randint(4, 9))
        chosen.insert(rng.randrange(len(chosen) + 1), MARKER)
        rejected = rng.choices(WORDS, k=rng.randint(4, 9))
        rows.append(
            {
                "prompt": f"question {i}: {' '.join(rng.choices(WORDS, k=4))}?",
                "chosen": " ".join(chosen),
                "rejected": " ".join(rejected),
            }
        )
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return f"pairwise:{path}"


def tiny_rm_config(data: str, output, **overrides) -> RewardModelConfig:
    values = {
        "data": data,
        "output": str(output),
        "model": "tiny",
        "epochs": 2,
        "batch_size": 8,
        "micro_batch_size": 8,
        "lr": 3e-3,
        "max_length": 64,
        "eval_fraction": 0.2,
        "logging_steps": 100,
    }
    return RewardModelConfig(**(values | overrides))


def test_bradley_terry_loss_is_the_pairwise_nll():
    import torch

    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    expected = -(torch.log(torch.sigmoid(torch.tensor(2.0))) + torch.log(torch.tensor(0.5))) / 2
    assert loss.item() == pytest.approx(expected.item())


def test_learns_a_planted_preference(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", planted_pairs(160))
    folder = train_reward_model(tiny_rm_config(data, tmp_path / "rm"))

    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["eval_pairs"] == 32
    assert metrics["train_pairs"] == 128
    assert metrics["pairwise_accuracy"] > 0.9
    assert is_trained(folder)
    assert not (tmp_path / "rm.staging").exists()

    # The folder is a plain HF classifier the judge loads, and it judges by the marker.
    judge = RewardModelJudge(folder)
    verdicts = judge.judge(
        [Comparison("question: cat?", f"the {MARKER} cat sat", "the cat sat here")]
    ).verdicts
    assert verdicts == [Verdict.WIN]

    # A finished folder is not trained again.
    mtime = (folder / "metrics.json").stat().st_mtime_ns
    assert train_reward_model(tiny_rm_config(data, tmp_path / "rm")) == folder
    assert (folder / "metrics.json").stat().st_mtime_ns == mtime


def test_bad_inputs(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    with pytest.raises(ValueError, match="needs pairwise data"):
        train_reward_model(tiny_rm_config(f"prompts:{prompts}", tmp_path / "rm"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    data = write_jsonl(tmp_path / "pairs.jsonl", planted_pairs(10))
    with pytest.raises(ValueError, match="is not a reward model folder"):
        train_reward_model(tiny_rm_config(data, busy))
    assert (busy / "notes.txt").read_text() == "mine"
