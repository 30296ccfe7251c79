"""Faults with real processes: kill -9 anywhere, a second writer, changed settings, a full
disk. Each rerun of the same command must end with the run an uninterrupted one gives."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from kill_at import run_cli
from safetensors.torch import load_file

from ctrlalign.cli import main
from ctrlalign.data.io import LOCK_FILE, output_lock
from ctrlalign.training.checkpoints import CHECKPOINT_DONE_FILE
from ctrlalign.training.trainer import ControlTrainer

pytestmark = pytest.mark.usefixtures("one_thread")


def train_argv(data: Path, model: Path, out: Path, *extra: str) -> list[str]:
    """meet-prompt, both steps, 2 optimiser steps each (8 examples, batch 4 of 2 x 2),
    a checkpoint after every step."""
    return [
        "train", "--data", f"pairwise:{data}", "--method", "meet-prompt", "--stages", "both",
        "--model", str(model), "--output", str(out), "--max-examples", "4",
        "--batch-size", "4", "--micro-batch-size", "2", "--epochs", "1",
        "--soft-prompt-length", "2", "--max-length", "128", "--eval-fraction", "0",
        "--save-steps", "1", "--seed", "3", *extra,
    ]  # fmt: skip


def weights(run: Path) -> dict[str, torch.Tensor]:
    return {
        **load_file(str(run / "control" / "soft_prompts.safetensors")),
        **load_file(str(run / "model" / "model.safetensors")),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pairwise_file, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    result = run_cli(*train_argv(pairwise_file, tiny_model_dir, out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize(
    "point,n,left",
    [
        # 7th micro-batch: the second step's second optimiser step, after its checkpoint-1
        ("step", 7, "checkpoints/second/checkpoint-1"),
        # the second step's checkpoint-2 written only in part
        ("checkpoint", 4, "checkpoints/second/checkpoint-2"),
        # two artifacts of the run moved in, run.yaml not yet
        ("final-save", 2, "checkpoints/second/final.safetensors"),
    ],
)
def test_kill_9_then_the_same_command_ends_as_an_uninterrupted_run(
    reference, tmp_path, pairwise_file, tiny_model_dir, point, n, left
):
    out = tmp_path / "run"
    argv = train_argv(pairwise_file, tiny_model_dir, out)
    killed = run_cli(*argv, kill=(point, n))
    assert killed.returncode == -9, killed.stderr
    assert (out / left).exists(), sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert not (out / "run.yaml").exists(), "a killed run must not look finished"
    if point == "checkpoint":  # torn: the Trainer's files after the tensors are missing
        torn = out / left
        assert not (torn / CHECKPOINT_DONE_FILE).exists()
        assert not (torn / "trainer_state.json").exists()

    rerun = run_cli(*argv)
    assert rerun.returncode == 0, rerun.stderr
    assert not (out / "checkpoints").exists() and not (out / ".staging").exists()
    got, want = weights(out), weights(reference)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    if point == "checkpoint":
        assert "written only in part" in rerun.stderr


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, pairwise_file, tiny_model_dir):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from ctrlalign.data.io import output_lock
            with output_lock({str(out)!r}):
                print("locked", flush=True)
                time.sleep(600)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = run_cli(*train_argv(pairwise_file, tiny_model_dir, out))
        assert second.returncode == 3
        assert f"in use by another ctrlalign process (PID {holder.pid})" in second.stderr
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the lock with its holder: no stale lock to clear by hand
    with output_lock(out):
        assert (out / LOCK_FILE).read_text() == str(os.getpid())


def test_changed_settings_are_refused_and_overwrite_starts_again(
    reference, tmp_path, pairwise_file, tiny_model_dir, capsys
):
    out = tmp_path / "run"
    argv = train_argv(pairwise_file, tiny_model_dir, out, "--max-steps", "1")
    assert main(argv) == 0
    before = weights(out)
    assert main([*argv, "--lr-second", "0.5", "--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert "lr_second: 2e-05 there, 0.5 now" in err and "seed: 3 there, 4 now" in err
    assert "--overwrite" in err and "another --output" in err
    assert all(torch.equal(before[k], v) for k, v in weights(out).items())

    # the same command again: the finished run is returned, nothing retrained
    mtime = (out / "run.yaml").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "run.yaml").stat().st_mtime_ns == mtime

    # changed data content under the same path is a changed setting too
    data = tmp_path / "pairs.jsonl"
    data.write_text(pairwise_file.read_text())
    copied = train_argv(data, tiny_model_dir, tmp_path / "other", "--max-steps", "1")
    assert main(copied) == 0
    data.write_text(pairwise_file.read_text().replace("a", "b", 1))
    assert main(copied) == 2
    assert "data_fingerprint" in capsys.readouterr().err

    assert main([*argv, "--lr-second", "0.5", "--overwrite"]) == 0
    assert yaml.safe_load((out / "run.yaml").read_text())["lr_second"] == 0.5


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_and_says_so(
    reference, tmp_path, pairwise_file, tiny_model_dir, monkeypatch, capsys
):
    out = tmp_path / "run"
    argv = train_argv(pairwise_file, tiny_model_dir, out)
    original, calls = ControlTrainer._save, []

    def full_disk(self, output_dir=None, state_dict=None):
        calls.append(output_dir)
        if len(calls) == 4:  # the second step's checkpoint-2
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), output_dir)
        return original(self, output_dir, state_dict)

    monkeypatch.setattr(ControlTrainer, "_save", full_disk)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err
    kept = out / "checkpoints" / "second" / "checkpoint-1"
    assert (kept / CHECKPOINT_DONE_FILE).is_file() and not (out / "run.yaml").exists()

    monkeypatch.setattr(ControlTrainer, "_save", original)  # space freed
    assert main(argv) == 0
    got, want = weights(out), weights(reference)
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_a_setting_added_after_a_run_started_matches_at_its_default(
    tmp_path, pairwise_file, train_config
):
    """A run in progress recorded by an older ctrlalign lacks later settings: resuming it
    works while they stay at their defaults (what the run had), and is refused otherwise."""
    import json

    from ctrlalign.training import guard

    config = train_config(f"pairwise:{pairwise_file}", tmp_path / "run", "dpo")
    with guard.claim(config) as finished:
        assert not finished
        (tmp_path / "run" / "checkpoints").mkdir()  # work started
    record = tmp_path / "run" / guard.SETTINGS_FILE
    older = json.loads(record.read_text())
    del older["simpo_gamma"]
    record.write_text(json.dumps(older))
    with guard.claim(config) as finished:
        assert not finished
    changed = train_config(f"pairwise:{pairwise_file}", tmp_path / "run", "dpo", simpo_gamma=0.9)
    record.write_text(json.dumps(older))
    message = "simpo_gamma: None there, 0.9 now"
    with pytest.raises(guard.SettingsChanged, match=message), guard.claim(changed):
        pass
