"""Guards: non-finite updates are skipped, logged and fatal after train.max_consecutive_skips in a row; configuration
errors stop the run at start with the valid choices or the reason in words."""

import math
import os
from dataclasses import replace

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlsd_lab.distributed import gather_objects
from rlsd_lab.guards import UpdateGuard
from rlsd_lab.models import load_policy
from rlsd_lab.module import RLModule
from rlsd_lab.train import run
from tests.test_end_to_end import FAST, compose_config

GUARDED = FAST + ["verify.workers=0", "task.val_size=4"]


def poison_steps(monkeypatch, steps: set[int]) -> None:
    """NaN advantages, hence a NaN loss and gradient, at the given steps (0-based, as Experience.step)."""
    learn = RLModule.learn

    def poisoned_learn(self, experience, measure_terms=False):
        if experience.step in steps:
            experience = replace(experience, advantages=experience.advantages * math.nan)
        return learn(self, experience, measure_terms)

    monkeypatch.setattr(RLModule, "learn", poisoned_learn)


def test_a_transient_nan_skips_one_update_and_training_goes_on(tmp_path, model_dir, monkeypatch):
    poison_steps(monkeypatch, {1})
    run(compose_config(GUARDED + [f"model.path={model_dir}", "trainer.max_steps=4"]), tmp_path / "run")
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv").set_index("step")
    assert rows.index.tolist() == [0, 1, 2, 3, 4]  # the skipped step counts as a step
    assert rows.loc[1:, "train/skipped_updates"].tolist() == [0, 1, 0, 0]
    assert rows.loc[1:, "train/skipped_updates_total"].tolist() == [0, 1, 1, 1]
    assert math.isnan(rows.loc[2, "train/loss"]) and math.isnan(rows.loc[2, "train/grad_norm"])
    later = rows.loc[[1, 3, 4], ["train/loss", "train/grad_norm", "train/lr"]]
    assert later.map(math.isfinite).all().all()
    model, _ = load_policy(tmp_path / "run" / "final_policy")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_consecutive_non_finite_updates_stop_the_run_with_the_step_and_the_cause(tmp_path, model_dir, monkeypatch):
    poison_steps(monkeypatch, {2, 3, 4, 5})
    cfg = compose_config(GUARDED + [f"model.path={model_dir}", "trainer.max_steps=8", "train.max_consecutive_skips=3"])
    with pytest.raises(RuntimeError, match=r"step 5: the last 3 optimizer updates were skipped .* non-finite loss "
                                           r"and gradient norm"):
        run(cfg, tmp_path / "run")
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert rows["step"].tolist() == [0, 1, 2, 3, 4, 5]  # the failing step's row is written
    assert rows["train/skipped_updates_total"].tolist()[-1] == 3


def test_a_skipped_update_leaves_weights_and_adamw_moments_alone():
    """What the guard relies on: AdamW.step() passes over parameters without a gradient."""
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1, weight_decay=0.1)
    weight.grad = torch.ones(3)
    optimizer.step()
    before = (weight.detach().clone(), {k: v.clone() for k, v in optimizer.state[weight].items()})
    optimizer.zero_grad(set_to_none=True)
    optimizer.step()
    assert torch.equal(weight, before[0])
    assert all(torch.equal(optimizer.state[weight][k], v) for k, v in before[1].items())


def guard_agreement(rank: int, init_file: str, results) -> None:
    """Rank 1 alone sees a NaN loss: both ranks must skip. Also gathers each rank's object, as checkpoints do."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    guard = UpdateGuard(max_consecutive=5)
    allowed = guard.allows(math.nan if rank == 1 else 0.5, 1.0, torch.device("cpu"))
    results.put((rank, allowed, guard.total, guard.last.split(" (")[0], gather_objects(rank)))
    dist.destroy_process_group()


def test_data_parallel_ranks_agree_on_skipping(tmp_path):
    context = mp.get_context("fork")  # the ranks inherit this process's imports: no second start-up
    results = context.Queue()
    ranks = [context.Process(target=guard_agreement, args=(rank, str(tmp_path / "init"), results)) for rank in (0, 1)]
    for process in ranks:
        process.start()
    outcomes = sorted(results.get(timeout=120) for _ in ranks)
    for process in ranks:
        process.join(timeout=60)
    assert outcomes == [(0, False, 1, "loss", [0, 1]), (1, False, 1, "loss", [0, 1])]


# ---- configuration checked at start -----------------------------------------------------------------------------
@pytest.mark.parametrize(("override", "message"), [
    ("method.name=nope", "method.name=nope: must be one of grpo, hybrid, opd, opsd, rlsd, sdpo"),
    ("task.name=nope", "unknown task 'nope'; valid choices: arith, file"),
    ("+task.verifier=nope", "unknown verifier 'nope'; valid choices: arith, code, json, math, sql, a dotted path"),
    ("rollout.name=nope", "rollout.name=nope: must be one of hf, vllm"),
    ("logger.name=nope", "unknown logger 'nope'; valid choices: csv, wandb"),
    ("method.teacher.mode=nope", "method.teacher.mode=nope: must be one of live, periodic, fixed"),
])
def test_an_unknown_name_lists_the_valid_choices(tmp_path, model_dir, override, message):
    method = ["method=rlsd"] if override.startswith("method.teacher") else []
    cfg = compose_config(GUARDED + [f"model.path={model_dir}", *method, override])
    with pytest.raises(ValueError, match=message):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["rollout.group_size=1"], "rollout.group_size=1: must be >= 2"),
    (["train.mini_batches=3"], ("a step has data.prompts_per_step x rollout.group_size = 16 responses, which cannot "
                                "be split into train.mini_batches=3 equal mini-batches")),
    (["train.micro_batch_size=0"], "train.micro_batch_size=0: must be >= 1"),
    (["task.train_size=3"], "3 training problems cannot fill one step of data.prompts_per_step=4"),
    (["train.max_consecutive_skips=0"], "train.max_consecutive_skips=0: must be >= 1"),
])
def test_inconsistent_settings_are_explained_in_words(tmp_path, model_dir, overrides, message):
    with pytest.raises(ValueError, match=message):
        run(compose_config(GUARDED + [f"model.path={model_dir}", *overrides]), tmp_path / "run")


def test_resume_from_a_missing_checkpoint_says_so(tmp_path, model_dir):
    cfg = compose_config(GUARDED + [f"model.path={model_dir}", f"resume={tmp_path / 'gone.ckpt'}"])
    with pytest.raises(FileNotFoundError, match="gone.ckpt: no such checkpoint file"):
        run(cfg, tmp_path / "run")
    assert os.listdir(tmp_path) == ["tiny_model"]
