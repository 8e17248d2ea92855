"""Teacher prompt = student prompt + one reference block, for the plain template and for chat templates."""

import pytest

from rlsd_lab.prompts import CHAT_REFERENCE_BLOCK, PromptRenderer
from rlsd_lab.tokenizer import build_char_tokenizer

CHAT_TEMPLATE = ("{{ '<|system|>You are helpful.\\n' }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + "
                 "m['content'] + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")


@pytest.fixture
def chat_tokenizer():
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_chat_teacher_prompt_only_inserts_the_reference_block(chat_tokenizer):
    renderer = PromptRenderer("chat", chat_tokenizer)
    student = renderer.text("What is 2+3?")
    teacher = renderer.text("What is 2+3?", "5")
    assert student == "<|system|>You are helpful.\n<|user|>What is 2+3?\n<|assistant|>"
    block = CHAT_REFERENCE_BLOCK.format(reference="5")
    assert teacher.replace(block, "", 1) == student
    assert renderer.text("What is 2+3?", "") == student  # empty reference: identical prompt
    assert renderer.ids("What is 2+3?") == chat_tokenizer.encode(student, add_special_tokens=False)


def test_plain_teacher_prompt(tokenizer):
    renderer = PromptRenderer("plain", tokenizer)
    assert renderer.text("1+2") == "Q:1+2\n"
    assert renderer.text("1+2", "3") == "Q:1+2\n[3]\n"


def test_bad_prompt_formats_are_explained(tokenizer):
    with pytest.raises(ValueError, match="valid choices"):
        PromptRenderer("markdown", tokenizer)
    with pytest.raises(ValueError, match="chat template"):
        PromptRenderer("chat", tokenizer)
