"""`accelerate launch` trains through the Trainer with no launcher of ours.

Two CPU processes with half the micro-batches each must end where one process ends for the
same global batch: the loss is normalised by the global token (or pair) count, not per
process, and every optimiser step trains on the same examples (``training.batching``; an
epoch's short last batch is split, not topped up with repeated examples).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctrlalign.model.rundir import load_run

KILL_AT = Path(__file__).with_name("kill_at.py")
#: what ``accelerate launch --config_file configs/accelerate/fsdp.yaml`` exports to each
#: process; its CLI refuses FSDP with ``--cpu``, so the CPU test starts the same processes
#: with torchrun. Module states need no sync: every rank builds the same seeded model.
FSDP_ENV = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "1",
    "FSDP_SHARDING_STRATEGY": "FULL_SHARD",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT",
    "FSDP_USE_ORIG_PARAMS": "true",
    "FSDP_SYNC_MODULE_STATES": "false",
}


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


#: every method, with the flags that keep it small (steps: 16 pairs, 12 to train, batch 8)
METHODS = {
    "meet-prompt": ["--method", "meet-prompt", "--soft-prompt-length", "2"],
    "meet-lora": ["--method", "meet-lora", "--lora-rank", "2", "--max-steps", "2"],
    "meet-token": ["--method", "meet-token", "--max-steps", "2"],
    "coh": ["--method", "coh", "--max-steps", "2"],
    "sft": ["--method", "sft", "--max-steps", "2"],
    "dpo": ["--method", "dpo", "--max-steps", "2", "--learning-rate", "1e-3"],
    "dpo-lora": ["--method", "dpo", "--use-lora", "--lora-rank", "2", "--max-steps", "2"],
    "clm": ["--method", "clm", "--max-steps", "2", "--learning-rate", "1e-3"],
}
#: two processes, as ``accelerate launch --multi_gpu`` starts them (through torch's elastic
#: launcher); ``accelerate launch --cpu --num_processes 2`` starts one process only (its
#: multi-CPU mode needs mpirun), which would compare a run with itself
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


def train(
    tmp_path: Path,
    name: str,
    launcher: list[str],
    micro: int,
    method: list[str],
    env: dict[str, str] | None = None,
) -> dict:
    out = tmp_path / name
    cmd = launcher + [
        "-m",
        "ctrlalign.cli",
        "train",
        "--data",
        f"pairwise:{tmp_path / 'pairs.jsonl'}",
        *method,
        "--model",
        "tiny",
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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    model = load_run(run_dir, device="cpu").model
    return {k: v.float() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", METHODS)
def test_two_cpu_processes_match_one(tmp_path, method):
    """Same global batch (8) as 1 x 4 x 2 accumulation and 2 processes x 4: same run. The
    12 training examples end each epoch in a short batch of 4, which the two processes
    split 2 + 2 (accelerate's sharding alone gives the second process 4 repeated ones).

    The tolerance: the two runs differ only in the order of fp32 sums (all-reduce across
    processes versus accumulation in one), relative error ~1e-6 in each gradient, so after
    2-8 Adam steps of lr <= 1e-3 weights may differ by lr x steps x 1e-6 x |update ratio|,
    far below 1e-6; 1e-5 leaves room for the eval loss's own fp32 sum.
    """
    write_pairs(tmp_path / "pairs.jsonl")
    single = train(tmp_path, "single", [sys.executable], 4, METHODS[method])
    double = train(tmp_path, "ddp", LAUNCH, 4, METHODS[method])
    assert single["train_examples"] == double["train_examples"]
    last = list(single["stages"])[-1]
    steps = single["stages"][last]["log_history"][-1]["step"]
    assert steps == double["stages"][last]["log_history"][-1]["step"] > 0
    assert double["eval_loss"] == pytest.approx(single["eval_loss"], abs=1e-5)
    one, two = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    assert one.keys() == two.keys()
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    assert worst < 1e-5, worst
    # the run directory was written once, by the main process, and is complete
    assert not (tmp_path / "ddp" / ".staging").exists()
    assert (tmp_path / "ddp" / "run.yaml").is_file()


@pytest.mark.parametrize(
    "method,extra",
    [
        pytest.param("meet-lora", [], id="meet-lora"),
        pytest.param("dpo-lora", [], id="dpo-lora"),
        pytest.param("sft", [], id="sft"),
        # 9 examples: step 2 has one, so the second process runs a copy that counts for
        # nothing (zero pair weight) to stay in FSDP's collectives
        pytest.param("dpo", ["--max-examples", "9"], id="dpo-9-examples"),
    ],
)
def test_fsdp_full_shard_on_two_cpu_processes_matches_one(tmp_path, method, extra):
    """FSDP (full shard, two gloo processes) saves whole tensors, not its shards: the run
    directory loads and equals the one-process run of the same global batch, full fine-tunes
    (sft, dpo) included.

    The tolerance, as in the DDP test above: the runs differ only in the order of fp32 sums
    (a reduce-scatter of two halves versus accumulation in one process), relative error ~1e-7
    in each gradient; 2 Adam steps move a weight by at most lr (1e-3 for dpo) each, and the
    step's direction changes by that relative error, so the weights may differ by
    ~2 x 1e-3 x 1e-7, and eval losses (fp32 sums over ~100 tokens of weights that close)
    by far less than 1e-5. A repeated or dropped example moves a full fine-tune by about
    one lr step (8.4e-4 before ``training.batching``), far outside it.
    """
    write_pairs(tmp_path / "pairs.jsonl")
    single = train(tmp_path, "single", [sys.executable], 4, METHODS[method] + extra)
    sharded = train(tmp_path, "fsdp", LAUNCH, 4, METHODS[method] + extra, env=FSDP_ENV)
    assert sharded["train_examples"] == single["train_examples"]
    assert sharded["eval_loss"] == pytest.approx(single["eval_loss"], abs=1e-5)
    one, two = weights(tmp_path / "single"), weights(tmp_path / "fsdp")
    assert {k: v.shape for k, v in one.items()} == {k: v.shape for k, v in two.items()}
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    assert worst < 1e-5, worst


def test_fsdp_run_killed_after_a_checkpoint_resumes_from_it(tmp_path):
    """Full-fine-tune DPO under FSDP, both processes killed (-9) before their second
    optimiser step, after checkpoint-1: the same command resumes from checkpoint-1 and ends
    where one uninterrupted process ends (the tolerance of the test above; a lost optimizer
    state or a weight restored from the wrong step would miss it by ~1e-3, lr 1e-3).

    The rerun goes through the same injector: it would die at its second micro-batch, which
    only a run that started again from step 0 reaches (one micro-batch a step per process)."""
    write_pairs(tmp_path / "pairs.jsonl")
    single = train(tmp_path, "single", [sys.executable], 4, METHODS["dpo"])
    out = tmp_path / "fsdp"
    argv = [
        "train", "--data", f"pairwise:{tmp_path / 'pairs.jsonl'}", *METHODS["dpo"],
        "--model", "tiny", "--output", str(out), "--batch-size", "8",
        "--micro-batch-size", "4", "--epochs", "2", "--max-length", "96",
        "--eval-fraction", "0.25", "--save-steps", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **FSDP_ENV}
    kill = [*LAUNCH, str(KILL_AT), "step", "2", "--", *argv]
    killed = subprocess.run(kill, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode != 0, killed.stderr[-3000:]
    stage = out / "checkpoints" / "main"
    assert sorted(p.name for p in stage.glob("checkpoint-*")) == ["checkpoint-1"]
    assert not (out / "run.yaml").exists()
    rerun = subprocess.run(kill, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["eval_loss"] == pytest.approx(single["eval_loss"], abs=1e-5)
    one, two = weights(tmp_path / "single"), weights(out)
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    assert worst < 1e-5, worst


def test_zero3_refuses_two_steps_in_one_launch(monkeypatch, tmp_path):
    """Under the environment ``accelerate launch`` exports for a ZeRO-3 config, a two-step
    method is refused before any work, naming the ways out; one step is accepted."""
    from ctrlalign.training import TrainConfig

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    config = TrainConfig(data="pairwise:x.jsonl", output=str(tmp_path), method="meet-lora")
    with pytest.raises(ValueError, match="--stages first or --stages second.*zero2.yaml"):
        config.validate()
    TrainConfig(
        data="pairwise:x.jsonl", output=str(tmp_path), method="meet-lora", stages="second"
    ).validate()
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    config.validate()
