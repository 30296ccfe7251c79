"""`accelerate launch` trains through the Trainer with no launcher of ours.

Two CPU processes with half the micro-batches each must end where one process ends for the
same global batch: the loss is normalised by the global token count, not per process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ACCELERATE = Path(sys.executable).with_name("accelerate")


def write_pairs(path: Path, n: int = 16) -> None:
    rows = [
        {
            "prompt": f"Question {i}: what is {i} plus {i}?",
            "chosen": f"It is {2 * i}. " + "Adding a number to itself doubles it. " * (i % 3 + 1),
            "rejected": f"Maybe {i + 1}.",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def train(tmp_path: Path, name: str, launcher: list[str], micro: int) -> dict:
    out = tmp_path / name
    cmd = launcher + [
        "-m",
        "ctrlalign.cli",
        "train",
        "--data",
        f"pairwise:{tmp_path / 'pairs.jsonl'}",
        "--method",
        "meet-prompt",
        "--model",
        "tiny",
        "--soft-prompt-length",
        "2",
        "--output",
        str(out),
        "--batch-size",
        "8",
        "--micro-batch-size",
        str(micro),
        "--epochs",
        "2",
        "--max-length",
        "96",
        "--eval-fraction",
        "0.25",
        "--save-steps",
        "100",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=600)
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate CLI not installed")
def test_two_cpu_processes_match_one(tmp_path):
    write_pairs(tmp_path / "pairs.jsonl")
    single = train(tmp_path, "single", [sys.executable], micro=4)
    launcher = [
        str(ACCELERATE),
        "launch",
        "--cpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    double = train(tmp_path, "ddp", launcher, micro=4)
    assert single["train_examples"] == double["train_examples"]
    steps = single["stages"]["second"]["log_history"][-1]["step"]
    assert steps == double["stages"]["second"]["log_history"][-1]["step"] > 0
    assert double["eval_loss"] == pytest.approx(single["eval_loss"], abs=1e-4)
    # the model moved at all, so agreement is not trivial
    assert single["stages"]["first"]["train_loss"] != single["stages"]["second"]["train_loss"]
