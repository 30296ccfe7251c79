"""`ctrlalign train` / `ctrlalign generate`: YAML configs, clear errors that write nothing,
and a 3-level scores run that trains and answers at every level in one mixed batch."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ctrlalign.cli import main
from ctrlalign.model.rundir import load_run

pytestmark = pytest.mark.usefixtures("one_thread")


def small_flags(model_dir) -> list[str]:
    return [
        "--model",
        str(model_dir),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--micro-batch-size",
        "4",
        "--max-length",
        "128",
        "--eval-fraction",
        "0",
        "--save-steps",
        "1000",
        "--logging-steps",
        "1000",
    ]


@pytest.fixture(scope="module")
def soft_run(tmp_path_factory, pairwise_file, tiny_model_dir):
    """A run trained from a YAML file whose keys the flags partly override."""
    root = tmp_path_factory.mktemp("cli")
    config = {
        "data": f"pairwise:{pairwise_file}",
        "method": "meet-prompt",
        "model": str(tiny_model_dir),
        "stages": "first",
        "soft-prompt-length": 5,  # dashed keys, as on the command line
        "max_examples": 3,
        "epochs": 1,
        "batch_size": 8,
        "micro_batch_size": 2,
        "max_length": 128,
        "eval_fraction": 0.0,
        "output": str(root / "from-yaml"),
        "save_steps": 1000,
    }
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(
            [
                "train",
                "--config",
                str(path),
                "--soft-prompt-length",
                "2",
                "--batch-size",
                "4",
                "--output",
                str(root / "run"),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    return root


def test_yaml_config_with_flag_overrides(soft_run):
    assert not (soft_run / "from-yaml").exists(), "--output must override the file"
    run = soft_run / "run"
    info = yaml.safe_load((run / "run.yaml").read_text())
    assert info["soft_prompt_length"] == 2 and info["batch_size"] == 4  # flags win
    assert info["method"] == "meet-prompt" and info["stages"] == "first"  # from the file
    assert info["max_examples"] == 3 and info["micro_batch_size"] == 2
    prompts = load_file(str(run / "control" / "soft_prompts.safetensors"))["prompts"]
    assert tuple(prompts.shape[:2]) == (2, 2)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_examples"] == 6  # 3 records x 2 preferences
    assert metrics["stages"]["first"]["log_history"][-1]["step"] == 2  # 6 / batch 4 -> 2


def test_generate_prints_and_writes_answers(soft_run, prompts_file, tmp_path, capsys, caplog):
    out = tmp_path / "answers.jsonl"
    caplog.set_level("INFO", logger="ctrlalign.cli.generate")
    rc = main(
        [
            "generate",
            "--run",
            str(soft_run / "run"),
            "--prompts",
            str(prompts_file),
            "--prompt",
            "One more?",
            "--preference",
            "bad",
            "--max-new-tokens",
            "4",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows][0] == "One more?" and len(rows) == 4
    assert all(r["preference"] == "bad" and r["response"] for r in rows)
    # the decoding's own time and throughput, over the answers' tokens
    [logged] = [r.getMessage() for r in caplog.records if r.name == "ctrlalign.cli.generate"]
    tokenizer = load_run(soft_run / "run").tokenizer
    tokens = sum(len(tokenizer(r["response"], add_special_tokens=False).input_ids) for r in rows)
    assert re.fullmatch(
        rf"generated 4 answers \({tokens} tokens\) in [\d.]+ s: [\d.]+ tokens/s", logged
    )
    # chat messages work as prompts too, each line with its own preference
    chats = tmp_path / "chats.jsonl"
    chats.write_text(
        json.dumps({"prompt": [{"role": "user", "content": "Hi"}], "preference": "good"}) + "\n"
    )
    assert (
        main(
            [
                "generate",
                "--run",
                str(soft_run / "run"),
                "--prompts",
                str(chats),
                "--preference",
                "bad",
                "--max-new-tokens",
                "4",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    row = json.loads(out.read_text())
    assert row["preference"] == "good" and row["response"]
    # without --preference the run's chosen preference answers
    assert (
        main(
            ["generate", "--run", str(soft_run / "run"), "--prompt", "Hi", "--max-new-tokens", "2"]
        )
        == 0
    )
    printed = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert printed[-1]["preference"] == "good"


def run_cli(args, capsys) -> str:
    assert main(args) == 2
    return capsys.readouterr().err


def test_train_errors_are_clear_and_write_nothing(tmp_path, pairwise_file, tiny_model_dir, capsys):
    out = tmp_path / "out"
    data = ["--data", f"pairwise:{pairwise_file}", "--output", str(out)]
    err = run_cli(["train", *data, "--method", "magic"], capsys)
    assert "unknown method 'magic'" in err and "meet-lora" in err
    assert not out.exists()

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("method: meet-lora\nlr: 0.1\n")
    err = run_cli(["train", "--config", str(bad_yaml), *data], capsys)
    assert "unknown keys ['lr']" in err and str(bad_yaml) in err
    assert not out.exists()

    # a rate the method would not use is refused, not ignored
    err = run_cli(["train", *data, "--method", "meet-lora", "--learning-rate", "0.1"], capsys)
    assert "--learning-rate is the rate of dpo and clm" in err and "--lr-second" in err
    assert not out.exists()

    err = run_cli(
        [
            "train",
            "--data",
            f"pairwise:{tmp_path / 'missing.jsonl'}",
            "--output",
            str(out),
            *small_flags(tiny_model_dir),
        ],
        capsys,
    )
    assert "missing.jsonl" in err
    assert not out.exists()

    err = run_cli(["train", *data, "--model", str(tmp_path / "no-model")], capsys)
    assert "no-model" in err and "no such folder" in err
    assert not out.exists()

    err = run_cli(["train", *data, *small_flags(tiny_model_dir), "--max-length", "8"], capsys)
    assert "max_length=8" in err
    assert not out.exists()

    err = run_cli(["train", *data, "--method", "coh", "--stages", "first"], capsys)
    assert "first step" in err
    assert not out.exists()

    err = run_cli(["train", *data, "--max-eval-examples", "0"], capsys)
    assert "--max-eval-examples must be >= 1, got 0" in err
    assert not out.exists()

    err = run_cli(["train", *data, "--report-to", "tensorboard,nonsense"], capsys)
    assert "--report-to nonsense: choose from" in err and "wandb" in err
    assert not out.exists()

    err = run_cli(["train", *data, "--device", "tpu"], capsys)
    assert "--device must be auto, cpu or cuda[:N] to train, got 'tpu'" in err
    assert not out.exists()

    # found only once the control is built, after the output was claimed: nothing stays
    flags = [*small_flags(tiny_model_dir), "--method", "meet-prompt"]
    err = run_cli(["train", *data, *flags, "--soft-prompt-init", "fine=A fine answer"], capsys)
    assert "soft prompt init for unknown preferences ['fine']" in err
    assert not out.exists()


def test_generate_errors_are_clear_and_write_nothing(soft_run, tmp_path, prompts_file, capsys):
    run = str(soft_run / "run")
    out = tmp_path / "answers.jsonl"
    gen = ["generate", "--output", str(out), "--max-new-tokens", "2"]

    err = run_cli(
        [*gen, "--run", run, "--prompts", str(prompts_file), "--preference", "excellent"], capsys
    )
    assert "unknown preference 'excellent'" in err and "good" in err
    assert not out.exists()

    per_row = tmp_path / "per-row.jsonl"
    per_row.write_text(
        '{"prompt": "a", "preference": "good"}\n{"prompt": "b", "preference": "meh"}\n'
    )
    err = run_cli([*gen, "--run", run, "--prompts", str(per_row)], capsys)
    assert "unknown preference 'meh'" in err
    assert not out.exists()

    (tmp_path / "empty").mkdir()
    for not_a_run in (tmp_path / "empty", tmp_path / "nowhere"):
        err = run_cli([*gen, "--run", str(not_a_run), "--prompt", "hi"], capsys)
        assert "not a run directory" in err and str(not_a_run) in err
        assert not out.exists()

    malformed = tmp_path / "prompts.jsonl"
    malformed.write_text('{"prompt": "fine"}\n{"question": "where is the prompt?"}\n')
    err = run_cli([*gen, "--run", run, "--prompts", str(malformed)], capsys)
    assert "line 2" in err and "'prompt'" in err and str(malformed) in err
    assert not out.exists()

    malformed.write_text('{"prompt": "fine"}\n{"prompt": ["not", "messages"]}\n')
    err = run_cli([*gen, "--run", run, "--prompts", str(malformed)], capsys)
    assert "line 2" in err and "'prompt'" in err
    malformed.write_text('{"prompt": "fine", "preference": 3}\n')
    err = run_cli([*gen, "--run", run, "--prompts", str(malformed)], capsys)
    assert "line 1" in err and "'preference'" in err
    malformed.write_text('{"prompt": "fine"}\n\n{not json\n')
    err = run_cli([*gen, "--run", run, "--prompts", str(malformed)], capsys)
    assert "line 3" in err
    assert not out.exists()

    # no room for a row would decode forever: refused, naming the flag, before any loading
    for flag, value in (("--batch-size", "0"), ("--max-new-tokens", "0"), ("--top-p", "1.5")):
        err = run_cli([*gen, "--run", run, "--prompt", "hi", flag, value], capsys)
        assert flag in err and value in err
        assert not out.exists()


def test_three_level_scores_run_trains_and_generates_every_level(
    tmp_path, scores_file, tiny_model_dir, capsys
):
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--data",
            f"scores:{scores_file}",
            "--levels",
            "3",
            "--method",
            "meet-lora",
            "--lora-rank",
            "2",
            "--stages",
            "first",
            "--output",
            str(run),
            *small_flags(tiny_model_dir),
        ]
    )
    assert rc == 0
    levels = ["level-2", "level-1", "level-0"]
    info = yaml.safe_load((run / "run.yaml").read_text())
    assert info["preferences"] == levels and info["chosen"] == "level-2"
    assert json.loads((run / "metrics.json").read_text())["train_examples"] == 9
    for level in levels:  # every level's adapter trained (LoRA B starts at zero)
        weights = load_file(str(run / "control" / "lora" / level / "adapter_model.safetensors"))
        lora_b = [v for k, v in weights.items() if "lora_B" in k]
        assert lora_b and all(v.abs().sum() > 0 for v in lora_b)

    prompts = ["Describe the sea.", "Describe a dog."]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "".join(
            json.dumps({"prompt": p, "preference": lv}) + "\n" for p in prompts for lv in levels
        )
    )
    out = tmp_path / "mixed-out.jsonl"
    assert (
        main(
            [
                "generate",
                "--run",
                str(run),
                "--prompts",
                str(mixed),
                "--max-new-tokens",
                "6",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["preference"] for r in rows] == levels * 2
    assert all(r["response"] for r in rows)
    for level in levels:  # one level at a time gives what the mixed batch gave
        single = tmp_path / f"{level}.jsonl"
        assert (
            main(
                [
                    "generate",
                    "--run",
                    str(run),
                    "--prompt",
                    prompts[0],
                    "--prompt",
                    prompts[1],
                    "--preference",
                    level,
                    "--max-new-tokens",
                    "6",
                    "--output",
                    str(single),
                ]
            )
            == 0
        )
        alone = [json.loads(line)["response"] for line in single.read_text().splitlines()]
        assert alone == [r["response"] for r in rows if r["preference"] == level]


def test_mapping_and_list_flags_parse_into_the_config(capsys):
    """Optional dict/list fields get their parsers (``--prompt-texts`` once fell back to str)."""
    from ctrlalign.cli import build_parser
    from ctrlalign.cli.flags import config_from_args
    from ctrlalign.training.config import TrainConfig

    argv = [
        "train",
        "--data", "pairwise:x.jsonl",
        "--output", "out",
        "--prompt-texts", "good=A good summary is,bad=A bad summary is",
        "--preferences", "good, bad",
        "--lora-alpha", "16",
    ]  # fmt: skip
    config = config_from_args(build_parser().parse_args(argv), TrainConfig)
    assert config.prompt_texts == {"good": "A good summary is", "bad": "A bad summary is"}
    assert config.preferences == ["good", "bad"]
    assert config.lora_alpha == 16
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv[:5], "--prompt-texts", "good"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--prompt-texts" in err and "key=value" in err


def test_every_train_flag_has_help():
    from ctrlalign.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    train = sub.choices["train"]
    missing = [a.option_strings[0] for a in train._actions if a.option_strings and not a.help]
    assert missing == []


@pytest.mark.parametrize(
    "command",
    [
        "train",
        "train-rm",
        "generate",
        "alpha-sweep",
        "controllability",
        "evaluate",
        "experiment",
        "serve",
        "export",
    ],  # fmt: skip
)
def test_every_command_prints_its_help(command, capsys):
    """argparse %-formats help texts; one stray percent sign crashes --help."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: ctrlalign {command}" in capsys.readouterr().out
