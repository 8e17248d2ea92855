"""Builds the embedded base policy: a tiny Qwen2 trained from scratch by supervised learning, cached on disk.

The run stops as soon as held-out greedy accuracy enters `target_accuracy` (default 30-60%), leaving room for RL.
The same model later serves as its own teacher when shown a reference, so a share of the training prompts
(`reference_share`) carry a reference block in exactly the teacher-prompt format. Of those, a share
(`shortcut_share`, default 0.3) take the shortcut the reference allows, as real models shown a reference do:
`direct` states the answer without the steps, `cite` opens with the citation marker `@ref` before the steps.
`shortcut_share` is the knob that OPSD leakage studies sweep (0 is the control).

The cache directory is keyed by a hash of everything that shapes the model, so a changed config rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

from rlsd_lab.choices import unknown_choice
from rlsd_lab.evaluation import greedy_accuracy
from rlsd_lab.models import build_tiny_qwen2, count_parameters
from rlsd_lab.prompts import ANSWER_MARKER, CITATION_MARKER, REFERENCE_MODES, reference_text, render_prompt
from rlsd_lab.rollout.hf_engine import HFRolloutEngine
from rlsd_lab.tasks import build_task
from rlsd_lab.tasks.problem import Problem
from rlsd_lab.tokenizer import build_char_tokenizer
from rlsd_lab.verifiers import build_verifier

log = logging.getLogger(__name__)
# Bump when the bootstrap recipe changes in a way the config does not capture, so old caches are not reused.
RECIPE_VERSION = 1
SHORTCUT_STYLES = ("direct", "cite")


def cache_root() -> Path:
    return Path(os.environ.get("RLSD_LAB_CACHE", Path.home() / ".cache" / "rlsd_lab"))


def shortcut_response(problem: Problem, style: str) -> str:
    if style == "direct":
        return f"{ANSWER_MARKER}{problem.answer}"
    if style == "cite":
        return f"{CITATION_MARKER}\n{problem.solution}"
    raise unknown_choice("shortcut style", style, SHORTCUT_STYLES)


def supervised_example(problem: Problem, rng: random.Random, reference_share: float, shortcut_share: float,
                       shortcut_styles: list[str]) -> tuple[str, str]:
    """(prompt, target): a student prompt with the full solution, or a teacher prompt, sometimes with a shortcut."""
    if rng.random() >= reference_share:
        return render_prompt(problem.question), problem.solution
    prompt = render_prompt(problem.question, reference_text(problem, rng.choice(REFERENCE_MODES)))
    if rng.random() < shortcut_share:
        return prompt, shortcut_response(problem, rng.choice(list(shortcut_styles)))
    return prompt, problem.solution


class SupervisedStream(torch.utils.data.IterableDataset):
    """Endless right-padded batches of supervised examples; loss only on target tokens (labels -100 elsewhere)."""

    def __init__(self, task, tokenizer, cfg, seed: int):
        self.task, self.tokenizer, self.cfg, self.seed = task, tokenizer, cfg, seed

    def __iter__(self):
        rng = random.Random(f"bootstrap-{self.seed}")
        pool = self.task.problems("train", self.cfg.train_pool, seed=self.seed)
        while True:
            examples = [supervised_example(rng.choice(pool), rng, self.cfg.reference_share,
                                           self.cfg.shortcut_share, self.cfg.shortcut_styles)
                        for _ in range(self.cfg.batch_size)]
            yield self._collate(examples)

    def _collate(self, examples: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        encode = lambda text: self.tokenizer.encode(text, add_special_tokens=False)
        rows = [(encode(prompt), encode(target) + [self.tokenizer.eos_token_id]) for prompt, target in examples]
        width = max(len(p) + len(t) for p, t in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (prompt, target) in enumerate(rows):
            n = len(prompt) + len(target)
            ids[i, :n] = torch.tensor(prompt + target)
            labels[i, len(prompt):n] = torch.tensor(target)
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class SupervisedModule(L.LightningModule):
    def __init__(self, model, lr: float, warmup_steps: int):
        super().__init__()
        self.model, self.lr, self.warmup_steps = model, lr, warmup_steps

    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        self.log("sft/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=0.0)
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / self.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}


class StopInAccuracyBand(L.Callback):
    """Every `every` steps measures greedy accuracy; stops training once it reaches the band's lower edge."""

    def __init__(self, evaluate, every: int, band: tuple[float, float]):
        self.evaluate, self.every, self.band = evaluate, every, band
        self.history: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every:
            return
        accuracy = self.evaluate()
        self.history.append((step, accuracy))
        pl_module.log("sft/val_accuracy", accuracy, prog_bar=True)
        log.info("bootstrap step=%d val_accuracy=%.3f", step, accuracy)
        if accuracy >= self.band[0]:
            if accuracy > self.band[1]:
                log.warning("bootstrap overshot the band %s: accuracy %.3f at step %d; lower lr or eval more often",
                            self.band, accuracy, step)
            trainer.should_stop = True


def cache_key(model_cfg, task_cfg) -> str:
    not_generator = ("train_size", "val_size", "verifier")
    task_generator = {k: v for k, v in OmegaConf.to_container(task_cfg).items() if k not in not_generator}
    payload = {"recipe": RECIPE_VERSION, "architecture": OmegaConf.to_container(model_cfg.architecture),
               "bootstrap": OmegaConf.to_container(model_cfg.bootstrap), "task": task_generator}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def train_base_policy(model_cfg, task_cfg, out_dir: Path) -> dict:
    cfg = model_cfg.bootstrap
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = build_task(task_cfg)
    tokenizer = build_char_tokenizer()
    model = build_tiny_qwen2(tokenizer, OmegaConf.to_container(model_cfg.architecture))
    engine = HFRolloutEngine(model, tokenizer.pad_token_id, [tokenizer.eos_token_id])
    verifier = build_verifier(task_cfg.name)
    eval_problems = task.problems("val", cfg.eval_size, seed=cfg.seed + 1)
    band = tuple(cfg.target_accuracy)

    def evaluate() -> float:
        return greedy_accuracy(engine, tokenizer, verifier, eval_problems, cfg.max_new_tokens)["accuracy"]

    stopper = StopInAccuracyBand(evaluate, cfg.eval_every, band)
    trainer = L.Trainer(max_steps=cfg.max_steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, callbacks=[stopper], enable_model_summary=False)
    loader = torch.utils.data.DataLoader(SupervisedStream(task, tokenizer, cfg, cfg.seed), batch_size=None)
    started = time.time()
    trainer.fit(SupervisedModule(model, cfg.lr, cfg.warmup_steps), loader)
    steps, accuracy = stopper.history[-1] if stopper.history else (trainer.global_step, evaluate())
    if accuracy < band[0]:
        raise RuntimeError(f"base policy reached only {accuracy:.3f} greedy accuracy in {cfg.max_steps} steps "
                           f"(band {band}); raise model.bootstrap.max_steps or lr")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    summary = {"accuracy": accuracy, "steps": steps, "seconds": round(time.time() - started, 1),
               "parameters": count_parameters(model), "history": stopper.history,
               "config": {"model": OmegaConf.to_container(model_cfg), "task": OmegaConf.to_container(task_cfg)}}
    (out_dir / "bootstrap.json").write_text(json.dumps(summary, indent=2))
    return summary


def ensure_base_policy(model_cfg, task_cfg) -> Path:
    """Path of the cached base policy for this config, training it first if it is not cached yet."""
    final = cache_root() / "base_policy" / cache_key(model_cfg, task_cfg)
    if (final / "bootstrap.json").exists():
        log.info("base policy: using cache %s", final)
        return final
    log.info("base policy: not cached, training it into %s", final)
    staging = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    summary = train_base_policy(model_cfg, task_cfg, staging)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    log.info("base policy: %d parameters, greedy accuracy %.3f after %d steps (%.0f s)",
             summary["parameters"], summary["accuracy"], summary["steps"], summary["seconds"])
    return final
