"""Train, save, and load in a fresh process: the run directory alone reproduces the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ctrlalign.inference.generation import GenerationConfig, generate
from ctrlalign.model.rundir import RunError, load_run, read_run_info
from ctrlalign.training import conditional, stage
from ctrlalign.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["What is two plus two?", "Tell me about dogs.", "Hi!"]
MAX_NEW = 8
#: name -> (method, stages, control kind, LM saved)
RUNS = {
    "lora-second": ("meet-lora", "second", "lora", True),
    "lora-first": ("meet-lora", "first", "lora", False),
    "soft-prompt-first": ("meet-prompt", "first", "soft-prompt", False),
    "token-first": ("meet-token", "first", "token", False),
    "token-second": ("special-token", "second", "token", True),
}

FRESH = """
import sys
from ctrlalign.cli import main
for job in sys.argv[1:]:
    run, prompts, out = job.split("|")
    args = ["generate", "--run", run, "--prompts", prompts, "--max-new-tokens", "{MAX_NEW}",
            "--output", out]
    assert main(args) == 0, job
""".replace("{MAX_NEW}", str(MAX_NEW))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pairwise_file, train_config):
    """Every run trained once: (run dir, the in-process model right after training)."""
    root = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    real_save_run = stage.save_run
    try:
        for name, (method, stages, _, _) in RUNS.items():
            captured = {}

            def capture(directory, model, tokenizer, *args, _c=captured, **kwargs):
                _c["model"], _c["tokenizer"] = model, tokenizer
                return real_save_run(directory, model, tokenizer, *args, **kwargs)

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(stage, "save_run", capture)
                config: TrainConfig = train_config(
                    f"pairwise:{pairwise_file}",
                    root / name,
                    method,
                    stages=stages,
                    max_examples=4,
                )
                run_dir = conditional.train(config)
            out[name] = (Path(run_dir), captured["model"], captured["tokenizer"])
    finally:
        torch.set_num_threads(threads)
    return out


def jobs_for(model) -> tuple[list[str], list[str]]:
    """Every prompt under every preference, mixed in one batch."""
    prefs = model.control.preferences
    return [p for p in PROMPTS for _ in prefs], [q for _ in PROMPTS for q in prefs]


@pytest.fixture(scope="module")
def fresh_answers(trained, tmp_path_factory):
    """Generations from one new Python process running ``ctrlalign generate`` per run."""
    root = tmp_path_factory.mktemp("fresh")
    jobs, where = [], {}
    for name, (run_dir, model, _) in trained.items():
        prompts = root / f"{name}-prompts.jsonl"
        prompts.write_text(
            "".join(
                json.dumps({"prompt": p, "preference": q}) + "\n"
                for p, q in zip(*jobs_for(model), strict=True)
            )
        )
        where[name] = root / f"{name}-answers.jsonl"
        jobs.append(f"{run_dir}|{prompts}|{where[name]}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, *jobs],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        name: [json.loads(line) for line in path.read_text().splitlines()]
        for name, path in where.items()
    }


@pytest.mark.parametrize("name", list(RUNS))
def test_fresh_process_generates_what_the_trained_model_did(
    name, trained, fresh_answers, tiny_model_dir, one_thread
):
    method, stages, kind, lm_saved = RUNS[name]
    run_dir, model, tok = trained[name]
    info = read_run_info(run_dir)
    assert info["control"] == kind and info["method"] == method
    assert info["lm_saved"] is lm_saved
    assert (run_dir / "model").is_dir() is lm_saved
    assert not (run_dir / "checkpoints").exists()
    if not lm_saved:  # a first-step run names its base model instead of copying it
        assert info["model"] == str(tiny_model_dir)

    prompts, prefs = jobs_for(model)
    expected = generate(model, tok, prompts, prefs, GenerationConfig(max_new_tokens=MAX_NEW))
    rows = fresh_answers[name]
    assert [(r["prompt"], r["preference"]) for r in rows] == list(zip(prompts, prefs, strict=True))
    assert [r["response"] for r in rows] == expected
    assert all(expected)
    assert expected[0] != expected[1] or expected[2] != expected[3] or kind == "lora"

    # and loaded here too, every tensor is the trained one
    loaded = load_run(run_dir)
    trained_params = dict(model.named_parameters())
    loaded_params = dict(loaded.model.named_parameters())
    assert set(loaded_params) == set(trained_params)
    for pname, value in trained_params.items():
        assert torch.equal(loaded_params[pname], value.detach()), pname


def test_control_files_and_run_info(trained):
    run_dir = trained["lora-second"][0]
    assert {p.name for p in (run_dir / "control" / "lora").iterdir() if p.is_dir()} == {
        "good",
        "bad",
    }
    info = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert info["preferences"] == ["good", "bad"] and info["stages_run"] == ["second"]
    assert (trained["soft-prompt-first"][0] / "control" / "soft_prompts.safetensors").is_file()
    assert (trained["token-first"][0] / "control" / "token_embeddings.safetensors").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_examples"] == 8


def test_load_run_rejects_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(RunError, match="not a run directory"):
        load_run(tmp_path)


def test_a_relative_model_folder_is_recorded_absolute(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tiny_model_dir.parent)
    config = TrainConfig(data="d", output="o", model=tiny_model_dir.name)
    assert config.model == str(tiny_model_dir.resolve())
    assert TrainConfig(model="tiny").model == "tiny"
    assert TrainConfig(model="org/not-a-local-folder").model == "org/not-a-local-folder"


def test_save_run_moves_run_yaml_last(trained, tmp_path, monkeypatch):
    """A crash while a run directory is being replaced leaves no run.yaml, so load_run
    refuses the half-moved directory instead of mixing old and new files."""
    from ctrlalign.model import rundir

    run_dir, model, tok = trained["lora-first"]
    target = tmp_path / "copy"
    rundir.save_run(target, model, tok, read_run_info(run_dir), {}, save_lm=False)
    real_replace = Path.replace

    def replace(self, dest):
        if Path(dest).name == "control":
            raise OSError("disk full")
        return real_replace(self, dest)

    monkeypatch.setattr(Path, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        rundir.save_run(target, model, tok, read_run_info(run_dir), {}, save_lm=False)
    assert not (target / "run.yaml").exists()
    with pytest.raises(RunError, match="not a run directory"):
        load_run(target)
    monkeypatch.setattr(Path, "replace", real_replace)
    rundir.save_run(target, model, tok, read_run_info(run_dir), {}, save_lm=False)
    assert read_run_info(target)["method"] == "meet-lora"
