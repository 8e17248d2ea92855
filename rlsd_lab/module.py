"""The RL LightningModule. One `training_step` is one RL step, in two phases joined by one record:

    experience = make_experience(problems, step)   # rollout, verify, reference / old / teacher log-probs, advantages
    metrics = learn(experience)                    # mini-batches, micro-batches, clipping, the guard, the step

Diagnostics (every `diagnostics.every` steps) read the experience before `learn`, on the weights that sampled
it; validation runs after `learn`, on the updated weights. With the default one epoch and one mini-batch a step
makes exactly one optimiser step, as in the paper. Metrics go to the Lightning logger at step = RL steps done;
step 0 is the base policy.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from methods import Objective
from methods.grpo import group_advantages
from rlsd_lab.config import TeacherConfig
from rlsd_lab.credit import alternate_outcomes, token_credit, write_credit_records
from rlsd_lab.credit_quality import credit_quality, decoded_tokens, first_error_positions
from rlsd_lab.diagnostics import delta_by_outcome, leakage_rate, reasoning_mask
from rlsd_lab.dynamic_sampling import GroupPicker
from rlsd_lab.distributed import (
    GradientSync,
    check_prompts_per_rank,
    gather_objects,
    rank_share,
    reduce_metrics,
    sum_over_ranks,
)
from rlsd_lab.evaluation import decode_responses, greedy_accuracy
from rlsd_lab.experience import Experience, teacher_groups
from rlsd_lab.external_teacher import load_external_teacher
from rlsd_lab.guards import UpdateGuard
from rlsd_lab.logprobs import TokenScorer, response_states
from rlsd_lab.models import initial_weights
from rlsd_lab.prompts import ANSWER_MARKER, PromptRenderer, reference_text
from rlsd_lab.resume import CHECKPOINT_KEY, rng_state, set_rng_state
from rlsd_lab.reward_shaping import reward_shaping
from rlsd_lab.rollout import HFRolloutEngine, SamplingParams, build_engine, concat_rollouts, stop_token_ids
from rlsd_lab.rollout.mismatch import engine_correction, logprob_mismatch
from rlsd_lab.sharding import full_value, gathered, is_sharded, shard_model
from rlsd_lab.tasks.problem import Problem
from rlsd_lab.teacher import TeacherPass
from rlsd_lab.timing import PhaseTimer
from rlsd_lab.update import accumulate_policy_gradients
from rlsd_lab.verifiers.base import Verdict
from rlsd_lab.verifiers.pool import FAILURE_REASONS, VerifierPool

log = logging.getLogger(__name__)
# Every step's full metrics line; conf/config.yaml routes it to train.log only, keeping the console readable.
step_log = logging.getLogger("rlsd_lab.steps")


def check_batch_config(cfg, world_size: int = 1) -> None:
    """Explains, in words, batch settings that cannot work together on `world_size` data-parallel ranks (each
    value's own range is checked by rlsd_lab/config.py)."""
    check_prompts_per_rank(cfg.data.prompts_per_step, world_size)
    rows = cfg.data.prompts_per_step // world_size * cfg.rollout.group_size
    per_rank = f" on each of {world_size} ranks" if world_size > 1 else ""
    if rows % cfg.train.mini_batches:
        raise ValueError(f"a step has data.prompts_per_step x rollout.group_size = {rows} responses{per_rank}, which "
                         f"cannot be split into train.mini_batches={cfg.train.mini_batches} equal mini-batches")


def optimizer_steps_per_rollout(cfg) -> int:
    return cfg.train.ppo_epochs * cfg.train.mini_batches


def validation_due(step: int, cfg) -> bool:
    """After step `step`: every `train.val_every` steps, every `train.val_early.every` steps up to
    `train.val_early.until`, and at the last step."""
    early = cfg.train.val_early
    return (step % cfg.train.val_every == 0 or step == cfg.trainer.max_steps
            or (step <= early.until and step % early.every == 0))


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
                 error_locator=None, val_sets: dict[str, list[Problem]] | None = None):
        """`rank`: the data-parallel rank, added to the sampling seed so that ranks draw independent responses.
        `error_locator(response_text, problem)`: the task's first-error locator (`task.first_error`), when it has
        one; it enables the credit-against-ground-truth metrics (rlsd_lab/credit_quality.py).
        `val_sets`: more validation sets (`train.val_sets`), validated with the training task's."""
        super().__init__()
        check_batch_config(cfg)
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.objective, self.verifier = objective, verifier
        self.train_problems, self.val_problems = train_problems, val_problems
        self.val_sets = val_sets or {}
        self.automatic_optimization = False
        self.prompts = PromptRenderer(cfg.model.prompt_format, tokenizer, cfg.model.get("chat_template_options"))
        self.engine = build_engine(cfg.rollout.name, model, tokenizer, seed=cfg.seed + rank,
                                   **cfg.rollout.get("engine", {}))
        self.sampling = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                                       top_p=cfg.rollout.top_p, n=cfg.rollout.group_size)
        self.scorer = TokenScorer(cfg.rollout.temperature, cfg.train.logprob_chunk_size)
        self.shuffle_generator = torch.Generator().manual_seed(cfg.seed)
        # data.dynamic_sampling's extra prompts: per rank, apart from the loader's order (saved for resume)
        self.dynamic_generator = torch.Generator().manual_seed(cfg.seed * 1000 + 7 + rank)
        self.reference_model = None
        if cfg.loss.kl_coef > 0:  # the initial policy; for a LoRA policy its base model (no copy)
            self.reference_model = initial_weights(model)
        # Objectives without a teacher still get a live one for the periodic diagnostics.
        teacher = objective.needs.teacher or TeacherConfig("live", cfg.diagnostics.reference, sync_every=1)
        external = None
        if teacher.mode == "external":  # refused here, before training, when its vocabulary is not the student's
            external = load_external_teacher(teacher, cfg.task, model, tokenizer, cfg.trainer.accelerator)
            self.strict_loading = False  # its weights are not in the checkpoints (on_save_checkpoint)
        self.teacher = TeacherPass(model, teacher.mode, teacher.sync_every, teacher.ema_rate, external)
        self.require_stronger_teacher = teacher.mode == "external" and teacher.require_stronger
        self.teacher_reference = teacher.reference
        self.error_locator = error_locator
        self._fixed_teacher_accuracy: dict[str, float] | None = None  # a fixed teacher's, measured once
        self.run_dir = Path(run_dir)
        self.steps_done = 0  # RL steps (rollout batches) done; Lightning's global_step counts optimiser steps
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
        """Greedy accuracy on the validation set (and on each of `train.val_sets`: val/<name>/accuracy);
        data-parallel ranks each score a share and sum the counts."""
        metrics = {f"val/{k}": v for k, v in self._greedy_validation(self.engine, self.model).items()}
        for name, problems in self.val_sets.items():
            result = self._greedy_validation(self.engine, self.model, problems=problems)
            metrics |= {f"val/{name}/{k}": v for k, v in result.items()}
        return metrics

    def validate_teacher(self) -> dict[str, float]:
        """The teacher's greedy accuracy on the validation set with its reference in the prompt. A live (or
        periodic) teacher moves with the policy; a fixed one is measured once. Always on the HF engine."""
        if self.teacher.mode in ("fixed", "external") and self._fixed_teacher_accuracy is not None:
            return self._fixed_teacher_accuracy
        weights = self.model if self.teacher.frozen is None else self.teacher.frozen
        engine = self.engine if weights is self.model and self.cfg.rollout.name == "hf" else HFRolloutEngine(
            weights, self.tokenizer.pad_token_id, stop_token_ids(self.model, self.tokenizer))
        result = self._greedy_validation(engine, weights, self.teacher_reference)
        metrics = {"teacher/val_accuracy": result["accuracy"], "teacher/val_response_length": result["response_length"]}
        if self.teacher.mode in ("fixed", "external"):
            self._fixed_teacher_accuracy = metrics
        return metrics

    def check_teacher_is_stronger(self, student_accuracy: float) -> dict[str, float]:
        """An external teacher must know more than the student, or distilling it teaches nothing: its greedy
        validation accuracy is printed beside the student's, and training stops when it is not higher
        (`method.teacher.require_stronger=false` lets it run)."""
        metrics = self.validate_teacher()
        teacher_accuracy = metrics["teacher/val_accuracy"]
        if self.global_rank == 0:
            print(f"[rlsd_lab] premise: external teacher greedy validation accuracy {teacher_accuracy:.3f} against "
                  f"the student's {student_accuracy:.3f}")
        if teacher_accuracy <= student_accuracy:
            raise RuntimeError(f"the external teacher is not stronger than the student (greedy validation accuracy "
                               f"{teacher_accuracy:.3f} <= {student_accuracy:.3f}); set method.teacher.model to a "
                               "stronger model, or method.teacher.require_stronger=false to train anyway")
        return metrics

    def _greedy_validation(self, engine, model, reference_mode: str | None = None,
                           problems: list[Problem] | None = None) -> dict[str, float]:
        every = self.val_problems if problems is None else problems
        problems = rank_share(every, self.global_rank, self.trainer.world_size)
        with gathered(model):
            result = greedy_accuracy(engine, self.tokenizer, self.verifier, problems,
                                     self.cfg.rollout.max_new_tokens, batch_size=self.cfg.train.val_batch_size,
                                     prompts=self.prompts, reference_mode=reference_mode
                                     ) if problems else {"accuracy": 0.0, "response_length": 0.0}
        if self.trainer.world_size > 1:  # the shares' means, weighted by their sizes
            totals = sum_over_ranks(torch.tensor([value * len(problems) for value in result.values()],
                                                 dtype=torch.float64, device=self.device))
            result = {name: float(total) / len(every) for name, total in zip(result, totals)}
        return result

    # ---- checkpoints (rlsd_lab/resume.py) ----------------------------------------------------------------------
    def _generators(self) -> dict[str, torch.Generator]:
        return {"rollout": self.engine.generator, "shuffle": self.shuffle_generator, "dynamic": self.dynamic_generator}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Adds what Lightning does not save, with every rank's RNG states; first writes out the metrics logged so
        far, so that the run directory holds every row up to the checkpoint's step."""
        for logger in self.loggers:
            logger.save()
        if self.teacher.mode == "external":  # frozen and reloaded from its own directory: not saved again
            for key in [k for k in checkpoint["state_dict"] if k.startswith("teacher.frozen.")]:
                del checkpoint["state_dict"][key]
        checkpoint[CHECKPOINT_KEY] = {"rollout_step": self.steps_done, "guard": self.guard.state_dict(),
                                      "rng": gather_objects(rng_state(self._generators()))}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint[CHECKPOINT_KEY]
        self.steps_done = state["rollout_step"]
        self.guard.load_state_dict(state["guard"])
        if len(state["rng"]) == self.trainer.world_size:
            set_rng_state(state["rng"][self.global_rank], self._generators())
        else:
            log.warning("resuming %d data-parallel ranks from a checkpoint of %d: the random number generators start "
                        "from the seed, so the run does not continue exactly", self.trainer.world_size,
                        len(state["rng"]))

    def on_train_start(self):
        self.engine.sync_weights(self.model)  # a resumed checkpoint replaced the weights the engine started from
        if self.steps_done == 0:
            metrics = self.validate_policy()
            if self.require_stronger_teacher:
                metrics |= self.check_teacher_is_stronger(metrics["val/accuracy"])
            self._log(metrics, step=0)
            if self.global_rank == 0:
                log.info("step=0 %s", " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

    # ---- one RL step ------------------------------------------------------------------------------------------
    def training_step(self, indices: torch.Tensor, batch_idx: int):
        """`indices`: the step's global batch of prompts, the same on every rank; each rank rolls out its share."""
        timer = PhaseTimer()
        shares = rank_share(indices, self.global_rank, self.trainer.world_size)
        problems = [self.train_problems[i] for i in shares.tolist()]
        experience = self.make_experience(problems, self.steps_done, timer)
        diagnose = self.diagnostics_due(experience.step)
        metrics = {}
        if diagnose:  # before the update: the weights that sampled the batch and scored it as a live teacher
            with timer.phase("diagnostics"):
                metrics |= self.diagnose(experience)
        with timer.phase("update"):
            # Per-term gradients are taken w.r.t. whole parameters, which FSDP only holds inside its hooks.
            metrics |= self.learn(experience, measure_terms=diagnose and not is_sharded(self.model))
        metrics |= self.experience_metrics(experience, timer)
        self.steps_done += 1
        if validation_due(self.steps_done, self.cfg):  # after the update: the policy this step produced
            with timer.phase("validation"):
                metrics |= self.validate_policy()
        self.log_step(metrics, timer)

    def diagnostics_due(self, step: int) -> bool:
        return step % self.cfg.diagnostics.every == 0

    @torch.no_grad()
    def make_experience(self, problems: list[Problem], step: int, timer: PhaseTimer | None = None) -> Experience:
        """Samples `rollout.group_size` responses to each problem and scores them with everything the objective
        and this step's diagnostics read. Changes no weights (a periodic or EMA teacher moves on its schedule).
        With `data.dynamic_sampling` the problems are the step's first draw (rlsd_lab/dynamic_sampling.py)."""
        timer, needs, group_size = timer or PhaseTimer(), self.objective.needs, self.cfg.rollout.group_size
        problems, rollout, texts, verdicts, sampling_metrics = self._sample(problems, timer)
        rewards = torch.tensor([v.reward for v in verdicts], device=rollout.response_mask.device)
        shaping = reward_shaping(rollout.response_lengths(), self.cfg.reward, self.cfg.rollout.max_new_tokens)
        shaped = rewards if shaping is None else rewards + shaping
        if shaping is not None:
            sampling_metrics["train/overlong_penalty"] = float(shaping.mean())
        reference = old = None
        if self.reference_model is not None:
            with timer.phase("reference"):
                reference = self._logprobs(self.reference_model, rollout)
        if self.optimizer_steps_per_rollout > 1 or self.cfg.rollout.name != "hf":
            # Later mini-batches run on updated weights, and another engine's log-probs are not the trainer's
            # (rollout/mismatch.py): pi_old from the trainer before the first step.
            with timer.phase("old_logprobs"):
                old = self._logprobs(self.model, rollout)
        experience = Experience(
            step=step, group_size=group_size, problems=problems, rollout=rollout, texts=texts, verdicts=verdicts,
            rewards_B=rewards, sequence_advantages_B=group_advantages(shaped, group_size, needs.scale_by_std),
            reward_shaping_B=shaping, old_logprobs_B_T=old, ref_logprobs_B_T=reference,
            reasoning_mask_B_T=reasoning_mask(rollout.response_ids, rollout.response_mask,
                                              self.encode(ANSWER_MARKER)) if needs.reasoning_mask else None)
        if needs.teacher is not None or self.diagnostics_due(step):
            with timer.phase("teacher"):
                experience = self._with_teacher(experience)
        advantages, metrics = self.objective.token_advantages(experience)
        is_weights, loss_rows = None, None
        if old is not None and self.cfg.rollout.name != "hf":  # toward the engine's policy (rollout/mismatch.py)
            is_weights, loss_rows, mismatch = engine_correction(old, rollout.logprobs, rollout.response_mask,
                                                                self.cfg.rollout)
            sampling_metrics |= mismatch
        if self.cfg.loss.mask_truncated:  # DAPO overlong filtering
            loss_rows = rollout.finished if loss_rows is None else loss_rows & rollout.finished
            sampling_metrics["train/truncated_masked_share"] = float((~rollout.finished).float().mean())
        return replace(experience, advantages=advantages, is_weights_B_T=is_weights, loss_rows_B=loss_rows,
                       advantage_metrics=metrics, sampling_metrics=sampling_metrics)

    def _sample(self, problems: list[Problem], timer: PhaseTimer):
        """(problems, rollout, texts, verdicts, metrics): one draw, or with `data.dynamic_sampling` as many draws
        as it takes to hold `len(problems)` groups whose verifier scores differ (capped)."""
        dynamic = self.cfg.data.dynamic_sampling
        if not dynamic.enabled:
            return problems, *self._rollout_and_verify(problems, timer), {}
        size, picker, batch = self.cfg.rollout.group_size, GroupPicker(wanted=len(problems)), problems
        while True:
            rollout, texts, verdicts = self._rollout_and_verify(batch, timer)
            rows = [slice(g * size, (g + 1) * size) for g in range(len(batch))]
            picker.add([(problem, rollout.rows(r), texts[r], verdicts[r]) for problem, r in zip(batch, rows)],
                       torch.tensor([v.reward for v in verdicts]), size)
            if picker.done or picker.draws >= dynamic.max_draws:
                break
            batch = [self.train_problems[i] for i in torch.randint(
                len(self.train_problems), (len(problems),), generator=self.dynamic_generator).tolist()]
        picked = picker.picked()
        rollout = concat_rollouts([g[1] for g in picked], self.tokenizer.pad_token_id)
        return ([problem for problem, *_ in picked], rollout, [t for g in picked for t in g[2]],
                [v for g in picked for v in g[3]], picker.metrics())

    def _rollout_and_verify(self, problems: list[Problem], timer: PhaseTimer):
        group_size = self.cfg.rollout.group_size
        with timer.phase("rollout"), gathered(self.model):
            rollout = self.engine.generate([self.prompts.ids(p) for p in problems], self.sampling)
        with timer.phase("verify"):
            texts = decode_responses(self.tokenizer, rollout)
            verdicts = self.verifier.score_batch(texts, [p for p in problems for _ in range(group_size)])
        return rollout, texts, verdicts

    def _with_teacher(self, experience: Experience) -> Experience:
        """Delta of the sampled tokens under the privileged prompt (and the teacher's hidden states when a
        full-vocabulary divergence or the diagnostics read them). Diagnostic steps score every group, others
        only those the objective reads (Needs.teacher_groups); skipped rows keep the student's own log-probs,
        so their Delta is exactly 0."""
        needs, group_size, rollout = self.objective.needs, experience.group_size, experience.rollout
        diagnose = self.diagnostics_due(experience.step)
        groups = teacher_groups("all" if diagnose else needs.teacher_groups, experience.sequence_advantages_B,
                                group_size).cpu()
        rows = groups.repeat_interleave(group_size).to(rollout.response_ids.device)
        per_row = self.objective.teacher_references(experience)
        if per_row is None:  # one prompt per scored group, its KV cache shared by the group's responses
            prompts = [self.prompts.ids(p, reference_text(p, self.teacher_reference))
                       for p, keep in zip(experience.problems, groups.tolist()) if keep]
            shared_by = group_size
        else:  # the objective's own block for every row
            rows = torch.ones_like(rows)
            prompts, shared_by = [self.prompts.ids(p, ref) for p, ref in zip(experience.row_problems, per_row)], 1
        student = experience.student_logprobs_B_T
        teacher_logprobs, states = student.clone(), None
        teacher = self.teacher.weights(self.model, experience.step)  # always called: a periodic copy re-syncs
        with gathered(teacher):  # fsdp: entered by every rank, also one without a group to score
            if prompts:
                selected, states = self.teacher.run(
                    teacher, teacher_prompts=prompts, response_ids=rollout.response_ids[rows], group_size=shared_by,
                    pad_id=self.tokenizer.pad_token_id, scorer=self.scorer,
                    keep_hidden=needs.divergence is not None or diagnose)
                teacher_logprobs[rows] = selected
        delta = ((teacher_logprobs - student) * rollout.response_mask).detach()
        return replace(experience, delta_B_T=delta, teacher_rows_B=rows, teacher_states=states)

    def learn(self, experience: Experience, measure_terms: bool = False) -> dict[str, float]:
        """`train.ppo_epochs` passes of `train.mini_batches` optimiser steps over the experience (micro-batched
        gradients, clipping, the non-finite guard); then the engine samples from the new weights. With
        `measure_terms`, the gradient norm of each of the objective's loss terms too."""
        optimizer, schedule = self.optimizers(), self.lr_schedulers()
        cfg = self.cfg.train
        sync = GradientSync(self)  # data parallel: the ranks' gradients add up to the global mini-batch's
        rows = experience.rollout.response_ids.shape[0]
        sums: dict[str, float] = defaultdict(float)
        skipped = 0
        # fsdp: a frozen teacher's head projects its hidden states inside the loss (full-vocabulary divergences)
        frozen_head = self.teacher.frozen if self.objective.needs.divergence is not None else None
        with gathered(frozen_head):
            for _ in range(cfg.ppo_epochs):
                shuffle = cfg.mini_batches > 1
                order = torch.randperm(rows, generator=self.shuffle_generator) if shuffle else torch.arange(rows)
                for mini in order.chunk(cfg.mini_batches):
                    optimizer.zero_grad()
                    step_sums = accumulate_policy_gradients(
                        self.model, self.objective, experience, mini, loss_cfg=self.cfg.loss,
                        max_response_length=self.cfg.rollout.max_new_tokens, micro_batch_size=cfg.micro_batch_size,
                        scorer=self.scorer, backward=sync.backward, measure_terms=measure_terms,
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

    @torch.no_grad()
    def diagnose(self, experience: Experience) -> dict[str, float]:
        """The on-policy teacher-student KL, the teacher's own validation accuracy and its Delta on correct vs
        wrong responses, credit against ground truth, and a token-credit export; on the experience's weights."""
        rollout = experience.rollout
        with gathered(self.model, self.teacher.frozen):  # fsdp: rank 0 alone exports the credit
            student = response_states(self.model, rollout.input_ids, rollout.attention_mask,
                                      rollout.response_ids.shape[1])
            metrics = {"train/teacher_student_kl": self.scorer.kl(student, experience.teacher_states,
                                                                  rollout.response_mask)}
            credit = token_credit(self.objective, experience, student=student, scorer=self.scorer,
                                  micro_batch_size=self.cfg.train.micro_batch_size)
        metrics.update(self.validate_teacher())
        metrics.update(delta_by_outcome(experience.delta_B_T, experience.rewards_B, rollout.response_mask))
        lengths = rollout.response_lengths().long().tolist()
        token_texts = [decoded_tokens(self.tokenizer, ids[:n])
                       for ids, n in zip(rollout.response_ids.tolist(), lengths)]
        first_errors = [None] * len(lengths)
        if self.error_locator:
            first_errors = first_error_positions(experience.texts, experience.row_problems, self.error_locator,
                                                 token_texts, lengths)
            metrics.update(credit_quality(credit, experience.student_logprobs_B_T, experience.rewards_B, lengths,
                                          first_errors, token_texts))
        if self.cfg.diagnostics.credit_samples and self.global_rank == 0:  # one writer; rank 0's responses
            self._export_credit(experience, credit, first_errors)
        return metrics

    def _export_credit(self, experience: Experience, credit: torch.Tensor, first_errors: list[int | None]) -> None:
        """Writes the credit of a few responses with A != 0 (the others get no credit), correct and wrong ones in
        turn, each with its first error (token index) where the task locates one."""
        rollout, advantages = experience.rollout, experience.sequence_advantages_B
        sample = alternate_outcomes(experience.rewards_B, advantages, self.cfg.diagnostics.credit_samples)
        lengths = rollout.response_lengths().long()
        tokens = [self.tokenizer.convert_ids_to_tokens(rollout.response_ids[i, :lengths[i]].tolist()) for i in sample]
        problems = experience.row_problems
        write_credit_records(self.run_dir / "token_credit.jsonl", step=experience.step, method=self.objective.name,
                             prompts=[self.prompts.text(problems[i]) for i in sample], tokens=tokens,
                             credits=credit[sample], rewards=experience.rewards_B[sample],
                             advantages=advantages[sample], first_errors=[first_errors[i] for i in sample])

    # ---- metrics ------------------------------------------------------------------------------------------------
    def experience_metrics(self, experience: Experience, timer: PhaseTimer) -> dict[str, float]:
        """What the step's rollout was like: rewards, lengths, verdicts, the advantages, the engine mismatch,
        leakage, throughput."""
        rollout = experience.rollout
        metrics = {f"train/{k}": v for k, v in experience.advantage_metrics.items()} | experience.sampling_metrics
        if experience.teacher_rows_B is not None:
            metrics["train/teacher_groups_fraction"] = float(experience.teacher_rows_B.float().mean())
        lengths = rollout.response_lengths()
        generated = float(lengths.sum())
        step_seconds = sum(seconds for phase, seconds in timer.seconds.items() if phase != "diagnostics")
        metrics |= {
            "train/reward": float(experience.rewards_B.mean()),
            "train/accuracy": float((experience.rewards_B == 1.0).float().mean()),
            "train/response_length": float(lengths.mean()),
            "train/response_clip_fraction": float((~rollout.finished).float().mean()),
            "perf/rollout_tokens_per_s": generated / max(timer.seconds["rollout"], 1e-9),
            "perf/step_tokens_per_s": (generated + float(rollout.prompt_mask.sum())) / max(step_seconds, 1e-9),
        }
        metrics |= verdict_metrics(experience.verdicts)
        if self.cfg.rollout.name != "hf":  # the engine's log-probs vs the trainer's, on the same tokens
            metrics |= logprob_mismatch(rollout.logprobs, experience.old_logprobs_B_T, rollout.response_mask)
        cfg = self.cfg.diagnostics
        metrics["train/leakage_rate"] = leakage_rate(experience.texts, list(cfg.leakage_phrases), ANSWER_MARKER,
                                                     cfg.answer_first)
        return metrics

    def log_step(self, metrics: dict[str, float], timer: PhaseTimer) -> None:
        metrics = reduce_metrics(metrics | {f"time/{k}": v for k, v in timer.seconds.items()})  # over ranks
        self._log(metrics, step=self.steps_done)
        self.guard.check(self.steps_done)
        if self.global_rank != 0:
            return
        step_log.info("step=%d %s", self.steps_done, " ".join(f"{k}={metrics[k]:.4f}" for k in sorted(metrics)))
        if "val/accuracy" in metrics:
            log.info("step=%d val/accuracy=%.4f train/reward=%.4f time/step=%.2fs", self.steps_done,
                     metrics["val/accuracy"], metrics["train/reward"], sum(timer.seconds.values()))

    def _log(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _logprobs(self, model, rollout) -> torch.Tensor:
        with torch.no_grad(), gathered(model):
            return self.scorer.score(model, rollout.input_ids, rollout.attention_mask,
                                     rollout.response_ids.shape[1]).logprobs
