"""``make demo``: train meet-lora on the bundled concise/detailed set and show the two styles.

Concise versus detailed is the paper's example of two preferences that a one-preference
method cannot both serve; one MEET model learns both and is asked for either at inference.
The settings below are the paper's method scaled to minutes on 2 CPU cores: a subset of
the prompts, one epoch per step, LoRA rank 8.
"""

from __future__ import annotations

import argparse
import logging
import textwrap
from pathlib import Path

from ctrlalign.data import load_preference_data, split_records
from ctrlalign.inference.generation import GenerationConfig, generate
from ctrlalign.model.rundir import RUN_FILE, load_run
from ctrlalign.training import TrainConfig, train_any

DEMO_DATA = Path(__file__).parent / "demo_data" / "concise_detailed.jsonl"
PREFERENCES = ["concise", "detailed"]


def demo_config(model: str, output: str, max_examples: int) -> TrainConfig:
    return TrainConfig(
        data=f"preferences:{DEMO_DATA}",
        output=output,
        method="meet-lora",
        model=model,
        preferences=PREFERENCES,
        lora_rank=8,
        epochs=1,
        batch_size=8,
        micro_batch_size=4,
        max_length=256,
        max_examples=max_examples,
        eval_fraction=0.1,
        chosen="detailed",
        rejected="concise",
        save_steps=20,
    )


def side_by_side(left: str, right: str, width: int = 48) -> str:
    a = textwrap.wrap(left, width) or [""]
    b = textwrap.wrap(right, width) or [""]
    a += [""] * (len(b) - len(a))
    b += [""] * (len(a) - len(b))
    return "\n".join(f"  {x:<{width}} | {y}" for x, y in zip(a, b, strict=True))


def words(text: str) -> int:
    return len(text.split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--output", default="runs/demo")
    parser.add_argument("--max-examples", type=int, default=64, help="training prompts")
    parser.add_argument("--prompts", type=int, default=12, help="held-out prompts to answer")
    parser.add_argument("--show", type=int, default=4, help="answers to print side by side")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = demo_config(args.model, args.output, args.max_examples)
    if (Path(args.output) / RUN_FILE).exists():
        print(f"reusing the trained run in {args.output} (delete it to retrain)")
    else:
        train_any(config)
    run = load_run(args.output)

    data = load_preference_data(config.data)
    _, held_out = split_records(data, config.eval_fraction, config.seed)
    prompts = [r.chat for r in held_out.records[: args.prompts]]
    both = [p for p in prompts for _ in PREFERENCES]
    prefs = [pref for _ in prompts for pref in PREFERENCES]
    answers = generate(
        run.model,
        run.tokenizer,
        both,
        prefs,
        GenerationConfig(max_new_tokens=128, batch_size=2 * args.prompts),
        progress=True,
    )
    by_pref = {p: answers[i::2] for i, p in enumerate(PREFERENCES)}

    print("\nHeld-out prompts, answered by one model under each preference:\n")
    for i, prompt in enumerate(prompts[: args.show]):
        print(f"Q: {prompt[-1]['content']}")
        print(
            side_by_side(
                "[concise] " + by_pref["concise"][i], "[detailed] " + by_pref["detailed"][i]
            )
        )
        print()
    mean = {p: sum(map(words, a)) / len(a) for p, a in by_pref.items()}
    for pref in PREFERENCES:
        print(f"mean answer length, {pref}: {mean[pref]:.1f} words over {len(prompts)} prompts")
    print(f"length ratio detailed/concise: {mean['detailed'] / max(mean['concise'], 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
