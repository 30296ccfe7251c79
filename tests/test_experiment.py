"""``ctrlalign experiment``: a killed experiment resumes without redoing finished cells.

Kills are simulated by making training, then generation, raise partway; every rerun counts
what it trains and generates, so "not recomputed" is asserted, not assumed.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml
from kill_at import run_cli
from tiny_setup import FAST_RM, FAST_TRAIN, write_eval_prompts, write_pairs

from ctrlalign import experiment
from ctrlalign.data import load_preference_data, split_records
from ctrlalign.data.io import write_jsonl
from ctrlalign.evaluation import generations
from ctrlalign.evaluation.eval_data import (
    eval_set_apart_from_training,
    load_eval_set,
    prompts_trained_on,
)
from ctrlalign.evaluation.judges.rm import RewardModelJudge
from ctrlalign.experiment import ExperimentError, run_experiment
from ctrlalign.training import train_any
from ctrlalign.training.splits import DataSplit, load_splits

ROOT = Path(__file__).resolve().parents[1]


#: the real functions, wrapped afresh by each ``Counters`` (never a wrapper of a wrapper)
ORIGINALS = (
    experiment.train_any,
    experiment.train_reward_model,
    generations.generate,
    RewardModelJudge.score,
)


class Killed(RuntimeError):
    pass


def write_spec(folder: Path, **changes) -> Path:
    spec = {
        "model": "tiny",
        "data": {
            "train": write_pairs(folder / "pairs.jsonl"),
            "eval": write_eval_prompts(folder / "eval.jsonl"),
        },
        "train": {k: v for k, v in FAST_TRAIN.items() if k != "model"},
        "methods": {"coh": {"method": "coh"}, "lora": {"method": "meet-lora", "lora_rank": 1}},
        "baseline": "coh",
        "evaluation": {"temperatures": [0, 1], "max_new_tokens": 4, "batch_size": 2, "n_boot": 100},
        "judges": ["rm:trained"],
        "reward_model": {k: v for k, v in FAST_RM.items() if k != "model"},
        "scales": {"two": {"evaluation": {"max_examples": 2}}},
    } | changes
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


class Counters:
    """Wraps training, reward-model training, generation and scoring with call logs."""

    def __init__(self, monkeypatch) -> None:
        self.trained, self.rm_trained, self.generated, self.scored = [], [], [], []
        self.kill_training: str | None = None
        self.kill_generation_at: int | None = None
        train, train_rm, generate, score = ORIGINALS

        def counted_train(config):
            name = Path(config.output).name
            if name == self.kill_training:
                raise Killed(f"killed while training {name}")
            self.trained.append(name)
            return train(config)

        def counted_generate(*args, **kwargs):
            if len(self.generated) == self.kill_generation_at:
                raise Killed("killed while generating")
            self.generated.append(args[4].temperature)
            return generate(*args, **kwargs)

        def counted_score(judge, prompts, responses):
            self.scored.append(len(prompts))
            return score(judge, prompts, responses)

        monkeypatch.setattr(experiment, "train_any", counted_train)
        monkeypatch.setattr(
            experiment, "train_reward_model", lambda c: self.rm_trained.append(1) or train_rm(c)
        )
        monkeypatch.setattr(generations, "generate", counted_generate)
        monkeypatch.setattr(RewardModelJudge, "score", counted_score)


def test_killed_experiment_resumes_without_redoing_finished_cells(tmp_path, monkeypatch):
    spec, out = write_spec(tmp_path), tmp_path / "out"

    # 1. Killed while training the second method: the baseline run is done.
    first = Counters(monkeypatch)
    first.kill_training = "lora"
    with pytest.raises(Killed):
        run_experiment(spec, out)
    assert first.trained == ["coh"]
    coh_done = (out / "runs" / "coh" / "run.yaml").stat().st_mtime_ns
    assert not (out / "runs" / "lora" / "run.yaml").exists()

    # 2. Killed while generating: 4 prompts in batches of 2 is 2 batches per cell; cells go
    # lora t0, lora t1, coh t0, coh t1. The kill comes in lora t1's second batch.
    second = Counters(monkeypatch)
    second.kill_generation_at = 3
    with pytest.raises(Killed):
        run_experiment(spec, out)
    assert second.trained == ["lora"]
    assert second.rm_trained == [1]
    assert second.generated == [0, 0, 1]
    assert (out / "runs" / "coh" / "run.yaml").stat().st_mtime_ns == coh_done
    lora_t0 = out / "generations" / "lora_t0.jsonl"
    lora_t0_done = lora_t0.stat().st_mtime_ns

    # 3. The rerun trains nothing and generates only the 5 missing batches.
    third = Counters(monkeypatch)
    report = run_experiment(spec, out)
    assert (third.trained, third.rm_trained) == ([], [])
    assert third.generated == [1, 0, 0, 1, 1]
    assert lora_t0.stat().st_mtime_ns == lora_t0_done
    rows = list(csv.DictReader((out / "winrates.csv").open()))
    assert [(r["method"], r["judge"], r["temperature"]) for r in rows] == [
        ("lora", "rm:reward-model", "0"),
        ("lora", "rm:reward-model", "1"),
    ]
    assert "held-out pairwise accuracy" in report.read_text()
    assert yaml.safe_load((out / "experiment.yaml").read_text())["judges"] == [
        f"rm:{out / 'reward-model'}"
    ]

    # 4. Once finished, a rerun (here on fewer prompts, via a scale) does no work at all.
    fourth = Counters(monkeypatch)
    run_experiment(spec, out, scale="two")
    assert (fourth.trained, fourth.generated, fourth.scored) == ([], [], [])
    assert all(r["n"] == "2" for r in csv.DictReader((out / "winrates.csv").open()))

    # 5. --eval-data: the same table on another file of prompts (here three of the four)
    other = write_eval_prompts(tmp_path / "other.jsonl", n=3)
    report = run_experiment(spec, out, eval_data=other).read_text()
    assert f"evaluation data: `{other}`, 3 prompts;" in report
    # the machine, the precision each run trained in, what each dropped as too long
    assert "- machine: " in report and "in float32" in report
    assert "| Dropped (too long) | Precision |" in report and " | 0 | float32 | " in report
    answered = [json.loads(line) for line in (out / "eval_prompts.jsonl").read_text().splitlines()]
    assert [row["source"] for row in answered] == [f"other.jsonl:{i}" for i in (1, 2, 3)]
    assert all(row["reference"] for row in answered)

    # A done run is never reused under other settings.
    changed = write_spec(
        tmp_path,
        methods={"coh": {"method": "coh"}, "lora": {"method": "meet-lora", "lora_rank": 2}},
    )
    with pytest.raises(ExperimentError, match="lora_rank: trained with 1, asked for 2"):
        run_experiment(changed, out)
    # nor is the judge: its cached rewards would mix with the new judge's
    rm_settings = {k: v for k, v in FAST_RM.items() if k != "model"} | {"epochs": 7}
    with pytest.raises(ExperimentError, match="judge .* other settings .*epochs: trained with"):
        run_experiment(write_spec(tmp_path, reward_model=rm_settings), out)


@pytest.mark.parametrize(
    ("changes", "scale", "message"),
    [
        ({"methods": {"coh": {"method": "coh"}, "x": {"method": "nope"}}}, None, "unknown method"),
        ({"methods": {"coh": {"method": "coh", "lora_rnk": 2}}}, None, "unknown keys"),
        ({"baseline": "dpo"}, None, "not among `methods`"),
        ({"judges": ["bleu:x"]}, None, "expected rm:"),
        ({"evaluation": {"rouge": True}, "data": None}, None, "have no reference"),
        ({}, "huge", "no scale 'huge'"),
        ({"scales": {"part": {"only": ["coh", "lorax"]}}}, "part", "unknown methods .*lorax"),
        ({"scales": {"part": {"only": ["lora"]}}}, "part", "must keep the baseline 'coh'"),
    ],
)
def test_bad_experiments_fail_before_any_work(tmp_path, monkeypatch, changes, scale, message):
    if changes.get("data", "") is None:  # evaluation data without references
        changes["data"] = {
            "train": write_pairs(tmp_path / "pairs.jsonl"),
            "eval": write_eval_prompts(tmp_path / "plain.jsonl", references=False),
        }
    counters = Counters(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        run_experiment(write_spec(tmp_path, **changes), out, scale=scale)
    assert counters.trained == [] and not out.exists()


@pytest.mark.parametrize("problem", ["missing", "no references", "training prompts"])
def test_eval_data_is_checked_before_any_training(tmp_path, monkeypatch, problem):
    """--eval-data names prompts no run may have trained on: a missing file, one without
    the references ROUGE needs, or one holding training prompts fails before any work,
    naming the file and the problem."""
    spec = write_spec(tmp_path, evaluation={"rouge": True, "max_new_tokens": 4})
    path = tmp_path / "posts.jsonl"
    if problem == "no references":
        write_eval_prompts(path, references=False)
        message = f"prompts:{path}: ROUGE asked for, but 4 of its 4 evaluation prompts have no"
    elif problem == "training prompts":  # 16 pairs over 10 prompts; the split trains on 8
        pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
        rows = [{"prompt": row["prompt"], "reference": row["chosen"]} for row in pairs]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        message = f"prompts:{path}: 8 of its 10 prompts are training prompts of the runs (the "
        message += "first at posts.jsonl:1)"
    else:
        message = f"{path}: no such file"
    counters = Counters(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=re.escape(message)):
        run_experiment(spec, out, eval_data=f"prompts:{path}")
    assert counters.trained == [] and not out.exists()


def test_eval_data_is_refused_for_a_controllability_file(tmp_path):
    """A controllability experiment answers no evaluation prompts: --eval-data there is an
    error naming the flag and the file, before any training."""
    path = ROOT / "experiments" / "composition.yaml"
    out = tmp_path / "out"
    with pytest.raises(ExperimentError, match=re.escape(f"--eval-data: {path} measures")):
        run_experiment(path, out, scale="small", eval_data="prompts:posts.jsonl")
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "experiments").glob("*.yaml")))
def test_shipped_experiments_are_valid(name, tmp_path):
    """Every shipped file and scale parses into valid training configs and judges."""
    path = ROOT / "experiments" / name
    for scale in [None, *yaml.safe_load(path.read_text()).get("scales", {})]:
        spec = experiment.load_spec(path, scale)
        configs = experiment.train_configs(spec, tmp_path)
        if "controllability" in spec:
            assert len(spec["controllability"]["axes"]) == 2
            continue
        assert spec["baseline"] in configs
        experiment.eval_options(spec)
        experiment.reward_model_config(spec, tmp_path).validate()


def test_a_scales_only_runs_those_methods_in_its_order(tmp_path):
    spec = {"methods": {"coh": {"method": "coh"}, "sft": {"method": "sft"}, "lora": {}}}
    spec["scales"] = {"part": {"only": ["lora", "coh"]}}
    path = write_spec(tmp_path, **spec)
    assert set(experiment.load_spec(path)["methods"]) == {"coh", "sft", "lora"}
    part = experiment.load_spec(path, "part")
    assert list(part["methods"]) == ["lora", "coh"] and "only" not in part
    medium = experiment.load_spec(ROOT / "experiments" / "paper_table1_tldr.yaml", "medium")
    assert {"coh", "sft", "dpo", "meet-lora-4-first-only", "meet-lora-4-second-only"} < set(
        medium["methods"]
    )
    assert medium["train"]["max_examples"] >= 128 and medium["evaluation"]["max_examples"] >= 200


def test_the_large_table_answers_600_posts_no_row_trained_on():
    """The large scale's rows and sizes (issue 29), and its posts: the 1000 pairs' posts are
    among the 1300 posts; holding 470 pairs out, the 530-record training split (of which the
    rows train on 512, the judge on all) leaves 770 posts nothing trained on, 600 answered."""
    spec = experiment.load_spec(ROOT / "experiments" / "paper_table1_tldr.yaml", "large")
    assert set(spec["methods"]) == {
        "coh", "sft", "dpo", "meet-prompt-50", "meet-lora-4", "meet-lora-4-first-only",
        "meet-lora-4-second-only",
    }  # fmt: skip
    configs = experiment.train_configs(spec, ROOT / "unused")
    assert {(c.max_examples, c.lr_first, c.lr_second) for c in configs.values()} == {
        (512, 1e-3, 2e-5)
    }
    trained, notes = prompts_trained_on(DataSplit.of(c.to_dict()) for c in configs.values())
    assert notes == [] and len(trained) == 530
    every = load_eval_set(spec["data"]["eval"], None, trained)
    assert (len(every.records), every.seen_in_training) == (770, 530)
    eval_set = load_eval_set(spec["data"]["eval"], 600, trained)
    assert len(eval_set.records) == 600 and eval_set.has_references


def test_evaluation_leaves_out_what_a_run_on_a_preference_subset_trained_on(tmp_path, train_config):
    """A run that kept some preferences of pointwise data loses the prompts left with no
    response, which moves its split: the prompts evaluation leaves out come from the run's
    own selection and load options (its info), not from the data file alone."""
    rows = [{"prompt": f"post {i}", "response": f"summary {i}", "score": i} for i in range(30)]
    data = tmp_path / "scores.jsonl"
    write_jsonl(data, rows)
    config = train_config(
        f"scores:{data}",
        tmp_path / "run",
        "meet-prompt",
        levels=3,
        preferences=["level-0", "level-2"],
        eval_fraction=0.3,
        max_steps=1,
    )
    run = generations.RunRef.read("run", train_any(config))
    trained = {r.messages for r in load_splits(config)[0].records}
    assert len(trained) == 14  # 20 prompts kept, 6 held out

    prompts = tmp_path / "posts.jsonl"
    write_jsonl(prompts, [{"prompt": row["prompt"]} for row in rows])
    eval_set, notes = eval_set_apart_from_training(
        f"prompts:{prompts}", None, [DataSplit.of(run.info)], refuse_overlap=False
    )
    assert notes == [] and eval_set.seen_in_training == len(trained)
    assert not {r.messages for r in eval_set.records} & trained
    # the data file split without the run's selection would leave out other prompts
    whole, _ = split_records(load_preference_data(f"scores:{data}", levels=3), 0.3, config.seed)
    assert {r.messages for r in whole.records} != trained


def test_only_real_setting_changes_block_reuse():
    """What the data resolved (all preferences; no chosen/rejected pair) and settings added
    after a run was trained are not differences; asking for all records instead of 512 is."""
    stored = {
        "preferences": ["concise", "detailed"],
        "chosen": None,
        "rejected": None,
        "max_examples": 512,
        "lora_rank": 2,
        "output": "/elsewhere",
    }
    wanted = {
        "preferences": None,
        "chosen": "good",
        "rejected": "bad",
        "max_examples": None,
        "lora_rank": 2,
        "max_eval_examples": 256,
        "output": "runs/x",
    }
    assert experiment._differences(stored, wanted) == [
        "max_examples: trained with 512, asked for None"
    ]


def test_kill_9_mid_training_then_the_same_command_gives_the_same_report(tmp_path):
    """A real SIGKILL at the second training micro-batch (the baseline's one step is done,
    the second method's is not): the rerun of the same command trains, judges and reports
    what an uninterrupted experiment does."""
    spec = write_spec(tmp_path)

    def experiment_argv(out: Path) -> list[str]:
        return ["experiment", str(spec), "--output", str(out)]

    reference = run_cli(*experiment_argv(tmp_path / "reference"), timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    out = tmp_path / "killed"
    killed = run_cli(*experiment_argv(out), kill=("step", 2), timeout=900)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (out / "runs" / "coh" / "run.yaml").exists()
    assert not (out / "runs" / "lora" / "run.yaml").exists()
    assert not (out / "winrates.md").exists()
    rerun = run_cli(*experiment_argv(out), timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for name in ("winrates.csv", "winrates.md"):
        assert (out / name).read_text() == (tmp_path / "reference" / name).read_text(), name


def test_composition_smoke_measures_every_run_and_resumes(tmp_path, caplog):
    """The shipped composition file at its smoke scale: both methods trained, measured,
    reported; a second run reuses everything; other settings are refused, never mixed."""
    path = ROOT / "experiments" / "composition.yaml"
    out = tmp_path / "out"
    report = experiment.run_experiment(path, out, scale="smoke")
    text = report.read_text()
    for name in ("meet-lora", "meet-prompt"):
        assert f"## {name}" in text
        folder = out / "controllability" / name
        assert (folder / "pareto.png").is_file() and (folder / "settings.yaml").is_file()
        combos = (folder / "combinations.csv").read_text()
        assert "detailed+warm" in combos and "True" in combos  # held out, marked
    assert "| combination | length | tone |" in text
    with caplog.at_level("INFO"):
        experiment.run_experiment(path, out, scale="smoke")
    assert "controllability already measured, reused" in caplog.text
    assert "already trained, skipped" in caplog.text
    changed = tmp_path / "changed.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["scales"]["smoke"]["controllability"]["alphas"] = [0, 1]
    changed.write_text(yaml.safe_dump(spec))
    with pytest.raises(experiment.ExperimentError, match="other settings \\(alphas\\)"):
        experiment.run_experiment(changed, out, scale="smoke")
