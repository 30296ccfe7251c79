"""Several preferences at once: blends composed natively by each control kind, or by
mixing the logits of one stream per preference; mixed batches equal one by one."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import fp32_sum_tolerance, loss_and_grads

from ctrlalign.inference.dial import DialError, DialRequest, dial_row
from ctrlalign.inference.generation import (
    GenerationConfig,
    Row,
    Stream,
    generate,
    generate_rows,
)
from ctrlalign.model.controls import Blend
from ctrlalign.model.layout import collate, encode_prompt, prompt_ids
from ctrlalign.model.rundir import Run

pytestmark = pytest.mark.usefixtures("one_thread")

MANY = ("terse", "warm", "formal", "silly")
PROMPTS = ["What is two plus two?", "Tell me about dogs.", "Hi!"]


def chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def meet_run(model, tok, kind: str) -> Run:
    preferences = model.control.preferences
    return Run(model, tok, {"method": f"meet-{kind}", "control": kind, "preferences": preferences})


def test_blend_text_and_mapping():
    assert Blend.parse("concise+warm").parts == (("concise", 1.0), ("warm", 1.0))
    assert Blend.parse(" concise = 1 + warm=0.5").parts == (("concise", 1.0), ("warm", 0.5))
    assert Blend.of({"concise": 1, "warm": 0.25}) == Blend((("concise", 1), ("warm", 0.25)))
    assert str(Blend.parse("concise+warm=0.5")) == "concise+warm=0.5"
    for text, message in [
        ("concise+", "empty preference name"),
        ("concise+warm=much", "'warm' is not a number"),
        ("concise+warm=-1", "positive"),
        ("concise+warm=0", "positive"),
        ("concise+warm=inf", "positive"),
        ("warm+warm", "more than once"),
    ]:
        with pytest.raises(ValueError, match=message):
            Blend.parse(text)
    with pytest.raises(ValueError, match="must be a number"):
        Blend.of({"concise": "1"})


def test_native_lora_blend_equals_peft_cat_weighted_adapter(controlled):
    """A row asking for a blend adds each adapter's delta times its weight: what PEFT's own
    offline composition (``add_weighted_adapter``, ``cat``: the adapters side by side along
    the rank, scaling 1) gives, in one forward beside rows of plain preferences and other
    blends; with gradients on too (joint training), from the rows x parts id tensor."""
    model, _ = controlled("lora", preferences=MANY, lora_random=True)
    model.eval()
    ids = torch.randint(0, 1000, (4, 9), generator=torch.Generator().manual_seed(0))
    rows = [
        Blend((("warm", 1.0), ("terse", 0.5))),
        "formal",
        Blend((("terse", 1.0), ("formal", 1.0))),
        Blend((("warm", 0.5),)),  # one adapter at half strength
    ]
    with torch.no_grad(), model.control.per_row(rows):
        ours = model.lm(input_ids=ids).logits
    equal = torch.tensor([[MANY.index("terse"), MANY.index("formal")], [MANY.index("warm"), -1]])
    with torch.enable_grad(), model.control.per_row(equal):
        trained = model.lm(input_ids=ids[2:4]).logits.detach()

    peft = model.lm
    reference = []
    for i, row in enumerate(rows):
        blend = row if isinstance(row, Blend) else Blend(((row, 1.0),))
        peft.add_weighted_adapter(blend.names, blend.weights, f"mix{i}", combination_type="cat")
        peft.base_model.set_adapter(f"mix{i}")
        with torch.no_grad():
            reference.append(peft(input_ids=ids[i : i + 1]).logits[0])
    reference = torch.stack(reference)
    atol = fp32_sum_tolerance(model.lm.config.intermediate_size, reference)
    torch.testing.assert_close(ours, reference, rtol=0, atol=atol)
    torch.testing.assert_close(trained[0], reference[2], rtol=0, atol=atol)
    assert (ours[3] - reference[1]).abs().max() > 100 * atol, "rows use their own blends"
    # the second row of ``equal`` is warm alone at weight 1: the plain adapter
    peft.base_model.set_adapter("warm")
    with torch.no_grad():
        warm = peft(input_ids=ids[3:4]).logits[0]
    torch.testing.assert_close(trained[1], warm, rtol=0, atol=atol)


def _plain(model, ids, pref):
    with torch.no_grad(), model.control.use(pref):
        return model.lm(input_ids=ids).logits[0]


@pytest.mark.parametrize("kind", ["prompt", "token", "soft-prompt"])
def test_native_blend_of_prefix_controls_puts_them_one_after_another(kind, controlled):
    model, tok = controlled(kind)
    blend = Blend.parse("good+bad")
    got = encode_prompt(tok, model.control, chat("Hi!"), blend)
    good = model.control.prefix_ids("good")
    bad = model.control.prefix_ids("bad")
    assert got.input_ids[: got.prefix_len] == good + bad
    assert got.preference_id == (0, 1)
    if kind == "soft-prompt":  # the prefix embeddings are the two soft prompts in order
        plain = encode_prompt(tok, model.control, chat("Hi!"), "bad")
        batch = collate([got, plain], tok.pad_token_id, left=True)
        assert batch["preference_ids"].tolist() == [[0, 1], [1, -1]]
        with torch.no_grad():
            embeds = model.embed(batch["input_ids"], batch["prefix_mask"], batch["preference_ids"])
        prompts = model.control.prompts.detach()
        assert torch.equal(embeds[0, batch["prefix_mask"][0]], torch.cat([prompts[0], prompts[1]]))
        assert torch.equal(embeds[1, batch["prefix_mask"][1]], prompts[1])
    with pytest.raises(ValueError, match="--compose logits"):
        model.control.check_blend(Blend.parse("good+bad=0.5"))


@pytest.mark.parametrize("kind", ["prompt", "token", "soft-prompt", "lora"])
def test_batch_mixing_blends_and_preferences_generates_what_one_by_one_does(kind, controlled):
    model, tok = controlled(kind, preferences=MANY, lora_random=True)
    run = meet_run(model, tok, kind)
    asks = ["warm+formal", "terse", {"formal": 1.0, "silly": 1.0}, "silly+terse+warm"]
    if kind == "lora":
        asks.append("warm=0.5+terse=2")
    requests = [DialRequest(p, a) for p in PROMPTS for a in asks]
    requests += [DialRequest(p, a, compose="logits") for p in PROMPTS for a in asks]
    rows = [dial_row(run, r) for r in requests]
    config = GenerationConfig(max_new_tokens=5, batch_size=64)
    together = generate_rows(model, tok, rows, config)
    alone = [generate_rows(model, tok, [r], GenerationConfig(5, batch_size=1))[0] for r in rows]
    assert together == alone
    assert len(set(together[: len(asks)])) > 1, "blends answer differently"


def test_logit_blend_mixes_one_stream_per_preference(controlled):
    """``compose="logits"``: one stream per part, weights scaled to sum to 1; with
    ``against`` and alpha, (1 - alpha) * against + alpha * the blend. The first token is
    the argmax of that mix computed from one forward per preference."""
    model, tok = controlled("lora", preferences=MANY, lora_random=True)
    run = meet_run(model, tok, "lora")
    row = dial_row(run, DialRequest("Hi!", "warm=3+formal", compose="logits"))
    assert row.streams == (Stream("warm"), Stream("formal"))
    assert row.weights == (0.75, 0.25)
    dialled = dial_row(run, DialRequest("Hi!", "warm=3+formal", "silly", 2.0, compose="logits"))
    assert dialled.streams == (Stream("silly"), Stream("warm"), Stream("formal"))
    assert dialled.weights == (-1.0, 1.5, 0.5)

    ids = torch.tensor([prompt_ids(tok, chat("Hi!"))])
    logits = {p: _plain(model, ids, p)[-1] for p in ("warm", "formal", "silly")}
    for got, mix in [
        (row, 0.75 * logits["warm"] + 0.25 * logits["formal"]),
        (dialled, -logits["silly"] + 1.5 * logits["warm"] + 0.5 * logits["formal"]),
    ]:
        first = generate_rows(model, tok, [got], GenerationConfig(1))[0]
        assert first == tok.decode([int(mix.argmax())], skip_special_tokens=True).strip()


def test_dial_refuses_bad_blends_naming_the_field(controlled):
    model, tok = controlled("prompt", preferences=MANY)
    run = meet_run(model, tok, "prompt")
    cases = [
        (DialRequest("Hi!", "warm+nope"), "preference", "unknown preference 'nope'"),
        (DialRequest("Hi!", "warm+formal=2"), "preference", "--compose logits"),
        (DialRequest("Hi!", {"warm": -1}), "preference", "positive"),
        (DialRequest("Hi!", "warm+silly", "silly", 0.5), "preference", "part of the blend"),
        (DialRequest("Hi!", "warm+silly", compose="sum"), "compose", "native, logits"),
    ]
    for request, field, message in cases:
        with pytest.raises(DialError, match=message) as caught:
            dial_row(run, request)
        assert caught.value.field == field
    # weights are fine when the logits compose them, and a name the run knows is a name
    assert len(dial_row(run, DialRequest("Hi!", "warm+formal=2", compose="logits")).streams) == 2
    assert dial_row(run, DialRequest("Hi!", "warm")) == Row((("user", "Hi!"),), (Stream("warm"),))


@pytest.fixture(scope="module")
def prompt_run(tmp_path_factory, tiny_model_dir):
    """A saved three-preference prompt-control run naming the tiny model folder."""
    from ctrlalign.model.controlled_lm import ControlledLM
    from ctrlalign.model.controls import build_control
    from ctrlalign.model.loading import load_model
    from ctrlalign.model.rundir import save_run

    path = tmp_path_factory.mktemp("runs") / "prompt"
    lm, tok = load_model(str(tiny_model_dir))
    control = build_control("prompt", ["concise", "warm", "formal"])
    lm = control.attach(lm, tok)
    info = {
        "model": str(tiny_model_dir),
        "method": "meet-prompt",
        "control": "prompt",
        "preferences": control.preferences,
    }
    save_run(path, ControlledLM(lm, control), tok, info, {}, save_lm=False)
    return path


def test_generate_cli_answers_blends(prompt_run, tmp_path, capsys):
    from ctrlalign.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"prompt": "Hi!", "preference": {"warm": 1, "formal": 1}}\n'
        '{"prompt": "Yo", "preference": "warm"}\n'
    )
    out = tmp_path / "out.jsonl"
    argv = ["generate", "--run", str(prompt_run), "--max-new-tokens", "3", "--output", str(out)]
    assert (
        main([*argv, "--prompt", "Hi!", "--preference", "concise+warm", "--prompts", str(prompts)])
        == 0
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["preference"] for line in lines] == [
        "concise+warm",
        {"warm": 1, "formal": 1},
        "warm",
    ]
    assert [line.get("compose") for line in lines] == ["native", "native", None]
    assert all(line["response"] for line in lines)

    weighted = ["--prompt", "Hi!", "--preference", "concise=2+warm"]
    assert main([*argv, *weighted, "--compose", "logits"]) == 0
    assert json.loads(out.read_text())["compose"] == "logits"
    out.unlink()
    assert main([*argv, *weighted]) == 2
    assert "--compose logits" in capsys.readouterr().err
    assert not out.exists()


def test_python_generate_takes_blends(controlled):
    """``generate`` with ``{name: weight}`` preferences answers as the dial's rows do."""
    model, tok = controlled("lora", preferences=MANY, lora_random=True)
    run = meet_run(model, tok, "lora")
    config = GenerationConfig(max_new_tokens=5)
    blends = [{"warm": 1.0, "formal": 0.5}, "terse", {"silly": 2.0}]
    for compose in ("native", "logits"):
        got = generate(model, tok, PROMPTS, blends, config, compose=compose)
        requests = [
            DialRequest(p, b, compose=compose) for p, b in zip(PROMPTS, blends, strict=True)
        ]
        rows = [dial_row(run, r) for r in requests]
        assert got == generate_rows(model, tok, rows, config)


JOINT_CASES = [  # (prompt, preference or blend, response): blends are joint records' keys
    ("What is two plus two?", "terse+warm", "Four, friend!"),
    ("Say hello.", "formal", "Good day to you."),
    ("Name a colour.", "warm+formal+silly", "Might I suggest a lovely blue?"),
    ("Is the sky blue?", "terse", "Yes."),
]


@pytest.mark.parametrize("kind", ["soft-prompt", "lora", "token", "prompt"])
def test_joint_rows_train_in_one_batch_as_one_by_one(kind, controlled):
    """Joint training: a record under several controls at once is one row of a batch that
    mixes blends and single preferences; its loss and gradients are those of the rows
    trained one by one (token-weighted: the loss is a token mean)."""
    from ctrlalign.data import Record
    from ctrlalign.model.layout import encode_records

    model, tok = controlled(kind, preferences=MANY, lora_random=True)
    model.eval()
    model.requires_grad_(True)
    records = [Record((("user", p),), {key: r}) for p, key, r in JOINT_CASES]
    examples = encode_records(records, tok, model.control, 512).examples
    assert [e.preference_id for e in examples] == [(0, 1), 2, (1, 2, 3), 0]
    mixed_loss, mixed_grads, total = loss_and_grads(model, collate(examples, tok.pad_token_id))
    loss, grads = 0.0, {n: torch.zeros_like(g) for n, g in mixed_grads.items()}
    for example in examples:
        one_loss, one_grads, count = loss_and_grads(model, collate([example], tok.pad_token_id))
        loss += one_loss * count / total
        for n, g in one_grads.items():
            grads[n] += g * count / total
    # both sides are fp32 sums over the batch's tokens (or the MLP's width, the longer),
    # each within n * eps * |largest| of the exact value: so within twice that of each other
    tokens = sum(len(e.input_ids) for e in examples)
    reduction = 2 * max(model.lm.config.intermediate_size, tokens)
    torch.testing.assert_close(
        mixed_loss, loss, rtol=0, atol=fp32_sum_tolerance(reduction, mixed_loss)
    )
    reached = 0
    for name, grad in mixed_grads.items():
        atol = fp32_sum_tolerance(reduction, grad)
        torch.testing.assert_close(grad, grads[name], rtol=0, atol=atol, msg=name)
        reached += bool(grad.abs().sum() > 0)
    assert reached > 10, "gradients reach the model"
    if kind == "lora":  # silly trains only inside the three-part blend
        assert any(g.abs().sum() > 0 for n, g in mixed_grads.items() if "lora_A.silly" in n)
    if kind == "soft-prompt":
        assert (mixed_grads["control.prompts"].abs().sum((1, 2)) > 0).all()


ATTRIBUTE_ROWS = [  # long answers are cold, short ones warm: no record is long and warm
    ("Describe the sea.", "The sea is vast and grey.", {"length": 8, "warmth": 1}),
    ("Describe the sea.", "Water, dear.", {"length": 1, "warmth": 2}),
    ("Describe a cat.", "A cat is a small furry animal that naps.", {"length": 9, "warmth": 1}),
    ("Describe a cat.", "Sweet little thing!", {"length": 2, "warmth": 8}),
    (
        "Describe rain.",
        "Rain is water that falls from clouds in drops.",
        {"length": 8, "warmth": 1},
    ),
    ("Describe rain.", "Lovely drops!", {"length": 2, "warmth": 9}),
]


def test_joint_attributes_train_and_answer_unseen_combinations(tmp_path, train_config, capsys):
    """``joint_attributes``: each response one record under all its levels; the run then
    answers a combination that no record had (long and warm: the rows have long-cold and
    short-warm only), natively and by logits; selecting preferences keeps a joint key's
    kept parts. Without the flag, one record per attribute as before."""
    from ctrlalign.cli import main
    from ctrlalign.data import load_preference_data
    from ctrlalign.training import train_any
    from ctrlalign.training.splits import select_preferences

    rows = [{"prompt": p, "response": r, "scores": s} for p, r, s in ATTRIBUTE_ROWS]
    path = tmp_path / "attributes.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    joint = load_preference_data(f"attributes:{path}", joint=True)
    keys = [key for r in joint.records for key in r.responses]
    assert keys == ["length-1+warmth-0", "length-0+warmth-1"] * 3
    assert joint.preferences == ["length-1", "length-0", "warmth-1", "warmth-0"]
    assert len(load_preference_data(f"attributes:{path}").records) == 2 * len(rows)
    kept = select_preferences(joint, ["warmth-1", "warmth-0", "length-0"])
    kept_keys = [k for r in kept.records for k in r.responses]
    assert kept_keys[:3] == ["warmth-0", "length-0+warmth-1", "warmth-0"]
    with pytest.raises(ValueError, match="joint attributes need attributes"):
        load_preference_data(f"scores:{path}", joint=True)

    config = train_config(
        f"attributes:{path}", tmp_path / "run", "meet-lora", joint_attributes=True
    )
    run = train_any(config)
    out = tmp_path / "out.jsonl"
    argv = ["generate", "--run", str(run), "--prompt", "Describe snow.", "--output", str(out)]
    for compose in ("native", "logits"):
        flags = ["--preference", "length-1+warmth-1", "--compose", compose, "--max-new-tokens", "4"]
        assert main([*argv, *flags]) == 0
        assert json.loads(out.read_text())["compose"] == compose


def test_spearman_against_a_hand_computation():
    from ctrlalign.evaluation.controllability import spearman

    assert spearman([0, 0.5, 1, 1.5], [3, 4, 9, 10]) == pytest.approx(1.0)
    assert spearman([0, 0.5, 1, 1.5], [10, 9, 4, 3]) == pytest.approx(-1.0)
    # y's ranks with a tie: 1, 2, 3.5, 5, 3.5; cov 8, variances 10 and 9.5
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / 95**0.5)


@pytest.fixture(scope="module")
def two_axis_run(tmp_path_factory, tiny_model_dir):
    """A saved prompt-control run with two axes' controls, naming the tiny model folder."""
    from ctrlalign.model.controlled_lm import ControlledLM
    from ctrlalign.model.controls import build_control
    from ctrlalign.model.loading import load_model
    from ctrlalign.model.rundir import save_run

    path = tmp_path_factory.mktemp("runs") / "two-axes"
    lm, tok = load_model(str(tiny_model_dir))
    control = build_control("prompt", ["concise", "neutral", "warm", "detailed"])
    lm = control.attach(lm, tok)
    info = {"model": str(tiny_model_dir), "method": "meet-prompt", "control": "prompt"}
    info["preferences"] = control.preferences
    save_run(path, ControlledLM(lm, control), tok, info, {}, save_lm=False)
    return path


def test_controllability_tables_follow_from_the_answers(two_axis_run, tmp_path, capsys):
    """Every condition answered for every prompt; the table's differences, intervals'
    order, quadrants and Spearman recomputed from answers.jsonl by hand."""
    from ctrlalign.cli import main
    from ctrlalign.evaluation.controllability import spearman

    out = tmp_path / "ctl"
    argv = ["controllability", "--run", str(two_axis_run), "--output", str(out)]
    argv += ["--axis", "length:length:concise:detailed", "--axis", "tone:sentiment:neutral:warm"]
    argv += ["--alphas", "0,0.5,1", "--held-out", "detailed+warm", "--max-new-tokens", "6"]
    assert main([*argv, "--prompt", "Hi!", "--prompt", "Tell me about dogs."]) == 0
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == (4 + 4 + 2) * 2
    by = {}
    for a in answers:
        by.setdefault(a["condition"], []).append(a)
    rows = list(csv.DictReader((out / "controllability.csv").open()))
    axes = [("length", "tone", "detailed", "concise"), ("tone", "length", "warm", "neutral")]
    for row, (name, other, high, low) in zip(rows, axes, strict=True):
        own = [h[name] - lo[name] for h, lo in zip(by[high], by[low], strict=True)]
        cross = [h[other] - lo[other] for h, lo in zip(by[high], by[low], strict=True)]
        assert float(row["difference"]) == pytest.approx(sum(own) / 2, abs=1e-4)
        assert float(row["other_difference"]) == pytest.approx(sum(cross) / 2, abs=1e-4)
        assert float(row["ci_low"]) <= float(row["difference"]) <= float(row["ci_high"])
        assert row["moves"] == str(float(row["ci_low"]) > 0)
    # crosstalk: tone's move under the length controls over tone's move under its own
    length_row, tone_row = rows
    moved = abs(float(tone_row["difference"]))
    ratio = abs(float(length_row["other_difference"])) / moved if moved else float("inf")
    assert float(length_row["crosstalk"]) == pytest.approx(ratio, rel=1e-3, abs=1e-4)
    assert length_row["passes"] == str(length_row["moves"] == "True" and ratio < 1 / 3)
    combos = list(csv.DictReader((out / "combinations.csv").open()))
    assert [c["combination"] for c in combos] == [
        "concise+neutral", "concise+warm", "detailed+neutral", "detailed+warm",
    ]  # fmt: skip
    assert [c["held_out"] for c in combos] == ["False", "False", "False", "True"]
    centre = {n: sum(float(c[n]) for c in combos) / 4 for n in ("length", "tone")}
    for c in combos:
        up = {"length": "detailed" in c["combination"], "tone": "warm" in c["combination"]}
        inside = all((float(c[n]) > centre[n]) == up[n] for n in centre)
        assert c["in_quadrant"] == str(inside)
    curve = [r for r in csv.DictReader((out / "alphas.csv").open()) if r["axis"] == "tone"]
    means = [float(r["tone"]) for r in curve]
    assert float(curve[0]["spearman"]) == pytest.approx(spearman([0, 0.5, 1], means), abs=1e-4)
    assert (out / "pareto.png").stat().st_size > 0
    assert "| combination | length | tone |" in (out / "report.md").read_text()

    bad = ["--axis", "length:length:concise:detailed", "--axis", "tone:sentiment:neutral:cold"]
    assert main([*argv[:5], *bad, "--prompt", "Hi!"]) == 2
    assert "['cold'] are not among" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv[:5], "--axis", "length:loudness:concise:detailed", "--prompt", "Hi!"])
    assert "unknown attribute 'loudness'" in capsys.readouterr().err
    fresh = ["controllability", "--run", str(two_axis_run), "--output", str(tmp_path / "one")]
    assert main([*fresh, "--axis", "length:length:concise:detailed", "--prompt", "Hi!"]) == 2
    assert "two --axis with different names" in capsys.readouterr().err
    assert not (tmp_path / "one").exists()
