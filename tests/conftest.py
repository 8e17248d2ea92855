"""Shared fixtures: a tiny random Qwen2 on the char tokenizer, small enough for fast CPU tests."""

from __future__ import annotations

import pytest
import torch

from rlsd_lab.models import build_tiny_qwen2
from rlsd_lab.tokenizer import build_char_tokenizer

TINY_ARCHITECTURE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=256)


@pytest.fixture(scope="session")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture
def tiny_model(tokenizer):
    torch.manual_seed(0)
    return build_tiny_qwen2(tokenizer, TINY_ARCHITECTURE)


@pytest.fixture
def model_dir(tmp_path, tiny_model, tokenizer):
    """The tiny random model saved as a local transformers directory, for runs with `model.path=`."""
    path = tmp_path / "tiny_model"
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
