"""Builds the embedded base policy: a tiny Qwen2 trained from scratch, whose privileged teacher is strong and whose
student is weak, proven on the validation split before it is cached.

Why two phases. The same model is the student (no reference) and its own teacher (a reference block in the
prompt), and OPSD/RLSD only make sense if the teacher knows much more than the student. Trained on one mix of
student and teacher prompts, a tiny model learns to solve the sum and to read the block at the same pace, so by
the time the teacher is good the student is too (../shared/docs/testbed-notes.md). Hence:

1. **Read the block** (`read_phase`): teacher prompts only, the `answer` or `solution` reference half each,
   until the teacher meets both bars (`teacher_bars`) on the monitoring problems.
2. **Solve a little** (`solve_phase`): a share `student_share` of student prompts joins, at `lr_scale` times the
   learning rate, until student greedy accuracy enters `target_accuracy` (room for RL) while the teacher still
   meets its bars, on the monitoring problems *and then* on the RL runs' validation split (`task.val_size`
   problems, seed 0), the record written into `bootstrap.json` under `premise`.

The build fails, naming the bar and the value reached, when the budget (`max_steps`) runs out first.

Shortcuts stay a knob, measured apart from accuracy: a share `shortcut_share` of teacher-prompt examples take
the shortcut a reference allows (`direct`: the answer without steps; `cite`: the citation marker `@ref` before
the steps), as real models shown a reference do. The premise record gives how often the greedy teacher takes
one (`*_shortcut_rate`): a shortcut with the correct number is counted correct, and is still a leak.

The cache directory is keyed by a hash of everything that shapes the model; a cached model without a premise
record that meets the bars (an older recipe) is rebuilt.

    python -m rlsd_lab.bootstrap [model.bootstrap.shortcut_share=0.6 ...]   # build or find it, print its premise
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from rlsd_lab.choices import unknown_choice
from rlsd_lab.diagnostics import shows_leakage
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
RECIPE_VERSION = 2
SHORTCUT_STYLES = ("direct", "cite")
PROMPTS = ("student", "teacher_answer", "teacher_solution")  # the greedy accuracies a premise can hold


def judged_prompts(cfg) -> tuple[str, ...]:
    """The prompts this recipe's premise is measured on: the student's, and the teacher's for each bar (an external
    teacher's recipe, conf/model/tiny_teacher.yaml, has no teacher bars: only its own, unprivileged, accuracy)."""
    return ("student", *(f"teacher_{mode}" for mode in cfg.teacher_bars))


def cache_root() -> Path:
    return Path(os.environ.get("RLSD_LAB_CACHE", Path.home() / ".cache" / "rlsd_lab"))


def shortcut_response(problem: Problem, style: str) -> str:
    if style == "direct":
        return f"{ANSWER_MARKER}{problem.answer}"
    if style == "cite":
        return f"{CITATION_MARKER}\n{problem.solution}"
    raise unknown_choice("shortcut style", style, SHORTCUT_STYLES)


def is_shortcut(text: str) -> bool:
    """A response that took a reference shortcut: it cites `@ref` or states the answer before any step."""
    return shows_leakage(text, [CITATION_MARKER], ANSWER_MARKER, answer_first=True)


def supervised_example(problem: Problem, rng: random.Random, reference_share: float, shortcut_share: float,
                       shortcut_styles: list[str]) -> tuple[str, str]:
    """(prompt, target): a student prompt with the full solution, or a teacher prompt, sometimes with a shortcut."""
    if rng.random() >= reference_share:
        return render_prompt(problem.question), problem.solution
    prompt = render_prompt(problem.question, reference_text(problem, rng.choice(REFERENCE_MODES)))
    if rng.random() < shortcut_share:
        return prompt, shortcut_response(problem, rng.choice(list(shortcut_styles)))
    return prompt, problem.solution


def collate(tokenizer, examples: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded batch; the loss sees only target tokens (labels -100 on prompt and padding)."""
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)
    rows = [(encode(prompt), encode(target) + [tokenizer.eos_token_id]) for prompt, target in examples]
    width = max(len(p) + len(t) for p, t in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, target) in enumerate(rows):
        n = len(prompt) + len(target)
        ids[i, :n] = torch.tensor(prompt + target)
        labels[i, len(prompt):n] = torch.tensor(target)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def check_bootstrap_config(cfg) -> None:
    """Explains, naming the key, a `model.bootstrap` value the build could only trip over later."""
    def share(key: str, value) -> None:
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"model.bootstrap.{key} must be a number in [0, 1], got {value!r}")

    band = list(cfg.target_accuracy)
    if len(band) != 2:
        raise ValueError(f"model.bootstrap.target_accuracy must be [low, high], got {band}")
    for value in band:
        share("target_accuracy", value)
    if band[0] > band[1]:
        raise ValueError(f"model.bootstrap.target_accuracy must be [low, high] with low <= high, got {band}")
    for mode, bar in cfg.teacher_bars.items():
        if mode not in REFERENCE_MODES:
            raise unknown_choice("model.bootstrap.teacher_bars reference mode", mode, REFERENCE_MODES)
        share(f"teacher_bars.{mode}", bar)
    share("student_share", cfg.student_share)
    share("shortcut_share", cfg.shortcut_share)
    for key in ("lr", "lr_scale"):
        if not isinstance(cfg[key], (int, float)) or cfg[key] <= 0:
            raise ValueError(f"model.bootstrap.{key} must be a positive number, got {cfg[key]!r}")
    for key in ("max_steps", "eval_every", "warmup_steps", "eval_size", "batch_size"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"model.bootstrap.{key} must be a positive integer, got {cfg[key]!r}")


def premise_failures(premise: dict, cfg) -> list[str]:
    """The bars `premise` (greedy accuracies by prompt) misses, in words; empty when the premise holds."""
    low, high = cfg.target_accuracy
    failures = []
    if not low <= premise["student"] <= high:
        failures.append(f"student accuracy {premise['student']:.3f} outside model.bootstrap.target_accuracy "
                        f"[{low}, {high}]")
    for mode, bar in cfg.teacher_bars.items():
        reached = premise[f"teacher_{mode}"]
        if reached < bar:
            failures.append(f"teacher accuracy with the {mode} reference {reached:.3f} below "
                            f"model.bootstrap.teacher_bars.{mode}={bar}")
    return failures


class PremiseJudge:
    """Greedy accuracy of student and teacher prompts on fixed problems, and whether they meet the bars."""

    def __init__(self, engine, tokenizer, verifier, cfg):
        self.engine, self.tokenizer, self.verifier, self.cfg = engine, tokenizer, verifier, cfg

    def measure(self, problems: list[Problem], prompts: tuple[str, ...]) -> dict[str, float]:
        results = {}
        for name in prompts:
            mode = name.removeprefix("teacher_") if name != "student" else None
            result = greedy_accuracy(self.engine, self.tokenizer, self.verifier, problems, self.cfg.max_new_tokens,
                                     reference_mode=mode, leakage=is_shortcut)
            results[name] = result["accuracy"]
            results[f"{name}_shortcut_rate"] = result["leakage_rate"]
        return results

    def teacher_ready(self, measured: dict[str, float]) -> bool:
        return all(measured[f"teacher_{mode}"] >= bar for mode, bar in self.cfg.teacher_bars.items())


def train_base_policy(model_cfg, task_cfg, out_dir: Path) -> dict:
    """Trains, proves and saves the base policy into `out_dir`; returns the record written as bootstrap.json."""
    cfg = model_cfg.bootstrap
    torch.manual_seed(cfg.seed)
    task = build_task(task_cfg)
    tokenizer = build_char_tokenizer()
    model = build_tiny_qwen2(tokenizer, OmegaConf.to_container(model_cfg.architecture))
    judge = PremiseJudge(HFRolloutEngine(model, tokenizer.pad_token_id, [tokenizer.eos_token_id]), tokenizer,
                         build_verifier(task_cfg.name), cfg)
    monitor = task.problems("val", cfg.eval_size, seed=cfg.seed + 1)
    validation = task.problems("val", task_cfg.val_size, seed=0)  # the RL runs' validation set (rlsd_lab/train.py)
    pool = task.problems("train", cfg.train_pool, seed=cfg.seed)
    rng = random.Random(f"bootstrap-{cfg.seed}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    prompts = judged_prompts(cfg)
    # Without teacher bars there is nothing to read: straight to phase "solve".
    phase, history, premise, started = "read" if cfg.teacher_bars else "solve", [], None, time.time()
    model.train()
    progress = tqdm(range(1, cfg.max_steps + 1), desc=f"embedded model {model_cfg.name}", unit="step", mininterval=2.0)
    for step in progress:
        reference_share = 1.0 if phase == "read" else 1.0 - cfg.student_share
        lr = cfg.lr * min(1.0, step / cfg.warmup_steps) * (1.0 if phase == "read" else cfg.lr_scale)
        for group in optimizer.param_groups:
            group["lr"] = lr
        examples = [supervised_example(rng.choice(pool), rng, reference_share, cfg.shortcut_share,
                                       cfg.shortcut_styles) for _ in range(cfg.batch_size)]
        loss = model(**collate(tokenizer, examples)).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        loss = loss.item()
        if step % cfg.eval_every:
            continue
        model.eval()
        measured = judge.measure(monitor, prompts[1:] if phase == "read" else prompts)
        history.append({"step": step, "phase": phase, "loss": round(loss, 4), **measured})
        progress.set_postfix({"phase": phase, **{k: f"{v:.2f}" for k, v in measured.items() if k in prompts}})
        log.info("bootstrap step=%d phase=%s loss=%.4f %s", step, phase, loss,
                 " ".join(f"{k}={v:.3f}" for k, v in measured.items()))
        if phase == "read" and judge.teacher_ready(measured):
            phase = "solve"
        elif phase == "solve" and not premise_failures(measured, cfg):
            confirmed = judge.measure(validation, prompts)
            log.info("bootstrap step=%d on the validation split (%d problems): %s", step, len(validation),
                     " ".join(f"{k}={v:.3f}" for k, v in confirmed.items()))
            if not premise_failures(confirmed, cfg):
                premise = {**confirmed, "problems": len(validation), "step": step}
                break
        model.train()
    progress.close()
    if premise is None:
        last = judge.measure(validation, prompts)
        raise RuntimeError(f"the base policy did not meet its premise within model.bootstrap.max_steps="
                           f"{cfg.max_steps} (phase '{phase}'): " + "; ".join(premise_failures(last, cfg))
                           + ". Raise max_steps, or change lr, lr_scale or student_share")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    record = {"premise": premise, "steps": premise["step"], "seconds": round(time.time() - started, 1),
              "parameters": count_parameters(model), "history": history,
              "config": {"model": OmegaConf.to_container(model_cfg), "task": OmegaConf.to_container(task_cfg)}}
    (out_dir / "bootstrap.json").write_text(json.dumps(record, indent=2))
    return record


def cache_key(model_cfg, task_cfg) -> str:
    not_generator = ("train_size", "val_size", "verifier")
    task_generator = {k: v for k, v in OmegaConf.to_container(task_cfg).items() if k not in not_generator}
    payload = {"recipe": RECIPE_VERSION, "architecture": OmegaConf.to_container(model_cfg.architecture),
               "bootstrap": OmegaConf.to_container(model_cfg.bootstrap), "task": task_generator}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def cached_premise(path: Path, cfg) -> dict | None:
    """The cached policy's premise record when it meets the bars; None when there is none or it falls short."""
    record_file = path / "bootstrap.json"
    if not record_file.exists():
        return None
    premise = json.loads(record_file.read_text()).get("premise")
    if premise is None or any(name not in premise for name in judged_prompts(cfg)) or premise_failures(premise, cfg):
        return None
    return premise


def describe_premise(premise: dict) -> str:
    teachers = "".join(f", teacher with the {name.removeprefix('teacher_')} {premise[name]:.3f} (shortcut rate "
                       f"{premise[name + '_shortcut_rate']:.3f})" for name in PROMPTS[1:] if name in premise)
    return (f"greedy accuracy on {premise['problems']} validation problems: student prompt "
            f"{premise['student']:.3f}{teachers}")


def ensure_base_policy(model_cfg, task_cfg) -> Path:
    """Path of the cached base policy for this config, training (and proving) it first if it is not cached yet."""
    check_bootstrap_config(model_cfg.bootstrap)
    final = cache_root() / "base_policy" / cache_key(model_cfg, task_cfg)
    premise = cached_premise(final, model_cfg.bootstrap)
    if premise is not None:
        log.info("base policy: using cache %s; %s", final, describe_premise(premise))
        return final
    log.info("base policy: not cached (or without a premise record that meets the bars), training it into %s", final)
    staging = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    record = train_base_policy(model_cfg, task_cfg, staging)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    message = (f"base policy: {record['parameters']} parameters, {record['steps']} steps ({record['seconds']:.0f} s); "
               f"{describe_premise(record['premise'])}")
    log.info(message)
    print(f"[rlsd_lab] {message}")
    return final


def embedded_task(task_cfg):
    """The task the embedded models are trained on: arithmetic (another task's runs share its cached models)."""
    if task_cfg.name == "arith":
        return task_cfg
    return OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "task" / "arith.yaml")


def main(overrides: list[str] | None = None) -> None:
    """Composes the training config with `overrides` (the command line) and ensures its base policy; writes no
    run directory."""
    from rlsd_lab.config import compose_config

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    cfg = compose_config(sys.argv[1:] if overrides is None else overrides)
    path = ensure_base_policy(cfg.model, cfg.task)
    premise = json.loads((path / "bootstrap.json").read_text())["premise"]
    print(f"[rlsd_lab] base policy {path}: {describe_premise(premise)}")


if __name__ == "__main__":
    main()
