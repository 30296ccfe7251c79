"""``ctrlalign evaluate`` end to end on tiny runs, and its refusals of bad input.

Judges: a reward model trained with ``train-rm`` on the tiny model, and the LLM judge
against a local OpenAI-compatible server. Bad input must fail before any work and leave
the output folder unwritten.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from kill_at import run_cli
from openai_server import StubServer, closed_port_url
from tiny_setup import FAST_RM, FAST_TRAIN, write_eval_prompts, write_pairs

from ctrlalign.cli import main
from ctrlalign.evaluation import generations
from ctrlalign.evaluation.runner import EvalOptions, EvaluationSetupError, evaluate, prepare
from ctrlalign.model.rundir import RunError
from ctrlalign.training import TrainConfig, train_any
from ctrlalign.training.reward_model import RewardModelConfig, train_reward_model

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_pairs(root / "pairs.jsonl")
    runs = {}
    for name, method in [("coh", {"method": "coh"})] + [
        (f"lora-r{rank}", {"method": "meet-lora", "lora_rank": rank}) for rank in (1, 2)
    ]:
        config = {**FAST_TRAIN, **method, "data": data, "output": str(root / name)}
        runs[name] = train_any(TrainConfig(**config))
    rm = train_reward_model(RewardModelConfig(data=data, output=str(root / "rm"), **FAST_RM))
    server = StubServer()
    yield {
        "root": root,
        "runs": runs,
        "rm": rm,
        "server": server,
        "eval": write_eval_prompts(root / "eval.jsonl"),
        "eval_no_refs": write_eval_prompts(root / "eval_plain.jsonl", references=False),
    }
    server.close()


def options(**overrides) -> EvalOptions:
    values = {
        "temperatures": [0.0, 1.0],
        "max_new_tokens": 6,
        "batch_size": 4,
        "judge_model": "stub",
        "n_boot": 200,
    }
    return EvalOptions(**(values | overrides))


def candidates(setup) -> dict:
    return {name: path for name, path in setup["runs"].items() if name != "coh"}


def test_end_to_end_report_and_free_rerun(setup, tmp_path, monkeypatch):
    judges = [f"rm:{setup['rm']}", f"llm:{setup['server'].url}"]
    out = tmp_path / "report"
    report = evaluate(
        candidates(setup), ("coh", setup["runs"]["coh"]), setup["eval"], judges, out, options()
    )

    rows = list(csv.DictReader((out / "winrates.csv").open()))
    assert len(rows) == 2 * 2 * 2  # judges x temperatures x candidates
    assert {(r["method"], r["judge"], r["temperature"]) for r in rows} == {
        (m, j, t) for m in ("lora-r1", "lora-r2") for j in ("rm:rm", "llm:stub") for t in "01"
    }
    for row in rows:
        shares = float(row["win_pct"]) + float(row["lose_pct"]) + float(row["tie_pct"])
        assert shares == pytest.approx(100.0)
        assert float(row["delta_pct"]) == pytest.approx(
            float(row["win_pct"]) - float(row["lose_pct"])
        )
        assert row["n"] == "4"
        assert float(row["ci_low"]) <= float(row["delta_pct"]) <= float(row["ci_high"])
    rouge = list(csv.DictReader((out / "rouge.csv").open()))
    assert [(r["method"], r["temperature"]) for r in rouge] == [
        (m, t) for t in "01" for m in ("lora-r1", "lora-r2", "coh")
    ]
    # each run against the baseline, paired by post, from the cached answers' own ROUGE-L
    answers = {(r["method"], r["temperature"]): r for r in rouge}
    for (method, temperature), row in answers.items():
        if method == "coh":
            assert row["rougeL_vs_baseline"] == "—"
            continue
        low, mean, high = (float(row[k]) for k in ("ci_low", "rougeL_vs_baseline", "ci_high"))
        assert low <= mean <= high
        # the mean of per-post differences is the difference of the means
        base = float(answers["coh", temperature]["rougeL"])
        assert mean == pytest.approx(float(row["rougeL"]) - base, abs=0.011)  # 2 decimals each
    for name in ("delta_vs_temperature.png", "delta_vs_lora_rank.png", "rouge_l_vs_baseline.png"):
        assert (out / name).read_bytes().startswith(PNG)
    assert not (out / "delta_vs_prompt_length.png").exists()  # no soft-prompt runs
    text = report.read_text()
    assert "Rouge-L" in text and "coh (baseline)" in text and "held-out pairwise accuracy" in text
    training = text.split("## Training")[1].split("##")[0]
    for name, run in setup["runs"].items():  # each run's time and peak memory, as it saved
        metrics = json.loads((Path(run) / "metrics.json").read_text())
        steps = "+".join(yaml.safe_load((Path(run) / "run.yaml").read_text())["stages_run"])
        assert f"| {name} | {steps} | {metrics['train_examples']} | " in training
        assert f"| {metrics['peak_rss_gib']} | {metrics['eval_loss']:.3f} |" in training
    assert len(list((out / "generations").glob("*.jsonl"))) == 3 * 2

    # A rerun generates nothing and asks the LLM judge nothing: everything is cached.
    requests = len(setup["server"].requests)
    calls = []
    monkeypatch.setattr(generations, "generate", lambda *a, **k: calls.append(a) or [])
    evaluate(
        candidates(setup), ("coh", setup["runs"]["coh"]), setup["eval"], judges, out, options()
    )
    assert calls == []
    assert len(setup["server"].requests) == requests
    assert list(csv.DictReader((out / "winrates.csv").open())) == rows
    monkeypatch.undo()

    # Verdicts are the candidate's: mark one run's answers as the stub judge's favourite.
    answers = generations.GenerationStore.answers

    def marked(self, run, temperature, records, loaded):
        texts = answers(self, run, temperature, records, loaded)
        return [f"{text} MARKER" if run.name == "lora-r2" else text for text in texts]

    monkeypatch.setattr(generations.GenerationStore, "answers", marked)
    llm_only = [f"llm:{setup['server'].url}"]
    evaluate(
        candidates(setup), ("coh", setup["runs"]["coh"]), setup["eval"], llm_only, out, options()
    )
    deltas = {
        (r["method"], r["temperature"]): float(r["delta_pct"])
        for r in csv.DictReader((out / "winrates.csv").open())
    }
    # lora-r2 always wins; lora-r1 only meets the stub's position bias, a tie both ways.
    assert deltas == {
        ("lora-r2", "0"): 100.0,
        ("lora-r2", "1"): 100.0,
        ("lora-r1", "0"): 0.0,
        ("lora-r1", "1"): 0.0,
    }


def test_cli_evaluate(setup, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["evaluate", "--runs", str(setup["runs"]["lora-r1"]), "--baseline"]
    args += [str(setup["runs"]["coh"]), "--data", setup["eval"], "--judge", f"rm:{setup['rm']}"]
    args += ["--temperatures", "0", "--max-new-tokens", "4", "--output", str(out)]
    assert main(args) == 0
    assert "lora-r1" in (out / "winrates.md").read_text()
    assert "report written to" in capsys.readouterr().out


def bad_input_cases(setup, tmp_path):
    runs, eval_data = candidates(setup), setup["eval"]
    rm = f"rm:{setup['rm']}"
    not_a_run = tmp_path / "not-a-run"
    not_a_run.mkdir()
    return {
        "unknown judge kind": (runs, eval_data, ["gpt4:http://x"], {}, "expected rm:"),
        "unreachable endpoint": (
            runs,
            eval_data,
            [rm, f"llm:{closed_port_url()}"],
            {},
            "unreachable",
        ),
        "rouge without references": (
            runs,
            setup["eval_no_refs"],
            [rm],
            {"rouge": True},
            "ROUGE needs a reference",
        ),
        "not a run directory": (
            {**runs, "stray": not_a_run},
            eval_data,
            [rm],
            {},
            "not a run directory",
        ),
        "missing reward model": (runs, eval_data, [f"rm:{tmp_path / 'none'}"], {}, "neither"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "unknown judge kind",
        "unreachable endpoint",
        "rouge without references",
        "not a run directory",
        "missing reward model",
    ],
)
def test_bad_input_fails_before_any_work(setup, tmp_path, monkeypatch, case):
    runs, data, judges, overrides, message = bad_input_cases(setup, tmp_path)[case]
    monkeypatch.setattr(generations, "generate", lambda *a, **k: pytest.fail("generated"))
    out = tmp_path / "report"
    with pytest.raises((EvaluationSetupError, RunError), match=message):
        prepare(runs, ("coh", setup["runs"]["coh"]), data, judges, out, options(**overrides))
    assert not out.exists()


def test_cli_reports_bad_input_as_an_error(setup, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["evaluate", "--runs", str(tmp_path), "--baseline", str(setup["runs"]["coh"])]
    args += ["--data", setup["eval"], "--judge", "rm:x", "--output", str(out)]
    assert main(args) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert not out.exists()


def test_kill_9_mid_evaluation_then_the_same_command_gives_the_same_report(setup, tmp_path):
    """A real SIGKILL before the second batch of answers: the rerun generates only what is
    missing and writes the report an uninterrupted evaluation writes."""

    def evaluate_argv(out):
        args = ["evaluate", "--runs", str(setup["runs"]["lora-r1"]), "--baseline"]
        args += [str(setup["runs"]["coh"]), "--data", setup["eval"], "--judge"]
        args += [f"rm:{setup['rm']}", "--temperatures", "0,1", "--max-new-tokens", "4"]
        return [*args, "--batch-size", "2", "--output", str(out)]

    reference = run_cli(*evaluate_argv(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "killed"
    killed = run_cli(*evaluate_argv(out), kill=("generate", 3))
    assert killed.returncode == -9, killed.stderr
    assert not (out / "winrates.md").exists()
    rerun = run_cli(*evaluate_argv(out))
    assert rerun.returncode == 0, rerun.stderr
    for name in ("winrates.csv", "winrates.md"):
        assert (out / name).read_text() == (tmp_path / "reference" / name).read_text(), name


def test_attribute_judge_reports_each_runs_mean_with_its_interval(setup, tmp_path):
    """attr:length's mean is the mean word count the ROUGE table shows for the same answers."""
    out = tmp_path / "report"
    runs = candidates(setup)
    evaluate(runs, ("coh", setup["runs"]["coh"]), setup["eval"], ["attr:length"], out, options())
    rows = list(csv.DictReader((out / "attributes.csv").open()))
    words = {
        (r["method"], r["temperature"]): float(r["words"])
        for r in csv.DictReader((out / "rouge.csv").open())
    }
    assert {(r["method"], r["temperature"]) for r in rows} == set(words)
    for row in rows:
        mean, low, high = (float(row[k]) for k in ("mean", "ci_low", "ci_high"))
        assert row["judge"] == "attr:length" and row["n"] == "4"
        assert mean == pytest.approx(words[row["method"], row["temperature"]], abs=0.05)
        assert low <= mean <= high
    assert "## Attributes" in (out / "report.md").read_text()
