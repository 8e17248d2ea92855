import random

import pytest

from rlsd_lab.bootstrap import shortcut_response, supervised_example
from rlsd_lab.prompts import CITATION_MARKER, reference_text, render_prompt
from rlsd_lab.tasks import ArithTask, build_task
from rlsd_lab.tasks.arith import addition_solution, first_error, split_of, subtraction_solution
from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers import build_verifier


def test_same_seed_same_problems_other_seed_other_problems():
    task = ArithTask()
    assert task.problems("train", 50, seed=3) == task.problems("train", 50, seed=3)
    assert task.problems("train", 50, seed=3) != task.problems("train", 50, seed=4)


def test_train_and_validation_are_disjoint():
    task = ArithTask(digits=2)  # a small space makes collisions likely if the split leaked
    train = {p.question for p in task.problems("train", 2000, seed=0)}
    val = {p.question for p in task.problems("val", 300, seed=0)}
    assert not train & val
    assert all(split_of(q, 10) == "val" for q in val)


def test_hand_written_addition_solution():
    assert addition_solution([347, 285]) == "7+5+0=12\n4+8+1=13\n3+2+1=06\nA:632"
    assert addition_solution([950, 820]) == "0+0+0=00\n5+2+0=07\n9+8+0=17\nA:1770"


def test_hand_written_subtraction_solution():
    assert subtraction_solution(413, 284) == "3-4-0=9 b1\n1-8-1=2 b1\n4-2-1=1 b0\nA:129"


@pytest.mark.parametrize("settings", [dict(), dict(digits=5, operands=3), dict(operators=("+", "-"))])
def test_every_reference_solution_is_correct_and_verified(settings):
    task = ArithTask(**settings)
    verifier = build_verifier("arith")
    for problem in task.problems("train", 300, seed=1):
        expected = eval(problem.question)  # the question is a plain arithmetic expression
        assert problem.answer == str(expected)
        assert len(problem.solution.splitlines()) == task.digits + 1
        assert verifier.score(problem.solution, problem).reward == 1.0


def test_teacher_prompt_is_student_prompt_plus_one_reference_block():
    problem = ArithTask().problems("train", 1, seed=0)[0]
    student = render_prompt(problem.question)
    for mode in ("answer", "solution"):
        teacher = render_prompt(problem.question, reference_text(problem, mode))
        assert teacher == student + f"[{reference_text(problem, mode)}]\n"
    assert render_prompt(problem.question, "") == student


def test_shortcut_share_controls_reference_shortcuts():
    problem = ArithTask().problems("train", 1, seed=0)[0]
    rng = random.Random(0)
    examples = [supervised_example(problem, rng, 1.0, 0.3, ["direct", "cite"]) for _ in range(4000)]
    shortcuts = [t for _, t in examples if t != problem.solution]
    assert 0.27 < len(shortcuts) / len(examples) < 0.33
    assert set(shortcuts) == {shortcut_response(problem, "direct"), shortcut_response(problem, "cite")}
    assert shortcut_response(problem, "cite").startswith(CITATION_MARKER)
    no_reference = [supervised_example(problem, rng, 0.0, 0.3, ["direct"]) for _ in range(200)]
    assert all(t == problem.solution and "[" not in p for p, t in no_reference)


def test_bad_task_settings_are_explained():
    with pytest.raises(ValueError, match="valid choices"):
        build_task({"name": "nope"})
    with pytest.raises(ValueError, match="valid choices"):
        ArithTask(operators=("*",))
    with pytest.raises(ValueError, match="operands=2"):
        ArithTask(operands=3, operators=("-",))


@pytest.mark.parametrize("response, wrong_at", [
    ("7+5+0=13\n4+8+1=14\n3+2+1=06\nA:642", 7),          # a digit error in the first column sum
    ("7+5+0=12\n4+8+0=12\n3+2+1=06\nA:622", 13),         # the carry not taken into the tens column
    ("7+5+0=12\n4+8+1=13\nA:632", 18),                   # the hundreds line missing
    ("7+5+0=12\n4+8+1=13\n3+2+1=06\nA:633", 31),         # a wrong final answer after correct lines
    ("7+5+0=12\n4+8+1=13\n3+2+1=06\nA:6320", 32),        # an extra digit after the answer
    ("7+5+0=12\n4+8+1=13\n3+2+1=06\nA:63", 31),          # stopped early: the error is at the end (eos)
    ("7+6+0=13\n4+8+1=14\n3+2+1=07\nA:742", 2),          # an operand digit misread
    ("A:632", 0),                                        # the answer-first shortcut
])
def test_first_error_finds_the_first_wrong_token_of_hand_written_responses(response, wrong_at):
    problem = Problem(uid="347+285", question="347+285", answer="632", solution=addition_solution([347, 285]))
    assert first_error(response, problem) == wrong_at
    assert response[:wrong_at] == problem.solution[:wrong_at]  # everything before it is right
    assert first_error(problem.solution, problem) is None


def test_first_error_in_subtraction_borrow():
    problem = Problem(uid="413-284", question="413-284", answer="129", solution=subtraction_solution(413, 284))
    assert first_error("3-4-0=9 b0\n1-8-0=3 b1\n4-2-1=1 b0\nA:139", problem) == 9  # the borrow not given
