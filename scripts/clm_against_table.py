"""CLM's alpha sweep against the table's rows on the same posts (issue 29), from answers
already on disk: `scripts/table1_tldr_large.sh` runs it last.

The sweep pairs posts only across alphas; the table's rows and the sweep answered the same
600 posts, so their answers pair by post too. Writes, beside the sweep:

- `against_table_levels.csv`: per set of answers (each table row, each alpha, the human
  references), ROUGE-L, `copied_2` (share of bigrams found in the post) and `opens_as_post`
  (share of answers whose first three words are the post's: a restated
  "SUBREDDIT: r/... TITLE:" header) and, for the alphas, the share that ran to the 48-token
  cap (counted in the answer's tokens, as the sweep counts them);
- `against_table_paired.csv`: each alpha's ROUGE-L minus CoH's, DPO's and alpha 1's on the
  same post, with percentile bootstrap 95% intervals (2000 resamples).

    .venv/bin/python scripts/clm_against_table.py reports/table1-large
"""

from __future__ import annotations

import sys
from pathlib import Path

from ctrlalign.data.io import read_jsonl_rows, read_prompts, write_atomic
from ctrlalign.evaluation.rouge import PairedDifference, rouge
from ctrlalign.evaluation.sweep import mean_copied, prompt_text, summary_csv

AGAINST = ("coh", "dpo", "alpha 1.0")
MAX_NEW_TOKENS = 48  # the table's and the sweep's --max-new-tokens


def read_answers(path: Path) -> list[dict]:
    """The rows of an answers file; the table's caches must hold one setting's answers."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (run the table and the sweep first)")
    rows = read_jsonl_rows(path)
    signatures = {r["signature"] for r in rows if "signature" in r}
    if len(signatures) > 1:
        raise SystemExit(f"{path}: answers of {len(signatures)} generation settings, not one")
    return rows


def opens_as(text: str, source: str, words: int = 3) -> bool:
    return text.lower().split()[:words] == source.lower().split()[:words]


def main(out: Path) -> None:
    rows = read_prompts(out / "eval_prompts.jsonl")
    if missing := [i for i, r in enumerate(rows, start=1) if not r.get("reference")]:
        raise SystemExit(f"{out / 'eval_prompts.jsonl'}: no reference on line {missing[0]}")
    posts = {prompt_text(r["prompt"]): r["reference"] for r in rows}
    order = list(posts)
    answers: dict[str, dict[str, str]] = {}
    for path in sorted((out / "generations").glob("*_t0.jsonl")):
        answers[path.name.removesuffix("_t0.jsonl")] = {
            prompt_text(r["prompt"]): r["response"] for r in read_answers(path)
        }
    for name in AGAINST[:2]:
        if name not in answers:
            raise SystemExit(f"{out / 'generations'}: no answers of {name} ({name}_t0.jsonl)")
    at_cap: dict[str, int] = {}  # answers that ran to the sweep's 48 new tokens
    for r in read_answers(out / "clm-sweep" / "answers.jsonl"):
        name = f"alpha {r['alpha']}"
        answers.setdefault(name, {})[prompt_text(r["prompt"])] = r["response"]
        at_cap[name] = at_cap.get(name, 0) + (r["tokens"] >= MAX_NEW_TOKENS)
    answers["human references"] = dict(posts)
    for name, by_post in answers.items():
        if set(by_post) != set(posts):
            raise SystemExit(f"{name}: answers {len(by_post)} posts, not the {len(posts)} posts")

    references = [posts[p] for p in order]
    each = {}
    levels = []
    for name, by_post in answers.items():
        texts = [by_post[p] for p in order]
        row = {"answers": name, "n": len(texts), "rouge_l": ""}
        if name != "human references":
            each[name] = rouge(texts, references).rouge_l_each
            row["rouge_l"] = round(sum(each[name]) / len(texts), 2)
        copied = mean_copied(texts, order)
        row["copied_2"] = "" if copied is None else copied
        opens = sum(opens_as(t, p) for t, p in zip(texts, order, strict=True))
        row["opens_as_post"] = round(opens / len(texts), 4)
        row["at_48_tokens"] = round(at_cap[name] / len(texts), 4) if name in at_cap else ""
        levels.append(row)

    paired = []
    for name in (n for n in each if n.startswith("alpha ")):
        for base in AGAINST:
            if base == name:
                continue
            d = PairedDifference.of(each[name], each[base])
            paired.append(
                {
                    "answers": name,
                    "against": base,
                    "rouge_l_diff": round(d.mean, 2),
                    "low": round(d.ci_low, 2),
                    "high": round(d.ci_high, 2),
                }
            )
    for name, rows in (("levels", levels), ("paired", paired)):
        text = summary_csv(rows, list(rows[0]))
        path = write_atomic(out / "clm-sweep" / f"against_table_{name}.csv", text)
        print(f"wrote {path}")
        print(text, end="")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "reports/table1-large"))
