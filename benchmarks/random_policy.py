"""Randomly initialised Qwen2 policies at the sizes the benchmarks measure, saved as local transformers dirs.

Speed and memory do not depend on the weights, so nothing needs downloading. `qwen2.5-0.5b` is that model's
shape (494M parameters with its 151,936-token vocabulary, tied embeddings); `toy` is the same code path at a size
a CPU runs in seconds (the GPU check's dry run). The character tokenizer is padded with unused tokens up to the
vocabulary size, so the model samples over the whole vocabulary as a real one does.

    python benchmarks/random_policy.py qwen2.5-0.5b /tmp/policy_0.5b
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rlsd_lab.models import build_tiny_qwen2, count_parameters  # noqa: E402
from rlsd_lab.tokenizer import build_char_tokenizer  # noqa: E402

PRESETS = {
    "qwen2.5-0.5b": {"vocab_size": 151_936, "architecture": {
        "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
        "num_key_value_heads": 2, "max_position_embeddings": 4096}},
    "toy": {"vocab_size": 512, "architecture": {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "max_position_embeddings": 512}},
}


def save_random_policy(preset: str, path: Path, seed: int = 0) -> int:
    """Writes the preset's random model and its tokenizer to `path`; returns the parameter count."""
    torch.manual_seed(seed)
    tokenizer = build_char_tokenizer(PRESETS[preset]["vocab_size"])
    model = build_tiny_qwen2(tokenizer, PRESETS[preset]["architecture"])
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return count_parameters(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", choices=list(PRESETS))
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    print(f"{args.preset}: {save_random_policy(args.preset, args.path):,} parameters in {args.path}")


if __name__ == "__main__":
    main()
