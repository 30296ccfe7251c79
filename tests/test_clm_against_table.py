"""``scripts/clm_against_table.py``: the sweep's answers paired by post with the table's,
on answers whose ROUGE-L, copied share and opening are known by hand."""

from __future__ import annotations

import csv
import runpy
from pathlib import Path

import pytest

from ctrlalign.data.io import write_jsonl

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "clm_against_table.py"
POSTS = ["TITLE: red fox jumps", "TITLE: blue cat sleeps"]
REFERENCES = ["red fox jumps", "blue cat sleeps"]


def read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def out(tmp_path):
    write_jsonl(
        tmp_path / "eval_prompts.jsonl",
        [{"prompt": p, "reference": r} for p, r in zip(POSTS, REFERENCES, strict=True)],
    )
    rows = {  # coh answers the references word for word; dpo misses every word
        "coh": REFERENCES,
        "dpo": ["nothing here", "nothing here"],
    }
    for name, texts in rows.items():
        write_jsonl(
            tmp_path / "generations" / f"{name}_t0.jsonl",
            [{"prompt": p, "response": t} for p, t in zip(POSTS, texts, strict=True)],
        )
    sweep = [  # alpha 0 misses; alpha 1 restates the post (its first three words too)
        {"alpha": 0.0, "prompt": [{"role": "user", "content": p}], "response": "no", "tokens": 1}
        for p in POSTS
    ] + [
        {"alpha": 1.0, "prompt": [{"role": "user", "content": p}], "response": p, "tokens": 48}
        for p in POSTS
    ]
    write_jsonl(tmp_path / "clm-sweep" / "answers.jsonl", sweep)
    return tmp_path


def test_pairs_the_sweep_with_the_table_by_post(out):
    main = runpy.run_path(str(SCRIPT))["main"]
    main(out)
    levels = {r["answers"]: r for r in read_csv(out / "clm-sweep" / "against_table_levels.csv")}
    assert float(levels["coh"]["rouge_l"]) == 100.0 and float(levels["dpo"]["rouge_l"]) == 0.0
    # "TITLE: red fox jumps" against "red fox jumps": LCS 3 of 4 and 3 words, F = 6/7
    assert float(levels["alpha 1.0"]["rouge_l"]) == pytest.approx(100 * 6 / 7, abs=0.01)
    assert float(levels["alpha 1.0"]["copied_2"]) == 1.0
    assert float(levels["alpha 1.0"]["opens_as_post"]) == 1.0
    assert float(levels["alpha 1.0"]["at_48_tokens"]) == 1.0
    assert float(levels["alpha 0.0"]["at_48_tokens"]) == 0.0
    assert levels["alpha 0.0"]["copied_2"] == ""  # one-word answers have no bigram
    # the references' bigrams are all in their posts; a one-word answer has none
    assert float(levels["human references"]["copied_2"]) == 1.0
    assert levels["human references"]["rouge_l"] == levels["coh"]["at_48_tokens"] == ""
    paired = {
        (r["answers"], r["against"]): float(r["rouge_l_diff"])
        for r in read_csv(out / "clm-sweep" / "against_table_paired.csv")
    }
    assert paired[("alpha 1.0", "coh")] == pytest.approx(100 * 6 / 7 - 100, abs=0.01)
    assert paired[("alpha 1.0", "dpo")] == pytest.approx(100 * 6 / 7, abs=0.01)
    assert paired[("alpha 0.0", "alpha 1.0")] == pytest.approx(-100 * 6 / 7, abs=0.01)
    assert ("alpha 1.0", "alpha 1.0") not in paired


def test_refuses_answers_to_other_posts(out):
    write_jsonl(out / "generations" / "coh_t0.jsonl", [{"prompt": POSTS[0], "response": "red fox"}])
    with pytest.raises(SystemExit, match="coh: answers 1 posts, not the 2 posts"):
        runpy.run_path(str(SCRIPT))["main"](out)


def test_refuses_a_cache_of_two_settings_a_missing_row_or_reference(out):
    main = runpy.run_path(str(SCRIPT))["main"]
    coh = out / "generations" / "coh_t0.jsonl"
    rows = [
        {"prompt": p, "response": r, "signature": s}
        for p, r, s in zip(POSTS, REFERENCES, ["a", "b"], strict=True)
    ]
    write_jsonl(coh, rows)
    with pytest.raises(SystemExit, match="coh_t0.jsonl: answers of 2 generation settings"):
        main(out)
    coh.unlink()
    with pytest.raises(SystemExit, match=r"no answers of coh \(coh_t0.jsonl\)"):
        main(out)
    write_jsonl(
        out / "eval_prompts.jsonl", [{"prompt": POSTS[0], "reference": "x"}, {"prompt": POSTS[1]}]
    )
    with pytest.raises(SystemExit, match="eval_prompts.jsonl: no reference on line 2"):
        main(out)
    assert not (out / "clm-sweep" / "against_table_levels.csv").exists()
