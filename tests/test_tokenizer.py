import string

from rlsd_lab.models import load_policy
from rlsd_lab.tokenizer import EOS, PAD

TEXT = "Q:347+285\n[7+5+0=12\nA:632]\n@ref\nA:632"


def test_one_token_per_character_and_exact_decode(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert len(ids) == len(TEXT)
    assert tokenizer.decode(ids) == TEXT


def test_every_printable_character_round_trips(tokenizer):
    text = "".join(sorted(set(string.printable) - set("\t\r\x0b\x0c")))
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_pad_and_eos_are_distinct_special_tokens(tokenizer):
    assert tokenizer.pad_token == PAD and tokenizer.eos_token == EOS
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    ids = tokenizer.encode("12", add_special_tokens=False) + [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "12"


def test_save_and_load_with_a_model_directory_round_trips(tmp_path, tokenizer, tiny_model):
    # A qwen2 config.json beside the tokenizer must not make transformers swap in Qwen2's tokenizer class.
    tiny_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    _, loaded = load_policy(tmp_path)
    assert loaded.encode(TEXT, add_special_tokens=False) == tokenizer.encode(TEXT, add_special_tokens=False)
    assert loaded.decode(loaded.encode(TEXT, add_special_tokens=False)) == TEXT
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)
