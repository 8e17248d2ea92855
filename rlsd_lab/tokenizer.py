"""A character-level tokenizer built locally as a real `transformers` fast tokenizer.

Why a `PreTrainedTokenizerFast` and not a custom Python class: it saves to the standard `tokenizer.json`, so
`AutoTokenizer.from_pretrained(dir)` (and any engine that reads HF tokenizers, e.g. vLLM) loads it with no custom
code and nothing to download.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
# Every printable ASCII character plus newline: enough for the embedded task and for readable debugging output.
CHARACTERS = sorted(set(string.printable) - set("\t\r\x0b\x0c"))


def build_char_tokenizer(vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """One token per character; ids 0, 1, 2 are pad, eos, unk. `vocab_size` pads the vocabulary with unused
    tokens (`<unused7>`, never produced from text) to a real model's size, for speed measurements at a 151,936-token
    vocabulary (benchmarks/)."""
    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    for index in range(len(vocab), vocab_size or 0):
        vocab[f"<unused{index}>"] = index
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
