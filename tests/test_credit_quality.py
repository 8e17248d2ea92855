"""Credit against ground truth (rlsd_lab/credit_quality.py): ranks, ties, baselines, the token mapping."""

import math

import pytest
import torch

from rlsd_lab.credit_quality import blame, char_to_token, credit_quality, first_error_positions
from rlsd_lab.tasks.arith import addition_solution, first_error
from rlsd_lab.tasks.problem import Problem


def test_blame_ranks_most_negative_first_and_shares_ties():
    assert blame(torch.tensor([0.1, -2.0, -1.0]), 1) == (1.0, 1.0)
    assert blame(torch.tensor([0.1, -2.0, -1.0]), 2) == (0.0, 2.0)
    assert blame(torch.tensor([-1.0, -1.0, -1.0, 0.5]), 0) == (pytest.approx(1 / 3), 2.0)


def test_equal_credit_per_token_scores_exactly_the_random_baseline():
    credit = torch.full((2, 5), -0.7)
    metrics = credit_quality(credit, torch.zeros(2, 5), torch.zeros(2), [5, 3], [2, 0], [list("abcde")] * 2)
    assert metrics["credit/first_error_top1"] == pytest.approx(metrics["credit/first_error_top1_random"])
    assert metrics["credit/first_error_rank"] == pytest.approx(metrics["credit/first_error_rank_random"])
    assert metrics["credit/first_error_rank_random"] == pytest.approx((3 + 2) / 2)
    assert metrics["credit/wrong_located"] == 2


def test_credit_that_blames_the_first_error_scores_one_and_digit_share_by_hand():
    credit = torch.tensor([[0.0, -0.1, -3.0, -0.2], [1.0, 1.0, 2.0, 0.0]])
    logprobs = torch.tensor([[-5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    tokens = [list("1+2="), list("1+2=")]
    metrics = credit_quality(credit, logprobs, torch.tensor([0.0, 1.0]), [4, 4], [2, None], tokens)
    assert metrics["credit/first_error_top1"] == 1.0 and metrics["credit/first_error_rank"] == 1.0
    assert metrics["credit/first_error_top1_student_logprob"] == 0.0  # the student's least likely token is 0
    assert metrics["credit/correct_digit_share"] == pytest.approx(3.0 / 4.0)  # digits "1", "2": 1 + 2 of 4
    assert metrics["credit/correct_digit_share_uniform"] == pytest.approx(0.5)


def test_an_empty_selection_gives_nan_not_a_missing_key():
    metrics = credit_quality(torch.ones(1, 3), torch.zeros(1, 3), torch.ones(1), [3], [None], [list("1+2")])
    assert math.isnan(metrics["credit/first_error_top1"]) and math.isnan(metrics["credit/first_error_rank_random"])
    assert metrics["credit/wrong_located"] == 0 and metrics["credit/correct_credited"] == 1


def test_first_error_positions_map_characters_to_tokens_including_eos():
    assert char_to_token(["ab", "c", ""], 1) == 0 and char_to_token(["ab", "c", ""], 2) == 1
    assert char_to_token(["ab", "c", ""], 3) == 2  # the eos after the text
    problem = Problem(uid="347+285", question="347+285", answer="632", solution=addition_solution([347, 285]))
    stopped_early = "7+5+0=12\n4+8+1=13\n3+2+1=06\nA:63"
    wrong_digit = "7+5+0=13\n4+8+1=14\n3+2+1=06\nA:642"
    token_texts = [list(stopped_early) + [""], list(wrong_digit) + [""]]
    positions = first_error_positions([stopped_early, wrong_digit, wrong_digit], [problem] * 3, first_error,
                                      token_texts + [list(wrong_digit[:5])], [len(stopped_early) + 1,
                                                                                len(wrong_digit) + 1, 5])
    assert positions == [len(stopped_early), 7, None]  # the third is cut before its error: not located
