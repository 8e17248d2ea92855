"""Building the embedded tiny Qwen2 policy from a config, and loading any local HF causal-LM directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)


def build_tiny_qwen2(tokenizer, architecture: dict) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM sized by `architecture` (conf/model/tiny.yaml)."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
        **architecture,
    )
    return Qwen2ForCausalLM(config)


# Tokenizers saved as a bare `tokenizer.json` (ours: rlsd_lab/tokenizer.py). AutoTokenizer would swap in the model
# type's tokenizer class (Qwen2Tokenizer for a qwen2 config), whose normaliser drops characters such as newlines.
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(path: Path):
    config_file = path / "tokenizer_config.json"
    tokenizer_class = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.exists() else None
    if tokenizer_class in GENERIC_TOKENIZER_CLASSES:
        return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_policy(path: str | Path) -> tuple[PreTrainedModel, object]:
    """Model and tokenizer from a local directory (no downloads: `local_files_only`)."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no model at {path}: expected a transformers directory with config.json")
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
