"""Data parallel (Lightning ddp and fsdp, gloo, 2 CPU processes): the update of one process on the whole batch.

Run as a script (`python tests/test_distributed.py OUT STRATEGY`), this file is the 2-rank job the first test
starts: Lightning relaunches the same command for rank 1.
"""

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from methods import build_objective
from methods.policy_loss import AGGREGATIONS
from rlsd_lab.distributed import rank_share
from rlsd_lab.module import check_batch_config
from rlsd_lab.rollout import RolloutBatch
from rlsd_lab.sharding import fsdp_strategy, full_value
from rlsd_lab.train import policy_path, run
from rlsd_lab.logprobs import TokenScorer
from rlsd_lab.update import accumulate_policy_gradients
from tests.helpers.configs import compose_config
from tests.helpers.experience import experience
from tests.test_end_to_end import FAST
from tests.test_resume import comparable

ROOT = Path(__file__).resolve().parents[1]
PROMPTS, GROUP, LENGTH, WORLD = 4, 4, 12, 2
# Rank 0 gets prompts 0 and 2 (short responses), rank 1 prompts 1 and 3 (long ones): a rank's own token mean
# weighs its tokens 4-5x more than the global one does.
LENGTHS = [[1, 2, 3, 2], [9, 12, 10, 11], [2, 3, 1, 3], [12, 8, 11, 10]]
UPDATE = ["data.prompts_per_step=4", "rollout.group_size=4", f"rollout.max_new_tokens={LENGTH}", "method.lr=0.0",
          "train.micro_batch_size=3", "train.grad_clip=1e9", "verify.workers=0"]


def synthetic_batch(tokenizer) -> tuple[RolloutBatch, torch.Tensor]:
    """A fixed rollout batch with uneven response lengths (left-padded prompts) and per-row advantages."""
    generator = torch.Generator().manual_seed(0)
    rows = PROMPTS * GROUP
    prompt_ids = torch.randint(3, len(tokenizer), (PROMPTS, 6), generator=generator).repeat_interleave(GROUP, 0)
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[::3, :2] = 0
    prompt_ids = prompt_ids.masked_fill(prompt_mask == 0, tokenizer.pad_token_id)
    keep = torch.arange(LENGTH)[None, :] < torch.tensor(LENGTHS).flatten()[:, None]
    response_ids = torch.randint(3, len(tokenizer), (rows, LENGTH), generator=generator)
    batch = RolloutBatch(prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                         response_ids=response_ids.masked_fill(~keep, tokenizer.pad_token_id),
                         response_mask=keep.float(), logprobs=torch.zeros(rows, LENGTH),
                         finished=torch.ones(rows, dtype=torch.bool))
    advantages = torch.randn(rows, generator=generator)[:, None] * batch.response_mask
    return batch, advantages


def rank_rows(rank: int, world_size: int) -> torch.Tensor:
    """The rows of a rank's prompts, as RLModule.training_step shares them."""
    prompts = rank_share(torch.arange(PROMPTS), rank, world_size)
    return (prompts[:, None] * GROUP + torch.arange(GROUP)).flatten()


def select_rows(batch: RolloutBatch, rows: torch.Tensor) -> RolloutBatch:
    return RolloutBatch(**{f.name: getattr(batch, f.name)[rows] for f in dataclasses.fields(batch)})


def flat_grad(model) -> torch.Tensor:
    """The whole gradient (gathered from the ranks' shards under fsdp: every rank must call it)."""
    return torch.cat([full_value(p.grad).flatten() for p in model.parameters()])


def data_parallel_update_job(out: str, strategy: str) -> None:
    """One training step per aggregation through RLModule._update on 2 ranks; rank 0 saves loss and gradient."""
    import lightning as L

    from rlsd_lab.models import build_tiny_qwen2
    from rlsd_lab.module import RLModule
    from rlsd_lab.tokenizer import build_char_tokenizer
    from rlsd_lab.verifiers.pool import VerifierPool
    from tests.conftest import TINY_ARCHITECTURE

    class UpdateOnly(RLModule):
        def on_train_start(self):  # no validation
            pass

        def training_step(self, indices, batch_idx):
            self.cfg.loss.aggregation = AGGREGATIONS[batch_idx]
            rows = rank_rows(self.global_rank, self.trainer.world_size)
            metrics = self.learn(update_experience(select_rows(self.batch, rows), self.advantages[rows]))
            self.results.append({"aggregation": AGGREGATIONS[batch_idx], "loss": metrics["train/loss"],
                                 "grad": flat_grad(self.model).clone()})

    cfg = compose_config(UPDATE)
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    model = build_tiny_qwen2(tokenizer, TINY_ARCHITECTURE)
    module = UpdateOnly(cfg, model, tokenizer, build_objective(cfg.method, cfg.loss), VerifierPool("arith", workers=0),
                        [], [], out)
    module.batch, module.advantages = synthetic_batch(tokenizer)
    module.results = []
    trainer = L.Trainer(accelerator="cpu", strategy=fsdp_strategy(WORLD, 1) if strategy == "fsdp" else strategy,
                        devices=WORLD, max_steps=len(AGGREGATIONS), logger=False,
                        enable_checkpointing=False, use_distributed_sampler=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, torch.utils.data.DataLoader(range(len(AGGREGATIONS)), batch_size=1))
    if trainer.is_global_zero:
        torch.save(module.results, Path(out) / "update.pt")


def update_experience(batch: RolloutBatch, advantages: torch.Tensor):
    """The synthetic batch with its given per-token advantages (no rewards needed)."""
    return experience(torch.zeros(batch.response_ids.shape[0]), rollout=batch, group_size=GROUP,
                      advantages=advantages)


def single_process_update(model, tokenizer, objective, aggregation, rows) -> tuple[float, torch.Tensor]:
    batch, advantages = synthetic_batch(tokenizer)
    model.zero_grad()
    loss_cfg = compose_config(UPDATE + [f"loss.aggregation={aggregation}"]).loss
    sums = accumulate_policy_gradients(model, objective, update_experience(batch, advantages), rows,
                                       loss_cfg=loss_cfg, max_response_length=LENGTH, micro_batch_size=5,
                                       scorer=TokenScorer(1.0, 256))
    return sums["loss"], flat_grad(model)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_data_parallel_update_equals_the_single_process_update_on_the_whole_batch(tmp_path, tiny_model, tokenizer,
                                                                                   strategy):
    result = subprocess.run([sys.executable, __file__, str(tmp_path), strategy], check=False, cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    results = torch.load(tmp_path / "update.pt")
    assert [r["aggregation"] for r in results] == list(AGGREGATIONS)
    cfg = compose_config(UPDATE)
    objective = build_objective(cfg.method, cfg.loss)
    everything = torch.arange(PROMPTS * GROUP)
    for record in results:
        loss, grad = single_process_update(tiny_model, tokenizer, objective, record["aggregation"], everything)
        assert grad.abs().sum() > 0
        torch.testing.assert_close(record["grad"], grad, rtol=1e-4, atol=1e-6)
        assert record["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-7)
        if record["aggregation"] == "token-mean":
            # The mean of per-rank token means (what DDP would give without the global count) is far off.
            naive = sum(single_process_update(tiny_model, tokenizer, objective, "token-mean",
                                              rank_rows(rank, WORLD))[1] for rank in range(WORLD)) / WORLD
            assert (naive - grad).norm() > 0.2 * grad.norm()


def run_entry_point(run_dir: Path, model_dir: Path, *overrides: str, check_collectives: bool = False
                    ) -> pd.DataFrame:
    """A run of the entry point. `check_collectives` (TORCH_DISTRIBUTED_DEBUG=DETAIL): ranks that disagree on a
    collective fail at once instead of hanging (used with fsdp; with ddp's reducer the process crashes)."""
    command = [sys.executable, "-m", "rlsd_lab.train", f"model.path={model_dir}", f"hydra.run.dir={run_dir}", *FAST,
               "threads=1", "verify.workers=0", *overrides]
    debug = {"TORCH_DISTRIBUTED_DEBUG": "DETAIL"} if check_collectives else {}
    result = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **debug})
    assert result.returncode == 0, result.stderr[-3000:]
    return pd.read_csv(run_dir / "metrics.csv")


def test_ddp_run_of_the_entry_point_writes_one_set_of_results(tmp_path, model_dir):
    run_dir = tmp_path / "run"
    metrics = run_entry_point(run_dir, model_dir, "trainer.max_steps=2", "task.val_size=7", "trainer.strategy=ddp",
                              f"trainer.devices={WORLD}", "method=hybrid", "method.beta_h=0.1", "diagnostics.every=1")
    train_rows = metrics.dropna(subset=["train/loss"])
    assert train_rows["step"].tolist() == [1, 2]
    assert train_rows["train/loss"].map(math.isfinite).all()
    assert {"train/grad_norm/grpo", "train/grad_norm/opsd"} <= set(metrics.columns)
    assert metrics.dropna(subset=["val/accuracy"])["step"].tolist() == [0, 2]
    credit = (run_dir / "token_credit.jsonl").read_text().splitlines()
    assert len(credit) == 2 * 4  # steps 0 and 1, diagnostics.credit_samples responses each, from rank 0 only
    assert (run_dir / "summary.json").exists() and (run_dir / "final_policy" / "config.json").exists()


# Rewards that vary on the tiny random model (tests/helpers/rewards.py), so that updates are not zero.
VARIED_REWARDS = "+task.verifier=tests.helpers.rewards:char_parity"
FSDP_SETTINGS = {
    # a periodic teacher (re-synced at step 2) and a KL reference: two sharded frozen copies
    "rlsd_periodic_kl": ["method=rlsd", "method.teacher.mode=periodic", "method.teacher.sync_every=2",
                         "loss.kl_coef=0.01", VARIED_REWARDS],
    # a fixed teacher whose head projects inside the loss (full-vocabulary JSD)
    "opsd_fixed": ["method=opsd", VARIED_REWARDS],
    # on the embedded base policy with its arithmetic rewards: responses stop at different steps on the two ranks
    # and a rank may have no group for the teacher pass, so FSDP sees rank-dependent numbers of calls, which it
    # must not keep a record of (sharding.gathered); with gradient checkpointing and 3-response micro-batches
    "rlsd_base_policy_checkpointed": ["method=rlsd", "model=hf", "model.prompt_format=plain",
                                      "model.gradient_checkpointing=true", "rollout.max_new_tokens=48",
                                      "train.micro_batch_size=3"],
}


@pytest.mark.parametrize("setting", sorted(FSDP_SETTINGS))
def test_fsdp_run_stopped_and_resumed_equals_the_ddp_run(tmp_path, model_dir, setting):
    """Every metric of 4 steps with diagnostics, and the final weights: fsdp (2 ranks, stopped after step 2,
    resumed from its checkpoint) vs one uninterrupted ddp run. Log-prob chunks of 4 tokens: ranks with responses
    of different lengths project different numbers of chunks."""
    if "base_policy" in setting:
        model_dir = policy_path(compose_config([]))  # the embedded base policy (cached)
    common = ["rollout.max_new_tokens=12", "train.logprob_chunk_size=4", "train.checkpoint_every=2",
              "diagnostics.every=2", f"trainer.devices={WORLD}", *FSDP_SETTINGS[setting]]
    ddp = run_entry_point(tmp_path / "ddp", model_dir, *common, "trainer.strategy=ddp", "trainer.max_steps=4")
    for steps, resume in (("2", "null"), ("4", "auto")):
        fsdp = run_entry_point(tmp_path / "fsdp", model_dir, *common, "trainer.strategy=fsdp",
                               f"trainer.max_steps={steps}", f"resume={resume}", check_collectives=True)
    assert fsdp["step"].tolist() == ddp["step"].tolist() == [0, 1, 2, 3, 4]
    assert ddp["train/reward"].sum() > 0 and ddp["train/grad_norm"].iloc[-1] > 0  # updates that move the policy
    assert set(fsdp.columns) == set(ddp.columns)
    pd.testing.assert_frame_equal(comparable(tmp_path / "fsdp"), comparable(tmp_path / "ddp"), rtol=1e-5, atol=1e-7,
                                  check_like=True)  # the same columns, in either file's order
    ddp_weights = load_file(tmp_path / "ddp" / "final_policy" / "model.safetensors")
    fsdp_weights = load_file(tmp_path / "fsdp" / "final_policy" / "model.safetensors")
    assert fsdp_weights.keys() == ddp_weights.keys()
    for name, tensor in ddp_weights.items():
        torch.testing.assert_close(fsdp_weights[name], tensor, rtol=1e-4, atol=5e-6)  # AdamW amplifies float noise


def test_unsupported_combinations_and_uneven_shares_stop_at_start(tmp_path, model_dir):
    with pytest.raises(ValueError, match="unknown trainer.strategy 'deepspeed'; valid choices: auto, ddp, fsdp"):
        run(compose_config(FAST + [f"model.path={model_dir}", "trainer.strategy=deepspeed"]), tmp_path / "run")
    with pytest.raises(ValueError, match="model.lora.enabled=true is not supported with trainer.strategy=fsdp"):
        run(compose_config(FAST + ["model=hf", f"model.path={model_dir}", "model.lora.enabled=true",
                                   "trainer.strategy=fsdp"]), tmp_path / "run")
    with pytest.raises(ValueError, match="rollout=vllm runs in one process with the whole policy"):
        run(compose_config(FAST + [f"model.path={model_dir}", "rollout=vllm", "trainer.strategy=fsdp"]),
            tmp_path / "run")
    with pytest.raises(ValueError, match="data.prompts_per_step=4 is the global number of prompts per step"):
        check_batch_config(compose_config(FAST), world_size=3)
    with pytest.raises(ValueError, match="8 responses on each of 2 ranks, which cannot be split into "
                                         "train.mini_batches=3"):
        check_batch_config(compose_config(FAST + ["train.mini_batches=3"]), world_size=2)


if __name__ == "__main__":
    data_parallel_update_job(sys.argv[1], sys.argv[2])
