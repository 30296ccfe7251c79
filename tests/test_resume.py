"""An interrupted stage resumes from its last checkpoint and ends where an uninterrupted
run ends; a finished stage is loaded, not retrained; a run's time and peak memory count
every sitting."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from ctrlalign.data import load_preference_data
from ctrlalign.model.layout import collate, encode_records
from ctrlalign.model.rundir import RUN_FILE
from ctrlalign.training import conditional, stage, train_any
from ctrlalign.training.checkpoints import STAGE_DONE_FILE, TRAINABLE_FILE, read_record
from ctrlalign.training.config import ONLY_STEP
from ctrlalign.training.objectives import ConditionalLMObjective
from ctrlalign.training.preference import REFERENCE_FILE
from ctrlalign.training.stage import run_stage
from ctrlalign.training.trainer import ControlTrainer, training_arguments

pytestmark = pytest.mark.usefixtures("one_thread")


class Interrupt(TrainerCallback):
    """Ctrl-C right after the checkpoint of step ``at`` is written."""

    def __init__(self, at: int):
        self.at = at

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt


class Steps(TrainerCallback):
    def __init__(self):
        self.seen: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append(state.global_step)


def trainer_with(*callbacks):
    class Trainer(ControlTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for cb in callbacks:
                self.add_callback(cb)

    return Trainer


def soft_prompt_setup(controlled, records):
    model, tok = controlled("soft-prompt")
    examples = encode_records(records, tok, model.control, 128).examples
    return model, examples, partial(collate, pad_id=tok.pad_token_id)


@pytest.fixture
def records(pairwise_file):
    return load_preference_data(f"pairwise:{pairwise_file}").records


def test_run_stage_resumes_from_last_checkpoint(controlled, records, tmp_path, train_config):
    config = train_config(
        "unused", tmp_path, "meet-prompt", batch_size=4, micro_batch_size=2, save_steps=1
    )

    def stage(name, trainer_cls=ControlTrainer):
        model, dataset, collator = soft_prompt_setup(controlled, records)
        args = training_arguments(config, tmp_path / name, lr=1e-2, epochs=1)
        objective = ConditionalLMObjective(model)
        metrics = run_stage(
            objective,
            [model.control.prompts],
            tmp_path / name,
            args,
            dataset,
            collator,
            trainer_cls,
        )
        return model, metrics

    start = soft_prompt_setup(controlled, records)[0].control.prompts.detach().clone()
    steps = Steps()
    reference, _ = stage("reference", trainer_with(steps))
    assert steps.seen == [1, 2, 3, 4]  # 16 examples, batch 4 (2 micro-batches of 2)
    assert not torch.allclose(reference.control.prompts, start, atol=1e-4)

    with pytest.raises(KeyboardInterrupt):
        stage("run", trainer_with(Interrupt(at=2)))
    ckpts = sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*"))
    assert ckpts == ["checkpoint-2"]  # save_total_limit keeps only the last
    ckpt = tmp_path / "run" / "checkpoint-2"
    assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == 2
    assert set(load_file(str(ckpt / TRAINABLE_FILE))) == {"model.control.prompts"}
    assert not (tmp_path / "run" / STAGE_DONE_FILE).exists()

    steps = Steps()
    resumed, metrics = stage("run", trainer_with(steps))
    assert steps.seen == [3, 4], "the rerun must continue at step 3"
    assert metrics["log_history"][-1]["step"] == 4
    assert (tmp_path / "run" / STAGE_DONE_FILE).exists()
    assert torch.allclose(resumed.control.prompts, reference.control.prompts, atol=1e-6)

    # a finished stage is loaded from final.safetensors instead of trained again
    steps = Steps()
    again, metrics = stage("run", trainer_with(steps))
    assert metrics["resumed_finished_stage"] is True and steps.seen == []
    assert torch.equal(again.control.prompts, resumed.control.prompts)
    assert metrics["seconds_earlier_sittings"] == metrics["seconds"] > 0

    # one written before stages kept their metrics (no metadata) still loads, carrying no time
    done = tmp_path / "run" / STAGE_DONE_FILE
    save_file(load_file(str(done)), str(done))
    old, metrics = stage("run", trainer_with(Steps()))
    assert torch.equal(old.control.prompts, resumed.control.prompts)
    assert metrics["seconds_earlier_sittings"] == 0.0 and "seconds" not in metrics


def test_interrupted_meet_run_resumes_with_same_output_dir(
    monkeypatch, tmp_path, pairwise_file, train_config
):
    def config(out):
        return train_config(
            f"pairwise:{pairwise_file}",
            out,
            "meet-prompt",
            stages="both",
            max_examples=4,
            batch_size=2,
            micro_batch_size=2,
            save_steps=1,
            keep_checkpoints=True,
        )

    conditional.train(config(tmp_path / "reference"))
    reference = load_file(str(tmp_path / "reference" / "checkpoints" / "second" / STAGE_DONE_FILE))

    seen: dict[str, Steps] = {}

    def spy(model, params, stage_dir, args, dataset, collator, trainer_cls=ControlTrainer):
        seen[stage_dir.name] = Steps()
        callbacks = [seen[stage_dir.name]]
        if interrupt and stage_dir.name == "second":
            callbacks.append(Interrupt(at=2))
        return run_stage(
            model, params, stage_dir, args, dataset, collator, trainer_with(*callbacks)
        )

    monkeypatch.setattr(stage, "run_stage", spy)
    out = tmp_path / "run"
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        conditional.train(config(out))
    assert seen["first"].seen == [1, 2, 3, 4] and seen["second"].seen == [1, 2]
    assert not (out / "run.yaml").exists(), "an interrupted run must not look finished"

    # what the first sitting measured and a second cannot: the first step's metrics, the
    # second step's seconds up to its checkpoint
    first = read_record(out / "checkpoints" / "first" / STAGE_DONE_FILE)
    before = read_record(out / "checkpoints" / "second" / "checkpoint-2" / TRAINABLE_FILE)
    assert first["seconds"] > 0 and first["log_history"][-1]["step"] == 4
    assert before["seconds"] > 0

    interrupt = False
    conditional.train(config(out))
    assert seen["first"].seen == [], "the finished first step must be loaded, not retrained"
    assert seen["second"].seen == [3, 4]
    metrics = json.loads((out / "metrics.json").read_text())
    stages = metrics["stages"]
    assert stages["first"]["resumed_finished_stage"] is True
    for key in ("seconds", "train_runtime", "log_history", "peak_rss_gib"):
        assert stages["first"][key] == first[key], key
    assert stages["first"]["seconds_earlier_sittings"] == first["seconds"]
    assert stages["second"]["seconds_earlier_sittings"] == round(before["seconds"], 1)
    assert stages["second"]["seconds"] > stages["second"]["seconds_earlier_sittings"]
    # this sitting's time plus both earlier parts (each rounded to 0.1 s)
    assert metrics["seconds"] >= first["seconds"] + stages["second"]["seconds"] - 0.2
    assert metrics["peak_rss_gib"] >= first["peak_rss_gib"]
    final = load_file(str(out / "checkpoints" / "second" / STAGE_DONE_FILE))
    assert set(final) == set(reference)
    for name, value in reference.items():
        assert torch.allclose(final[name], value, atol=1e-6), name


def test_resumed_dpo_run_counts_the_reference_pass_an_earlier_sitting_ran(
    tmp_path, pairwise_file, train_config
):
    config = train_config(
        f"pairwise:{pairwise_file}", tmp_path / "run", "dpo", max_steps=1, keep_checkpoints=True
    )
    out = train_any(config)
    first = json.loads((out / "metrics.json").read_text())
    assert first["reference_seconds_earlier_sittings"] == 0.0
    # the cache keeps what each pass (training pairs, held-out pairs) took
    passes = read_record(out / "checkpoints" / REFERENCE_FILE)["seconds"]
    assert len(passes) == 2 and all(s > 0 for s in passes.values())

    # killed after the stage finished, before the run was written: the next sitting finds
    # both the stage and the reference log-probs done, and counts the time they took
    (out / RUN_FILE).unlink()
    train_any(config)
    second = json.loads((out / "metrics.json").read_text())
    earlier = round(sum(passes.values()), 1)
    assert second["reference_seconds_earlier_sittings"] == earlier
    assert second["reference_seconds"] >= earlier
    main = second["stages"][ONLY_STEP]
    assert main["resumed_finished_stage"] is True
    # this sitting's wall time plus both earlier parts (each rounded to 0.1 s)
    assert second["seconds"] >= main["seconds"] + earlier - 0.1
