"""The alpha dial beyond CLM (MEET --against), the CLI's checks, and alpha-sweep's outputs."""

import csv
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from ctrlalign.cli import main
from ctrlalign.evaluation import sweep
from ctrlalign.evaluation.judges import JUDGES
from ctrlalign.evaluation.sweep import copied_n, distinct_n
from ctrlalign.inference.generation import GenerationConfig, alpha_row, generate, generate_rows
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.identity_layer import insert_identity_layer
from ctrlalign.model.loading import load_model
from ctrlalign.model.rundir import load_run, save_run

PROMPTS = ["What is two plus two?", "Hi!"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """A CLM run (perturbed layer) and a coh run, both naming the tiny model folder."""
    root = tmp_path_factory.mktemp("runs")
    lm, tok = load_model(str(tiny_model_dir))
    layer = insert_identity_layer(lm)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    info = {"model": str(tiny_model_dir), "method": "clm", "control": None, "preferences": []}
    save_run(root / "clm", ControlledLM(lm), tok, info, {}, save_lm=False)
    return root


@pytest.fixture(scope="module")
def coh_run(runs, tiny_model_dir):
    from ctrlalign.model.controls import build_control

    lm, tok = load_model(str(tiny_model_dir))
    control = build_control("prompt", ["good", "bad"])
    lm = control.attach(lm, tok)
    info = {
        "model": str(tiny_model_dir),
        "method": "coh",
        "control": "prompt",
        "preferences": ["good", "bad"],
        "chosen": "good",
    }
    save_run(runs / "coh", ControlledLM(lm, control), tok, info, {}, save_lm=False)
    return runs / "coh"


def test_against_alpha_1_is_plain_preference_and_batches_mix(controlled):
    model, tok = controlled("lora", lora_random=True)
    config = GenerationConfig(max_new_tokens=5, batch_size=32)
    good = generate(model, tok, PROMPTS, "good", config)
    bad = generate(model, tok, PROMPTS, "bad", config)
    assert good != bad
    assert (
        generate_rows(model, tok, [alpha_row(p, 1, "good", "bad") for p in PROMPTS], config) == good
    )
    assert (
        generate_rows(model, tok, [alpha_row(p, 0, "good", "bad") for p in PROMPTS], config) == bad
    )

    rows = [alpha_row(p, a, "good", "bad") for p in PROMPTS for a in (-0.5, 0.5, 1.0, 2.0)]
    together = generate_rows(model, tok, rows, config)
    assert together == [generate_rows(model, tok, [r], config)[0] for r in rows]

    # first token at alpha 2: argmax of 2 * good - bad, from one forward per adapter
    ids = torch.tensor([alpha_row_ids(tok, PROMPTS[0])])
    logits = {}
    with torch.no_grad():
        for pref in ("good", "bad"):
            with model.control.use(pref):
                logits[pref] = model.lm(input_ids=ids).logits[0, -1]
    mix = 2 * logits["good"] - logits["bad"]
    first = generate_rows(
        model, tok, [alpha_row(PROMPTS[0], 2.0, "good", "bad")], GenerationConfig(1)
    )
    assert first[0] == tok.decode([int(mix.argmax())], skip_special_tokens=True).strip()


def alpha_row_ids(tok, prompt: str) -> list[int]:
    return tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=False
    )


def test_generate_against_on_a_meet_run(coh_run, tmp_path):
    out = tmp_path / "out.jsonl"
    argv = ["generate", "--run", str(coh_run), "--prompt", "Hi!", "--alpha", "1.5"]
    assert main([*argv, "--against", "bad", "--max-new-tokens", "3", "--output", str(out)]) == 0
    row = json.loads(out.read_text())
    assert (row["preference"], row["against"], row["alpha"]) == ("good", "bad", 1.5)


@pytest.mark.parametrize(
    ("run", "flags", "message"),
    [
        ("clm", ["--preference", "good"], "CLM run"),
        ("clm", ["--alpha", "0.5", "--against", "bad"], "CLM run takes --alpha alone"),
        ("coh", ["--alpha", "0.5"], "--against"),
        ("coh", ["--alpha", "0.5", "--against", "good"], "is the --preference itself"),
    ],
)
def test_bad_dial_flags_fail_clearly_and_write_nothing(
    runs, coh_run, tmp_path, capsys, run, flags, message
):
    out = tmp_path / "out.jsonl"
    argv = ["generate", "--run", str(runs / run), "--prompt", "Hi!", "--output", str(out)]
    assert main([*argv, *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("alpha", ["abc", "nan", "1.5.2"])
def test_alpha_that_is_not_a_number_fails_and_writes_nothing(runs, tmp_path, capsys, alpha):
    out = tmp_path / "out.jsonl"
    argv = ["generate", "--run", str(runs / "clm"), "--prompt", "Hi!", "--output", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, f"--alpha={alpha}"])
    assert exit_info.value.code == 2
    assert "alpha must be a" in capsys.readouterr().err
    assert not out.exists()

    sweep_out = tmp_path / "sweep"
    with pytest.raises(SystemExit):
        main(["alpha-sweep", "--run", str(runs / "clm"), "--alphas", f"0,{alpha}",
              "--prompt", "Hi!", "--output", str(sweep_out)])  # fmt: skip
    assert not sweep_out.exists()


def test_per_prompt_alpha_in_prompts_file_is_checked(runs, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Hi!", "alpha": 0.5}\n{"prompt": "Yo", "alpha": "x"}\n')
    out = tmp_path / "out.jsonl"
    argv = ["generate", "--run", str(runs / "clm"), "--prompts", str(prompts)]
    assert main([*argv, "--output", str(out)]) == 2
    assert "alpha must be a number" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory, tiny_model_dir):
    path = tmp_path_factory.mktemp("rm")
    _, tok = load_model(str(tiny_model_dir))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_alpha_sweep_writes_csv_plot_and_answers(runs, reward_model_dir, tmp_path):
    out = tmp_path / "sweep"
    alphas = "-1,0,0.5,1,2"
    argv = ["alpha-sweep", "--run", str(runs / "clm"), "--alphas", alphas, "--output", str(out)]
    argv += ["--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--max-new-tokens", "4"]
    assert main([*argv, "--judge", f"rm:{reward_model_dir}"]) == 0
    with open(out / "sweep.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [float(r["alpha"]) for r in table] == [-1, 0, 0.5, 1, 2]
    assert all(r["n"] == "2" and r["mean_score"] != "" for r in table)
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 10 and all("score" in a and "tokens" in a for a in answers)
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_alpha_sweep_reports_the_held_out_reward_margin(
    runs, coh_run, pairwise_file, tmp_path, capsys
):
    out = tmp_path / "sweep"
    argv = ["alpha-sweep", "--alphas", "0,0.5,1.5", "--prompt", "Hi!", "--max-new-tokens", "2"]
    argv += ["--pairs", f"pairwise:{pairwise_file}"]
    assert main([*argv, "--run", str(runs / "clm"), "--output", str(out)]) == 0
    with open(out / "margins.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [float(r["alpha"]) for r in table] == [0, 0.5, 1.5]
    assert float(table[0]["margin"]) == 0.0 and len({r["margin"] for r in table}) == 3
    # a MEET dial has no unaligned stream to be the reference: refused before any answer
    refused = tmp_path / "refused"
    argv += ["--run", str(runs / "coh"), "--preference", "good", "--against", "bad"]
    assert main([*argv, "--output", str(refused)]) == 2
    assert "--pairs: the reward margin needs a CLM run" in capsys.readouterr().err
    assert not refused.exists()


def test_alpha_sweep_refuses_pointwise_pairs_before_any_answer(runs, scores_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["alpha-sweep", "--run", str(runs / "clm"), "--alphas", "0,1", "--prompt", "Hi!"]
    assert main([*argv, "--pairs", f"scores:{scores_file}", "--output", str(out)]) == 2
    assert "not (chosen, rejected) pairs" in capsys.readouterr().err
    assert not out.exists()


def test_alpha_sweep_with_a_bad_judge_writes_nothing(runs, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["alpha-sweep", "--run", str(runs / "clm"), "--alphas", "0,1", "--prompt", "Hi!"]
    assert main([*argv, "--output", str(out), "--judge", "gpt4"]) == 2
    err = capsys.readouterr().err
    assert JUDGES["rm"].usage in err and JUDGES["attr"].usage in err and "llm" not in err
    assert not out.exists()


def test_distinct_n_by_hand():
    texts = ["the cat the cat", "a dog"]
    # unigrams: the, cat, the, cat, a, dog -> 4 unique of 6; bigrams: 3 + 1 -> 3 unique of 4
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n([""], 2) == 0.0


def test_copied_n_by_hand():
    # bigrams of the answer: (a, b), (b, c), (c, d); the prompt holds (a, b) and (c, d)
    assert copied_n("A b c d", "x a b y c d", 2) == pytest.approx(2 / 3)
    assert copied_n("the cat sat", "The cat sat on the mat", 2) == 1.0
    assert copied_n("new words here", "nothing alike", 2) == 0.0
    assert copied_n("one", "one", 2) is None


def test_reference_summary_is_rouge_l_and_words_per_alpha_by_hand():
    """ROUGE-L per alpha is the mean of rouge_score's per-post F1 (in %), its paired
    difference against the first alpha is the mean of the per-post differences, and words
    are whitespace words; each point's interval holds its mean."""
    from rouge_score import rouge_scorer

    references = ["the cat sat on the mat", "dogs bark at night", "rain falls in spring"]
    answers = [
        ["a cat sat", "dogs bark", "it rains"],
        ["the cat sat on a mat today", "dogs bark loudly at night", "rain falls in the spring"],
    ]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    each = [
        [
            100 * scorer.score(r, a)["rougeL"].fmeasure
            for a, r in zip(texts, references, strict=True)
        ]
        for texts in answers
    ]
    rows = sweep.reference_summary(answers, references, n_boot=200)
    for row, values, texts in zip(rows, each, answers, strict=True):
        assert row["rouge_l"] == pytest.approx(sum(values) / 3, abs=5e-4)
        assert row["rouge_l_low"] <= row["rouge_l"] <= row["rouge_l_high"]
        assert row["words"] == pytest.approx(sum(len(t.split()) for t in texts) / 3, abs=5e-4)
        assert row["words_low"] <= row["words"] <= row["words_high"]
    assert rows[0]["rouge_l_vs_first"] == rows[0]["vs_first_low"] == 0.0
    diff = sum(b - a for a, b in zip(*each, strict=True)) / 3
    assert rows[1]["rouge_l_vs_first"] == pytest.approx(diff, abs=5e-4) and diff > 0


def test_trends_are_spearman_rank_correlations_with_alpha():
    """rho = 1 - 6 sum(d^2) / (n (n^2 - 1)) without ties: 1 for a rising measure, -1 for a
    falling one, 1 - 6 * 2 / 120 = 0.9 for one pair swapped; a measure at fewer than three
    alphas (here the score, never measured) has no row."""
    alphas = [0.0, 0.5, 1.0, 1.5, 2.0]
    summary = [
        {"alpha": a, "mean_tokens": 10 - a, "mean_score": None, "rouge_l": r, "words": w}
        for a, r, w in zip(alphas, [1, 2, 3, 4, 5], [3, 2, 4, 5, 6], strict=True)
    ]
    margins = [{"alpha": a, "margin": a**2} for a in alphas]
    result = sweep.Sweep([], summary, margins=margins, has_references=True)
    trends = {row["measure"]: row for row in result.trends()}
    assert set(trends) == {"mean_tokens", "rouge_l", "words", "margin"}
    assert trends["mean_tokens"]["spearman_rho"] == -1.0
    assert trends["rouge_l"]["spearman_rho"] == trends["margin"]["spearman_rho"] == 1.0
    assert trends["words"]["spearman_rho"] == pytest.approx(0.9)
    assert all(row["alphas"] == 5 for row in trends.values())
    # exact permutation p-values: a perfect order is 1 of the 5! = 120 pairings (and its
    # mirror the other way), p = 2 / 120; rho >= 0.9 is 5 pairings each way, p = 10 / 120
    assert trends["rouge_l"]["p_value"] == trends["mean_tokens"]["p_value"] == round(2 / 120, 4)
    assert trends["words"]["p_value"] == round(10 / 120, 4)


def test_alpha_sweep_scores_prompts_with_references(runs, tmp_path, capsys):
    """A --prompts file whose rows carry references (an experiment's eval_prompts.jsonl)
    adds ROUGE-L and words per alpha and trends.csv; a row without one is refused before any
    answer, naming the file and the prompt."""
    rows = [
        {"prompt": [{"role": "user", "content": PROMPTS[0]}], "reference": "four"},
        {"prompt": PROMPTS[1], "reference": "hello there"},
    ]
    prompts = tmp_path / "eval_prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sweep"
    argv = ["alpha-sweep", "--run", str(runs / "clm"), "--alphas", "0,0.5,1", "--max-new-tokens"]
    assert main([*argv, "3", "--prompts", str(prompts), "--output", str(out)]) == 0
    with open(out / "sweep.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [float(r["alpha"]) for r in table] == [0, 0.5, 1]
    for r in table:
        assert float(r["rouge_l_low"]) <= float(r["rouge_l"]) <= float(r["rouge_l_high"])
    assert float(table[0]["rouge_l_vs_first"]) == 0.0
    # the share copied from the prompt: each answer's by hand, averaged per alpha
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    for r in table:
        shares = [
            copied_n(a["response"], PROMPTS[i % 2], 2)
            for i, a in enumerate(x for x in answers if x["alpha"] == float(r["alpha"]))
        ]
        shares = [v for v in shares if v is not None]
        expected = round(sum(shares) / len(shares), 4) if shares else ""
        assert r["copied_2"] == str(expected)
    with open(out / "trends.csv") as fh:
        measures = {r["measure"] for r in csv.DictReader(fh)}
    assert {"rouge_l", "words", "mean_tokens"} <= measures
    # --prompt texts have no reference: refused beside a file that has them
    mixed = tmp_path / "mixed"
    assert (
        main([*argv, "3", "--prompts", str(prompts), "--prompt", "Hi!", "--output", str(mixed)])
        == 2
    )
    assert "--prompt texts have none" in capsys.readouterr().err and not mixed.exists()
    rows[1].pop("reference")
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    refused = tmp_path / "refused"
    assert main([*argv, "3", "--prompts", str(prompts), "--output", str(refused)]) == 2
    err = capsys.readouterr().err
    assert f"--prompts {prompts}: 1 of 2 prompts have no 'reference'" in err
    assert "prompt 2" in err and not refused.exists()


def test_a_killed_alpha_sweep_resumes_with_the_blocks_it_lacks(runs, tmp_path, monkeypatch):
    """Answers are kept block by block (4 batches of 2 rows here): a sweep killed in its
    second block answers, when rerun, only the blocks it lacks, and ends with the answers of
    an uninterrupted sweep (sampled, so the per-block seeds matter). Answers kept under
    other settings are not reused."""
    texts = [f"Count to {i}." for i in (0, 1, 2, 3, 4, 0)]  # one prompt twice: two rows
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    argv = ["alpha-sweep", "--run", str(runs / "clm"), "--alphas", "0,0.5,1.5", "--prompts"]
    argv += [str(prompts), "--max-new-tokens", "3", "--batch-size", "2", "--temperature", "1"]
    whole = tmp_path / "whole"
    assert main([*argv, "--output", str(whole)]) == 0
    # block by block, the answers of one uncached sweep (each row seeded by its position)
    config = GenerationConfig(max_new_tokens=3, temperature=1.0, batch_size=2)
    direct = sweep.sweep(load_run(runs / "clm"), texts, [0, 0.5, 1.5], config)
    kept = [json.loads(line) for line in (whole / "answers.jsonl").read_text().splitlines()]
    assert [a["response"] for a in kept] == [a["response"] for a in direct.answers]
    calls, real = [], sweep.generate_rows

    def counted(model, tokenizer, rows, *args):
        calls.append(len(rows))
        if len(calls) == 2 and kill:
            raise KeyboardInterrupt
        return real(model, tokenizer, rows, *args)

    monkeypatch.setattr(sweep, "generate_rows", counted)
    out, kill = tmp_path / "out", True
    with pytest.raises(KeyboardInterrupt):
        main([*argv, "--output", str(out)])
    assert calls == [8, 8] and not (out / "sweep.csv").exists()
    calls.clear()
    kill = False
    assert main([*argv, "--output", str(out)]) == 0
    assert calls == [8, 2]  # 18 rows: blocks of 8, 8 and 2; the first was kept
    assert (out / "answers.jsonl").read_text() == (whole / "answers.jsonl").read_text()
    calls.clear()
    assert main([*argv[:-1], "0.5", "--output", str(out)]) == 0  # another temperature
    assert calls == [8, 8, 2]
