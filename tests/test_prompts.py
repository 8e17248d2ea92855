"""Teacher prompt = student prompt + one reference block, for the plain template and for chat templates."""

import pytest

from rlsd_lab.prompts import CHAT_REFERENCE_BLOCK, PromptRenderer
from rlsd_lab.tasks.problem import Problem
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
    problem = Problem("q", "What is 2+3?", "5")
    student = renderer.text(problem)
    teacher = renderer.text(problem, "5")
    assert student == "<|system|>You are helpful.\n<|user|>What is 2+3?\n<|assistant|>"
    block = CHAT_REFERENCE_BLOCK.format(reference="5")
    assert teacher.replace(block, "", 1) == student
    assert renderer.text(problem, "") == student  # empty reference: identical prompt
    assert renderer.ids(problem) == chat_tokenizer.encode(student, add_special_tokens=False)


def test_plain_teacher_prompt(tokenizer):
    renderer = PromptRenderer("plain", tokenizer)
    problem = Problem("1+2", "1+2", "3")
    assert renderer.text(problem) == "Q:1+2\n"
    assert renderer.text(problem, "3") == "Q:1+2\n[3]\n"


def test_bad_prompt_formats_are_explained(tokenizer):
    with pytest.raises(ValueError, match="valid choices"):
        PromptRenderer("markdown", tokenizer)
    with pytest.raises(ValueError, match="chat template"):
        PromptRenderer("chat", tokenizer)


def test_chat_rows_keep_their_messages_and_the_teacher_block_goes_to_the_last_user_turn(chat_tokenizer):
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "What is 2+3?"})
    problem = Problem("q", "What is 2+3?", "5", messages=messages)
    renderer = PromptRenderer("chat", chat_tokenizer)
    student, teacher = renderer.text(problem), renderer.text(problem, "5")
    assert "<|system|>Be brief.\n<|user|>Hi\n<|assistant|>Hello\n<|user|>What is 2+3?\n" in student
    assert teacher == student.replace("What is 2+3?", "What is 2+3?" + CHAT_REFERENCE_BLOCK.format(reference="5"))
    assert problem.messages[-1]["content"] == "What is 2+3?"  # the row itself is not modified
    assert PromptRenderer("plain", chat_tokenizer).text(problem) == "Q:What is 2+3?\n"


def test_chat_template_options_reach_the_template(chat_tokenizer):
    """Qwen3's template reads `enable_thinking`; here a template with a variable of its own."""
    chat_tokenizer.chat_template = CHAT_TEMPLATE + "{% if not enable_thinking %}{{ '<think></think>' }}{% endif %}"
    problem = Problem("q", "What is 2+3?", "5")
    quiet = PromptRenderer("chat", chat_tokenizer, {"enable_thinking": False})
    assert quiet.text(problem).endswith("<|assistant|><think></think>")
    assert quiet.text(problem, "5").endswith("<|assistant|><think></think>")  # the teacher's too
    assert PromptRenderer("chat", chat_tokenizer, {"enable_thinking": True}).text(problem).endswith("<|assistant|>")
