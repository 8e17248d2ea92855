"""Evaluation metrics by hand (rlsd_lab/eval_metrics.py), the evaluate entry point end to end, and the table."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from omegaconf import OmegaConf

from analysis.benchmark_table import benchmark_table, render
from rlsd_lab.eval_metrics import bootstrap_ci, extracted_answer, majority_vote, pass_at_k, problem_scores
from rlsd_lab.evaluate import evaluate_set, prepare_sets
from rlsd_lab.evaluation import greedy_accuracy
from rlsd_lab.prompts import PromptRenderer
from rlsd_lab.rollout import build_engine
from rlsd_lab.tasks import build_task
from rlsd_lab.tasks.sets import set_task_config
from rlsd_lab.verifiers.pool import VerifierPool
from tests.test_end_to_end import ROOT
from tests.test_hf_models import save_chat_model


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 1, 0.4),                  # c / n
    (5, 2, 2, 1 - 3 / 10),           # 1 - C(3,2) / C(5,2)
    (5, 2, 3, 1 - 1 / 10),           # 1 - C(3,3) / C(5,3)
    (5, 2, 5, 1.0),                  # n = k: any correct sample is drawn
    (5, 0, 3, 0.0), (5, 5, 1, 1.0),  # c = 0, c = n
    (100, 1, 10, 0.1),               # 1 - C(99,10) / C(100,10) = 10/100
])
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_refuses_impossible_counts():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)


def test_majority_vote_ties_go_to_the_answer_seen_first_and_unanswered_samples_do_not_vote():
    assert majority_vote(["7", "8", "8", "7"], [True, False, False, True])      # 2-2 tie: "7" came first
    assert not majority_vote(["8", "7", "7", "8"], [False, True, True, False])  # 2-2 tie: "8" came first
    assert not majority_vote(["8", "8", "7"], [False, False, True])             # the majority is wrong
    assert majority_vote([None, None, "5"], [False, False, True])               # one vote is a majority
    assert not majority_vote([None, None], [False, False])
    assert extracted_answer("1+2+0=03\nA:579") == "579" and extracted_answer("so \\boxed{7}\n") == "so \\boxed{7}"


def test_problem_scores_of_one_problem():
    scores = problem_scores([True, False, False, True], ["7", "8", "8", "7"], [1, 2, 4])
    assert scores == pytest.approx({"avg@4": 0.5, "pass@1": 0.5, "maj@1": 1.0, "pass@2": 1 - 1 / 6,
                                    "maj@2": 1.0, "pass@4": 1.0, "maj@4": 1.0})


def test_the_bootstrap_interval_is_deterministic_under_its_seed_and_holds_the_mean():
    values = [1.0] * 30 + [0.0] * 70
    assert bootstrap_ci(values, 500, seed=3) == bootstrap_ci(values, 500, seed=3)
    assert bootstrap_ci(values, 500, seed=3) != bootstrap_ci(values, 500, seed=4)
    low, high = bootstrap_ci(values, 2000, seed=0)
    assert low < 0.3 < high and high - low == pytest.approx(2 * 1.96 * (0.3 * 0.7 / 100) ** 0.5, rel=0.15)


def test_avg_at_1_with_temperature_0_is_greedy_accuracy(tiny_model, tokenizer):
    """The same problems, the same greedy decoding: avg@1 equals the training validation metric."""
    overrides = ["task=arith", "+task.verifier=tests.helpers.rewards:answer_residue"]  # about a third right
    cfg = OmegaConf.create({"problems": 40, "n": 1, "ks": [1], "temperature": 0.0, "top_p": 1.0,
                            "max_new_tokens": 12, "batch_size": 16, "bootstrap": {"samples": 200, "seed": 0}})
    engine = build_engine("hf", tiny_model, tokenizer, seed=0)
    (problems, verifier), = prepare_sets({"arith": overrides}, 40).values()
    result = evaluate_set(engine, tokenizer, PromptRenderer("plain", tokenizer), "arith", problems, verifier, cfg)
    task = build_task(set_task_config("arith", overrides))
    greedy = greedy_accuracy(engine, tokenizer, VerifierPool(task.verifier, {}, workers=0),
                             task.problems("val", 40, seed=0), max_new_tokens=12)
    assert 0.2 < greedy["accuracy"] < 0.8
    assert result["metrics"]["avg@1"]["value"] == pytest.approx(greedy["accuracy"])
    assert result["metrics"]["response_length"]["value"] == pytest.approx(greedy["response_length"])


def test_a_misspelt_set_key_fails_naming_it():
    with pytest.raises(Exception, match="digitz"):
        set_task_config("arith", ["task=arith", "task.digitz=4"])


def test_a_jsonl_set_with_the_math_verifier_on_a_chat_model_end_to_end(tmp_path, tokenizer):
    model_dir = save_chat_model(tmp_path / "chat_model", "qwen2", tokenizer)
    sets = '{math: ["task=math_example"], arith: ["task=arith", "task.digits=2"]}'
    done = subprocess.run([sys.executable, "-m", "rlsd_lab.evaluate", f"eval.policies=['{model_dir}']",
                           "eval.prompt_format=chat", f"eval.sets={sets}", "eval.n=4", "eval.ks=[1,2,4]",
                           "eval.max_new_tokens=8", "eval.problems=12", "eval.bootstrap.samples=100"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((model_dir / "eval" / "results.json").read_text())[-1]  # the final policy (a model dir: only)
    assert results["settings"]["prompt_format"] == "chat" and set(results["sets"]) == {"math", "arith"}
    table = pd.read_csv(model_dir / "eval" / "results.csv")
    assert set(table["metric"]) == {"avg@4", "pass@1", "pass@2", "pass@4", "maj@1", "maj@2", "maj@4",
                                    "response_length"}
    assert (table["problems"] == 12).all()
    scores = table[table["metric"] != "response_length"]
    assert scores["value"].between(0, 1).all()
    for _, row in scores.iterrows():  # pass@k grows with k and bounds avg@n from above
        assert row["ci_low"] <= row["value"] + 1e-9 and row["value"] <= row["ci_high"] + 1e-9
    for name in ("math", "arith"):
        value = table[table["set"] == name].set_index("metric")["value"]
        assert value["pass@1"] == pytest.approx(value["avg@4"])
        assert value["pass@1"] <= value["pass@2"] <= value["pass@4"]


def test_the_benchmark_table_averages_seeds_and_marks_the_best():
    rows = [{"row": m, "seed": s, "set": name, "metric": "avg@8", "value": v}
            for m, s, name, v in [("grpo", 1, "a", 0.5), ("grpo", 2, "a", 0.7), ("grpo", 1, "b", 0.1),
                                  ("grpo", 2, "b", 0.3), ("rlsd", 1, "a", 0.8), ("rlsd", 1, "b", 0.0)]]
    table = benchmark_table(pd.DataFrame(rows), "avg@8")
    assert table.at["grpo", "a"][0] == pytest.approx(0.6) and table.at["grpo", "average"][0] == pytest.approx(0.4)
    assert table.at["rlsd", "average"] == pytest.approx((0.4, float("nan")), nan_ok=True)
    markdown = render(table)
    assert "| rlsd | **0.800** | 0.000 | 0.400 |" in markdown
    assert "**0.200 ± " in markdown and "\\textbf{0.800}" in render(table, latex=True)


def test_train_val_sets_are_logged_beside_the_training_tasks_validation(tmp_path, model_dir):
    """train.val_sets: an out-of-distribution arith set validated at every validation step, and in the figure."""
    from analysis.runs import load_runs
    from analysis.stability import stability_figure
    from rlsd_lab.train import run
    from tests.test_end_to_end import FAST, compose_config as compose

    cfg = compose([*FAST, f"model.path={model_dir}", "verify.workers=0",
                   "train.val_sets={two_digits: [\"task=arith\", \"task.digits=2\", \"task.val_size=6\"]}"])
    run(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    logged = metrics.dropna(subset=["val/accuracy"])
    assert logged["val/two_digits/accuracy"].notna().all() and logged["val/two_digits/response_length"].gt(0).all()
    assert logged["step"].tolist() == [0, 2, 3]
    figure = stability_figure(load_runs([tmp_path / "run"]), tmp_path / "figures")
    assert figure[0].exists()


def test_every_kept_checkpoint_evaluates_to_the_validation_accuracy_logged_at_its_step(tmp_path, model_dir):
    """eval.checkpoints=all with greedy decoding (n = 1, temperature 0) on the training task's own validation
    problems: each checkpoint's avg@1 is the greedy validation accuracy the run logged at that step, so the
    checkpoint's weights are the ones trained to that step."""
    from rlsd_lab.train import run
    from tests.test_end_to_end import FAST, compose_config as compose

    reward = "+task.verifier=tests.helpers.rewards:answer_residue"
    run(compose([*FAST, f"model.path={model_dir}", "verify.workers=0", reward, "trainer.max_steps=6",
                 "train.val_every=2", "train.checkpoint_every=2", "train.keep_checkpoints=-1",
                 "task.train_size=12", "method.lr=0.1"]), tmp_path / "run")  # a large lr: the policy moves
    sets = f'{{own: ["task=arith", "{reward}", "task.val_size=8"]}}'
    done = subprocess.run([sys.executable, "-m", "rlsd_lab.evaluate", f"eval.policies=['{tmp_path / 'run'}']",
                           f"eval.sets={sets}", "eval.n=1", "eval.ks=[1]", "eval.temperature=0",
                           "eval.max_new_tokens=16", "eval.problems=8", "eval.checkpoints=all"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "run" / "eval" / "results.csv")
    evaluated = table[table["metric"] == "avg@1"].set_index("step")["value"]
    assert sorted(evaluated.index) == [2, 4, 6]
    logged = pd.read_csv(tmp_path / "run" / "metrics.csv").dropna(subset=["val/accuracy"]).set_index("step")
    for step, value in evaluated.items():
        assert value == pytest.approx(logged.at[step, "val/accuracy"]), step
    assert len(set(logged["val/accuracy"])) > 1  # the steps differ, so the match is not by chance
    from analysis.benchmark_table import load_results
    from analysis.eval_curves import eval_curves_figure
    figure = eval_curves_figure(load_results([tmp_path / "run"]), "avg@1", tmp_path / "figures")
    assert all(path.exists() for path in figure)
