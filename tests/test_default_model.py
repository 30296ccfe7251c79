"""A short run on the real default model: SmolLM2-135M-Instruct from the GGUF package.

The first call converts the GGUF file (about 30 s) and caches it; the rest reload in
seconds. This is the path `make demo` takes, so it must keep working end to end.
"""

import json
from pathlib import Path

import torch

from ctrlalign.demo import DEMO_DATA
from ctrlalign.inference.generation import GenerationConfig, generate
from ctrlalign.model.loading import load_model
from ctrlalign.model.rundir import load_run
from ctrlalign.training import TrainConfig, train_any


def test_default_model_loads_as_a_trainable_fp32_model():
    model, tokenizer = load_model("smollm2")
    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) > 130_000_000
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_dict=False,
    )
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, len(ids) :])


def test_short_meet_lora_run_on_the_default_model(tmp_path: Path):
    rows = [json.loads(line) for line in DEMO_DATA.read_text().splitlines()[:6]]
    data = tmp_path / "styles.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = TrainConfig(
        data=f"preferences:{data}",
        output=str(tmp_path / "run"),
        method="meet-lora",
        model="smollm2",
        lora_rank=2,
        batch_size=4,
        micro_batch_size=2,
        max_steps=1,
        max_length=192,
        eval_fraction=0.0,
        save_steps=100,
    )
    run_dir = train_any(config)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for stage in ("first", "second"):
        assert torch.isfinite(torch.tensor(metrics["stages"][stage]["train_loss"]))
    run = load_run(run_dir)
    answers = generate(
        run.model,
        run.tokenizer,
        ["Why is the sky blue?"] * 2,
        ["concise", "detailed"],
        GenerationConfig(max_new_tokens=12),
    )
    assert all(answer.strip() for answer in answers)
