"""The RL LightningModule: rollout -> verify -> per-token advantages -> clipped policy-gradient update.

One `training_step` consumes one batch of prompts (a "step" in every metric and config below). With the
default one epoch and one mini-batch it makes exactly one optimiser step per rollout batch, as in the paper.
Metrics go to the Lightning logger at step = number of rollout batches done; step 0 is the base policy.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from methods import Objective, ScoredRollout
from methods.grpo import group_advantages
from rlsd_lab.credit import alternate_outcomes, objective_credit, write_credit_records
from rlsd_lab.credit_quality import credit_quality, decoded_tokens, first_error_positions
from rlsd_lab.diagnostics import delta_by_outcome, leakage_rate, reasoning_mask, teacher_student_kl
from rlsd_lab.distributed import (
    GradientSync,
    check_prompts_per_rank,
    gather_objects,
    rank_share,
    reduce_metrics,
    sum_over_ranks,
)
from rlsd_lab.evaluation import decode_responses, greedy_accuracy
from rlsd_lab.guards import UpdateGuard
from rlsd_lab.logprobs import TeacherStates, response_hidden, response_logprobs
from rlsd_lab.models import initial_weights
from rlsd_lab.prompts import ANSWER_MARKER, PromptRenderer, reference_text
from rlsd_lab.resume import CHECKPOINT_KEY, rng_state, set_rng_state
from rlsd_lab.rollout import HFRolloutEngine, SamplingParams, build_engine, stop_token_ids
from rlsd_lab.rollout.mismatch import logprob_mismatch, truncated_is_weights
from rlsd_lab.sharding import full_value, gathered, is_sharded, shard_model
from rlsd_lab.tasks.problem import Problem
from rlsd_lab.teacher import TeacherPass
from rlsd_lab.timing import PhaseTimer
from rlsd_lab.update import UpdateInputs, accumulate_policy_gradients
from rlsd_lab.verifiers.base import Verdict
from rlsd_lab.verifiers.pool import FAILURE_REASONS, VerifierPool

log = logging.getLogger(__name__)
# Every step's full metrics line; conf/config.yaml routes it to train.log only, keeping the console readable.
step_log = logging.getLogger("rlsd_lab.steps")


def check_batch_config(cfg, world_size: int = 1) -> None:
    """Explains, in words, batch settings that cannot work together (on `world_size` data-parallel ranks)."""
    if cfg.rollout.group_size < 2:
        raise ValueError(f"rollout.group_size={cfg.rollout.group_size}: group-normalised advantages need at least "
                         "2 responses per prompt")
    check_prompts_per_rank(cfg.data.prompts_per_step, world_size)
    rows = cfg.data.prompts_per_step // world_size * cfg.rollout.group_size
    per_rank = f" on each of {world_size} ranks" if world_size > 1 else ""
    if rows % cfg.train.mini_batches:
        raise ValueError(f"a step has data.prompts_per_step x rollout.group_size = {rows} responses{per_rank}, which "
                         f"cannot be split into train.mini_batches={cfg.train.mini_batches} equal mini-batches")
    if cfg.train.micro_batch_size < 1:
        raise ValueError("train.micro_batch_size must be at least 1 response")
    early = cfg.train.get("val_early") or {}
    if early and not (isinstance(early.get("until"), int) and early["until"] >= 0
                      and isinstance(early.get("every"), int) and early["every"] >= 1):
        raise ValueError(f"train.val_early needs until >= 0 and every >= 1 (integers), got {dict(early)}")


def optimizer_steps_per_rollout(cfg) -> int:
    return cfg.train.ppo_epochs * cfg.train.mini_batches


def validation_due(step: int, cfg) -> bool:
    """After step `step`: every `train.val_every` steps, every `train.val_early.every` steps up to
    `train.val_early.until`, and at the last step."""
    early = cfg.train.get("val_early") or {"until": 0, "every": 1}
    return (step % cfg.train.val_every == 0 or step == cfg.trainer.max_steps
            or (step <= early["until"] and step % early["every"] == 0))


def verdict_metrics(verdicts: list[Verdict]) -> dict[str, float]:
    """`verify/<reason>`: the share of responses scored for each reason (e.g. `verify/wrong_answer`);
    `verify/score/<name>`: the mean of each sub-score; `verify/failures`: how many verifier runs failed
    (timeout, crash, exception) this step."""
    counts = Counter(v.reason.replace(" ", "_") for v in verdicts)
    metrics = {f"verify/{reason}": count / len(verdicts) for reason, count in counts.items()}
    sub_scores = defaultdict(list)
    for verdict in verdicts:
        for name, value in verdict.scores.items():
            sub_scores[name].append(value)
    metrics.update({f"verify/score/{name}": sum(values) / len(values) for name, values in sub_scores.items()})
    metrics["verify/failures"] = float(sum(v.reason in FAILURE_REASONS for v in verdicts))
    return metrics


class RLModule(L.LightningModule):
    def __init__(self, cfg, model, tokenizer, objective: Objective, verifier: VerifierPool,
                 train_problems: list[Problem], val_problems: list[Problem], run_dir: str | Path, rank: int = 0,
                 error_locator=None):
        """`rank`: the data-parallel rank, added to the sampling seed so that ranks draw independent responses.
        `error_locator(response_text, problem)`: the task's first-error locator (`task.first_error`), when it has
        one; it enables the credit-against-ground-truth metrics (rlsd_lab/credit_quality.py)."""
        super().__init__()
        check_batch_config(cfg)
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.objective, self.verifier = objective, verifier
        self.train_problems, self.val_problems = train_problems, val_problems
        self.automatic_optimization = False
        self.prompts = PromptRenderer(cfg.model.prompt_format, tokenizer, cfg.model.get("chat_template_options"))
        self.engine = build_engine(cfg.rollout.name, model, tokenizer, seed=cfg.seed + rank,
                                   **cfg.rollout.get("engine", {}))
        self.sampling = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                                       top_p=cfg.rollout.top_p, n=cfg.rollout.group_size)
        self.shuffle_generator = torch.Generator().manual_seed(cfg.seed)
        self.reference_model = None
        if cfg.loss.kl_coef > 0:  # the initial policy; for a LoRA policy its base model (no copy)
            self.reference_model = initial_weights(model)
        # Objectives without a teacher still get a live one for the periodic diagnostics.
        teacher_cfg = cfg.method.teacher if objective.uses_teacher else {"mode": "live", "sync_every": 1}
        self.teacher = TeacherPass(model, teacher_cfg["mode"], teacher_cfg["sync_every"])
        self.teacher_reference = cfg.method.teacher.reference if objective.uses_teacher else cfg.diagnostics.reference
        self.error_locator = error_locator
        self._fixed_teacher_accuracy: dict[str, float] | None = None  # a fixed teacher's, measured once
        self.run_dir = Path(run_dir)
        self.rollout_step = 0
        self.guard = UpdateGuard(cfg.train.max_consecutive_skips)

    @property
    def optimizer_steps_per_rollout(self) -> int:
        return optimizer_steps_per_rollout(self.cfg)

    def configure_model(self):
        """trainer.strategy=fsdp: shards the policy and its frozen copies before Lightning builds the optimiser."""
        if not isinstance(self.trainer.strategy, ModelParallelStrategy) or is_sharded(self.model):
            return
        mesh = self.device_mesh["data_parallel"]
        for model in (self.model, self.reference_model, self.teacher.frozen):
            if model is not None:
                shard_model(model, mesh)

    def configure_optimizers(self):
        optim = self.cfg.optim
        trainable = [p for p in self.model.parameters() if p.requires_grad]  # LoRA: the adapters only
        optimizer = torch.optim.AdamW(trainable, lr=self.cfg.method.lr, betas=tuple(optim.betas),
                                      weight_decay=optim.weight_decay)
        warmup = max(1, optim.warmup_steps * self.optimizer_steps_per_rollout)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ---- validation -------------------------------------------------------------------------------------------
    def validate_policy(self) -> dict[str, float]:
        """Greedy accuracy on the validation set; data-parallel ranks each score a share and sum the counts."""
        return {f"val/{k}": v for k, v in self._greedy_validation(self.engine, self.model).items()}

    def validate_teacher(self) -> dict[str, float]:
        """The teacher's greedy accuracy on the validation set with its reference in the prompt. A live (or
        periodic) teacher moves with the policy; a fixed one is measured once. Always on the HF engine."""
        if self.teacher.mode == "fixed" and self._fixed_teacher_accuracy is not None:
            return self._fixed_teacher_accuracy
        weights = self.model if self.teacher.frozen is None else self.teacher.frozen
        engine = self.engine if weights is self.model and self.cfg.rollout.name == "hf" else HFRolloutEngine(
            weights, self.tokenizer.pad_token_id, stop_token_ids(self.model, self.tokenizer))
        result = self._greedy_validation(engine, weights, self.teacher_reference)
        metrics = {"teacher/val_accuracy": result["accuracy"], "teacher/val_response_length": result["response_length"]}
        if self.teacher.mode == "fixed":
            self._fixed_teacher_accuracy = metrics
        return metrics

    def _greedy_validation(self, engine, model, reference_mode: str | None = None) -> dict[str, float]:
        problems = rank_share(self.val_problems, self.global_rank, self.trainer.world_size)
        with gathered(model):
            result = greedy_accuracy(engine, self.tokenizer, self.verifier, problems,
                                     self.cfg.rollout.max_new_tokens, batch_size=self.cfg.train.val_batch_size,
                                     prompts=self.prompts, reference_mode=reference_mode
                                     ) if problems else {"accuracy": 0.0, "response_length": 0.0}
        if self.trainer.world_size > 1:  # the shares' means, weighted by their sizes
            totals = sum_over_ranks(torch.tensor([value * len(problems) for value in result.values()],
                                                 dtype=torch.float64, device=self.device))
            result = {name: float(total) / len(self.val_problems) for name, total in zip(result, totals)}
        return result

    # ---- checkpoints (rlsd_lab/resume.py) ----------------------------------------------------------------------
    def _generators(self) -> dict[str, torch.Generator]:
        return {"rollout": self.engine.generator, "shuffle": self.shuffle_generator}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Adds what Lightning does not save, with every rank's RNG states; first writes out the metrics logged so
        far, so that the run directory holds every row up to the checkpoint's step."""
        for logger in self.loggers:
            logger.save()
        checkpoint[CHECKPOINT_KEY] = {"rollout_step": self.rollout_step, "guard": self.guard.state_dict(),
                                      "rng": gather_objects(rng_state(self._generators()))}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint[CHECKPOINT_KEY]
        self.rollout_step = state["rollout_step"]
        self.guard.load_state_dict(state["guard"])
        if len(state["rng"]) == self.trainer.world_size:
            set_rng_state(state["rng"][self.global_rank], self._generators())
        else:
            log.warning("resuming %d data-parallel ranks from a checkpoint of %d: the random number generators start "
                        "from the seed, so the run does not continue exactly", self.trainer.world_size,
                        len(state["rng"]))

    def on_train_start(self):
        self.engine.sync_weights(self.model)  # a resumed checkpoint replaced the weights the engine started from
        if self.rollout_step == 0:
            metrics = self.validate_policy()
            self._log(metrics, step=0)
            if self.global_rank == 0:
                log.info("step=0 %s", " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

    # ---- one RL step ------------------------------------------------------------------------------------------
    def training_step(self, indices: torch.Tensor, batch_idx: int):
        """`indices`: the step's global batch of prompts, the same on every rank; each rank rolls out its share."""
        timer = PhaseTimer()
        step = self.rollout_step
        indices = rank_share(indices, self.global_rank, self.trainer.world_size)
        problems = [self.train_problems[i] for i in indices.tolist()]
        rows = [p for p in problems for _ in range(self.cfg.rollout.group_size)]
        with timer.phase("rollout"):
            prompts = [self.prompts.ids(p) for p in problems]
            with gathered(self.model):
                rollout = self.engine.generate(prompts, self.sampling)
        with timer.phase("verify"):
            texts = decode_responses(self.tokenizer, rollout)
            verdicts = self.verifier.score_batch(texts, rows)
            rewards = torch.tensor([v.reward for v in verdicts], device=rollout.response_mask.device)
        inputs = UpdateInputs(advantages=torch.empty(0))
        if self.reference_model is not None:
            with timer.phase("reference"):
                inputs.ref_logprobs = self._logprobs(self.reference_model, rollout)
        if self.optimizer_steps_per_rollout > 1 or self.cfg.rollout.name != "hf":
            # Later mini-batches run on updated weights, and another engine's log-probs are not the trainer's
            # (rollout/mismatch.py): pi_old from the trainer before the first step.
            with timer.phase("old_logprobs"):
                inputs.old_logprobs = self._logprobs(self.model, rollout)
        scored = ScoredRollout(rewards=rewards, response_mask=rollout.response_mask,
                               group_size=self.cfg.rollout.group_size,
                               student_logprobs=inputs.old_logprobs if inputs.old_logprobs is not None
                               else rollout.logprobs,
                               reasoning_mask=reasoning_mask(rollout.response_ids, rollout.response_mask,
                                                             self.encode(ANSWER_MARKER))
                               if self.cfg.method.get("reasoning_only") else None)
        diagnose = step % self.cfg.diagnostics.every == 0
        teacher_states, teacher_metrics = None, {}
        if self.objective.uses_teacher or diagnose:
            # Diagnostics need every group; otherwise only the groups whose Delta the objective will read.
            groups = (torch.ones(len(problems), dtype=torch.bool) if diagnose
                      else self.objective.teacher_groups(scored).cpu())
            with timer.phase("teacher"):
                scored.teacher_logprobs, teacher_states = self._teacher_pass(
                    rollout, problems, groups, step,
                    keep_hidden=self.objective.token_divergence is not None or diagnose)
            teacher_metrics = {"train/teacher_groups_fraction": float(groups.float().mean())}
            inputs.delta = scored.delta if self.objective.uses_teacher else None
            inputs.teacher = teacher_states if self.objective.uses_teacher else None
        inputs.advantages, advantage_metrics = self.objective.token_advantages(scored, step)
        if self.cfg.rollout.get("tis_cap"):
            # Truncated importance sampling toward the engine's policy. The clipped surrogate is positively
            # homogeneous in the advantage, so scaling A_t by w_t >= 0 scales each token's policy-gradient term by w_t.
            inputs.advantages = inputs.advantages * truncated_is_weights(
                inputs.old_logprobs, rollout.logprobs, self.cfg.rollout.tis_cap) * rollout.response_mask
        # fsdp: a frozen teacher's head projects its hidden states inside the loss (full-vocabulary divergences)
        frozen_head = self.teacher.frozen if self.objective.token_divergence is not None else None
        with timer.phase("update"), gathered(frozen_head):
            # Per-term gradients are taken w.r.t. whole parameters, which FSDP only holds inside its hooks.
            update_metrics = self._update(rollout, inputs, measure_terms=diagnose and not is_sharded(self.model))
        self.rollout_step += 1

        metrics = {**update_metrics, **teacher_metrics, **{f"train/{k}": v for k, v in advantage_metrics.items()}}
        metrics.update(self._rollout_metrics(rollout, rewards, timer))
        metrics.update(verdict_metrics(verdicts))
        if self.cfg.rollout.name != "hf":  # the engine's log-probs vs the trainer's, on the same tokens
            metrics.update(logprob_mismatch(rollout.logprobs, inputs.old_logprobs, rollout.response_mask))
        metrics["train/leakage_rate"] = self._leakage_rate(texts)
        if diagnose:
            with timer.phase("diagnostics"):
                metrics.update(self._diagnostics(rollout, scored, teacher_states, rows, texts, step))
        if validation_due(self.rollout_step, self.cfg):
            with timer.phase("validation"):
                metrics.update(self.validate_policy())
        metrics.update({f"time/{k}": v for k, v in timer.seconds.items()})
        metrics = reduce_metrics(metrics)  # over data-parallel ranks; the same on every rank
        self._log(metrics, step=self.rollout_step)
        self.guard.check(self.rollout_step)
        if self.global_rank != 0:
            return
        step_log.info("step=%d %s", self.rollout_step, " ".join(f"{k}={metrics[k]:.4f}" for k in sorted(metrics)))
        if "val/accuracy" in metrics:
            log.info("step=%d val/accuracy=%.4f train/reward=%.4f time/step=%.2fs", self.rollout_step,
                     metrics["val/accuracy"], metrics["train/reward"], sum(timer.seconds.values()))

    def _log(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _teacher_pass(self, rollout, problems: list[Problem], groups: torch.Tensor, step: int, keep_hidden: bool):
        """Teacher log-probs (and hidden states) of the sampled responses under the privileged prompt.

        Only the selected `groups` [prompts] are run; the other rows get the student's log-probs (Delta = 0).
        """
        mode = self.teacher_reference
        group_size = self.cfg.rollout.group_size
        rows = groups.repeat_interleave(group_size).to(rollout.response_ids.device)
        teacher = self.teacher.weights(self.model, step)  # always called: a periodic copy re-syncs on schedule
        logprobs = rollout.logprobs.clone()
        with gathered(teacher):  # fsdp: entered by every rank, also one without a group to score
            if not bool(groups.any()):
                return logprobs, None
            teacher_prompts = [self.prompts.ids(p, reference_text(p, mode))
                               for p, keep in zip(problems, groups.tolist()) if keep]
            selected, states = self.teacher.run(teacher, teacher_prompts,
                                                rollout.response_ids[rows], group_size, self.tokenizer.pad_token_id,
                                                self.cfg.rollout.temperature, self.cfg.train.logprob_chunk_size,
                                                keep_hidden)
        logprobs[rows] = selected
        return logprobs, states

    def _leakage_rate(self, texts: list[str]) -> float:
        cfg = self.cfg.diagnostics
        return leakage_rate(texts, list(cfg.leakage_phrases), ANSWER_MARKER, cfg.answer_first)

    @torch.no_grad()
    def _diagnostics(self, rollout, scored: ScoredRollout, teacher_states, rows, texts, step) -> dict[str, float]:
        """Every `diagnostics.every` steps: the on-policy teacher-student KL, the teacher's own validation accuracy
        and its Delta on correct vs wrong responses, credit against ground truth, and a token-credit export."""
        with gathered(self.model, self.teacher.frozen):  # fsdp: rank 0 alone exports the credit
            length = rollout.response_ids.shape[1]
            student_hidden = response_hidden(self.model, rollout.input_ids, rollout.attention_mask, length)
            student_states = TeacherStates(student_hidden, self.model.get_output_embeddings())
            metrics = {"train/teacher_student_kl": teacher_student_kl(
                student_states, teacher_states, rollout.response_mask, self.cfg.rollout.temperature,
                self.cfg.train.logprob_chunk_size)}
            credit = objective_credit(self.objective, scored, step, student_states, teacher_states,
                                      rollout.response_ids, self.cfg.rollout.temperature,
                                      self.cfg.train.logprob_chunk_size)
        metrics.update(self.validate_teacher())
        metrics.update(delta_by_outcome(scored))
        lengths = rollout.response_lengths().long().tolist()
        token_texts = [decoded_tokens(self.tokenizer, ids[:n])
                       for ids, n in zip(rollout.response_ids.tolist(), lengths)]
        first_errors = (first_error_positions(texts, rows, self.error_locator, token_texts, lengths)
                        if self.error_locator else [None] * len(rows))
        if self.error_locator:
            metrics.update(credit_quality(credit, scored.student_logprobs, scored.rewards, lengths, first_errors,
                                          token_texts))
        if self.cfg.diagnostics.credit_samples and self.global_rank == 0:  # one writer; rank 0's responses
            self._export_credit(rollout, scored, credit, rows, first_errors, step)
        return metrics

    def _export_credit(self, rollout, scored, credit, rows, first_errors, step) -> None:
        """Writes the credit of a few responses with A != 0 (the others get no credit), correct and wrong ones in
        turn, each with its first error (token index) where the task locates one."""
        # The run's own group normalisation (Dr. GRPO: scale_by_std=false); OPSD has none, the default is shown.
        sequence_advantages = group_advantages(scored.rewards, scored.group_size,
                                               self.cfg.method.get("scale_by_std", True))
        sample = alternate_outcomes(scored.rewards, sequence_advantages, self.cfg.diagnostics.credit_samples)
        lengths = rollout.response_lengths().long()
        tokens = [self.tokenizer.convert_ids_to_tokens(rollout.response_ids[i, :lengths[i]].tolist()) for i in sample]
        write_credit_records(self.run_dir / "token_credit.jsonl", step, self.objective.name,
                             [self.prompts.text(rows[i]) for i in sample], tokens, credit[sample],
                             scored.rewards[sample], sequence_advantages[sample], [first_errors[i] for i in sample])

    def _logprobs(self, model, rollout) -> torch.Tensor:
        with torch.no_grad(), gathered(model):
            return response_logprobs(model, rollout.input_ids, rollout.attention_mask, rollout.response_ids.shape[1],
                                     self.cfg.rollout.temperature, self.cfg.train.logprob_chunk_size).logprobs

    def _update(self, rollout, inputs: UpdateInputs, measure_terms: bool) -> dict[str, float]:
        optimizer, schedule = self.optimizers(), self.lr_schedulers()
        cfg = self.cfg.train
        sync = GradientSync(self)  # data parallel: the ranks' gradients add up to the global mini-batch's
        rows = rollout.response_ids.shape[0]
        sums: dict[str, float] = defaultdict(float)
        skipped = 0
        for _ in range(cfg.ppo_epochs):
            shuffle = cfg.mini_batches > 1
            order = torch.randperm(rows, generator=self.shuffle_generator) if shuffle else torch.arange(rows)
            for mini in order.chunk(cfg.mini_batches):
                optimizer.zero_grad()
                step_sums = accumulate_policy_gradients(
                    self.model, self.objective, rollout, inputs, mini, self.cfg.loss.aggregation,
                    self.cfg.rollout.max_new_tokens, cfg.micro_batch_size, self.cfg.rollout.temperature,
                    cfg.logprob_chunk_size, backward=sync.backward, measure_terms=measure_terms,
                    defer_sync=sync.deferred)
                for name, value in step_sums.items():
                    sums[name] += value
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                grad_norm = float(full_value(norm))  # under fsdp the norm of the sharded gradient is a DTensor
                sums["grad_norm"] += grad_norm
                sums["lr"] += schedule.get_last_lr()[0]
                if not self.guard.allows(step_sums["loss"], grad_norm, self.device):
                    skipped += 1
                    optimizer.zero_grad(set_to_none=True)  # AdamW leaves parameters without a gradient alone
                optimizer.step()  # also when skipped, so that Lightning counts it (rlsd_lab/guards.py)
                schedule.step()
        self.engine.sync_weights(self.model)  # the next rollouts and validation sample from the updated policy
        metrics = {f"train/{name}": total / self.optimizer_steps_per_rollout for name, total in sums.items()}
        return metrics | {"train/skipped_updates": float(skipped),
                          "train/skipped_updates_total": float(self.guard.total)}

    def _rollout_metrics(self, rollout, rewards: torch.Tensor, timer: PhaseTimer) -> dict[str, float]:
        lengths = rollout.response_lengths()
        generated = float(lengths.sum())
        total_tokens = generated + float(rollout.prompt_mask.sum())
        step_seconds = sum(timer.seconds.values())
        return {
            "train/reward": float(rewards.mean()),
            "train/accuracy": float((rewards == 1.0).float().mean()),
            "train/response_length": float(lengths.mean()),
            "train/response_clip_fraction": float((~rollout.finished).float().mean()),
            "perf/rollout_tokens_per_s": generated / max(timer.seconds["rollout"], 1e-9),
            "perf/step_tokens_per_s": total_tokens / max(step_seconds, 1e-9),
        }
