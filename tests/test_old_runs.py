"""Run directories written before dpo and clm had a step of their own still load, resume
and are recognised: they trained in ``checkpoints/second`` at ``lr_second``, which is
``checkpoints/main`` at ``learning_rate`` now (``config.upgrade_settings``,
``guard.adopt_old_layout``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from kill_at import run_cli
from safetensors.torch import load_file

from ctrlalign import experiment
from ctrlalign.cli import main
from ctrlalign.model.rundir import load_run
from ctrlalign.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

#: a full DPO fine-tune of two optimiser steps, one micro-batch each, a checkpoint after each
SETTINGS = {
    "method": "dpo",
    "max_steps": 2,
    "batch_size": 4,
    "micro_batch_size": 4,
    "max_length": 128,
    "eval_fraction": 0.0,
    "save_steps": 1,
    "seed": 3,
}
LR = 0.01


def argv(data: Path, model: Path, out: Path, lr_flag: str = "--learning-rate", lr=LR):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    return [
        "train", "--data", f"pairwise:{data}", "--model", str(model), "--output", str(out),
        *flags, lr_flag, str(lr),
    ]  # fmt: skip


def to_old_layout(out: Path) -> None:
    """Rewrite a dpo run as ctrlalign wrote it before: ``lr_second`` in its records, its
    step named ``second`` (checkpoints, metrics, ``stages_run``)."""
    settings = json.loads((out / "settings.json").read_text())
    settings["lr_second"] = settings.pop("learning_rate")
    (out / "settings.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    if (out / "run.yaml").exists():
        info = yaml.safe_load((out / "run.yaml").read_text())
        info["lr_second"] = info.pop("learning_rate")
        info["stages_run"] = ["second"]
        (out / "run.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
        metrics = json.loads((out / "metrics.json").read_text())
        metrics["stages"] = {"second": metrics["stages"].pop("main")}
        (out / "metrics.json").write_text(json.dumps(metrics))
    if (out / "checkpoints" / "main").exists():
        (out / "checkpoints" / "main").rename(out / "checkpoints" / "second")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pairwise_file, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    result = run_cli(*argv(pairwise_file, tiny_model_dir, out))
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((out / "run.yaml").read_text())["stages_run"] == ["main"]
    return out


def test_a_finished_old_run_loads_and_is_recognised(
    reference, tmp_path, pairwise_file, tiny_model_dir, capsys
):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    to_old_layout(out)
    run = load_run(out)
    assert run.info["stages_run"] == ["second"] and run.info["lr_second"] == LR
    saved = load_file(str(out / "model" / "model.safetensors"))
    loaded = run.model.lm.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())

    # the old command and the new one both find the finished run: nothing retrained
    mtime = (out / "run.yaml").stat().st_mtime_ns
    assert main(argv(pairwise_file, tiny_model_dir, out, "--lr-second")) == 0
    assert main(argv(pairwise_file, tiny_model_dir, out)) == 0
    assert (out / "run.yaml").stat().st_mtime_ns == mtime
    # ... and the rate is still compared: another one is refused
    assert main(argv(pairwise_file, tiny_model_dir, out, lr=0.5)) == 2
    assert f"learning_rate: {LR} there, 0.5 now" in capsys.readouterr().err
    # an experiment naming the old key finds it done too
    values = {**SETTINGS, "lr_second": LR, "data": f"pairwise:{pairwise_file}"}
    config = TrainConfig.from_dict({**values, "model": str(tiny_model_dir), "output": str(out)})
    assert config.learning_rate == LR and config.stage_list == ["main"]
    assert experiment._check_done_run("dpo", config)


def test_an_interrupted_old_run_resumes_from_its_checkpoint(
    reference, tmp_path, pairwise_file, tiny_model_dir
):
    out = tmp_path / "run"
    killed = run_cli(*argv(pairwise_file, tiny_model_dir, out), kill=("step", 2))
    assert killed.returncode == -9, killed.stderr
    to_old_layout(out)
    assert (out / "checkpoints" / "second" / "checkpoint-1").is_dir()

    # through the same injector: a run that started again from step 0 would die at its
    # second micro-batch; one resumed from checkpoint-1 has only one left
    old_command = argv(pairwise_file, tiny_model_dir, out, "--lr-second")
    rerun = run_cli(*old_command, kill=("step", 2))
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((out / "settings.json").read_text())["learning_rate"] == LR
    got = load_file(str(out / "model" / "model.safetensors"))
    want = load_file(str(reference / "model" / "model.safetensors"))
    assert got.keys() == want.keys()
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, atol=1e-6, rtol=0)
