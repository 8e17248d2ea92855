"""Evaluation the way papers report it: `python -m rlsd_lab.evaluate eval.policies=[<runs or model dirs>]`.

Every policy is sampled `eval.n` times per problem (`eval.temperature`, `eval.top_p`, `eval.max_new_tokens`,
`eval.engine`) on every set of `eval.sets`. A set is a task config given by its overrides (conf/eval/default.yaml):
the embedded arith split, harder arith variants, or a JSONL / parquet file with its verifier. Per set it reports
avg@n, pass@k and maj@k (rlsd_lab/eval_metrics.py), each with a 95% bootstrap interval over problems, and the mean
response length. Results go to `eval/results.json` and a tidy `eval/results.csv` (one row per policy, set and
metric) next to the policy: in a run directory, or in a model directory.

    python -m rlsd_lab.evaluate eval.policies=[multirun/paper] eval.n=16 eval.temperature=0.7 eval.top_p=0.8
    python -m rlsd_lab.evaluate eval.policies=[/models/mine] eval.prompt_format=chat \
        'eval.sets={aime: ["task=file", "task.train_path=aime.jsonl", "task.val_path=aime.jsonl"]}'
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import pandas as pd
import torch
import yaml
from omegaconf import DictConfig
from tqdm import tqdm

from analysis.runs import find_run_dirs, run_labels
from rlsd_lab.eval_metrics import bootstrap_ci, extracted_answer, problem_scores
from rlsd_lab.evaluation import decode_responses
from rlsd_lab.models import load_policy
from rlsd_lab.prompts import PromptRenderer
from rlsd_lab.resume import checkpoint_step
from rlsd_lab.rollout import SamplingParams, build_engine
from rlsd_lab.tasks import build_task
from rlsd_lab.tasks.sets import set_problems, set_task_config
from rlsd_lab.verifiers.pool import VerifierPool

log = logging.getLogger("rlsd_lab.evaluate")


def policy_dirs(paths: list[str]) -> list[tuple[Path, Path]]:
    """(model dir, where its results go) for every policy named: a run directory's final_policy/ (results in the
    run directory), every run below a folder, or a model directory itself."""
    found = []
    for path in map(Path, paths):
        if (path / "config.json").exists():
            found.append((path, path))
            continue
        runs = [run for run in find_run_dirs([path]) if (run / "final_policy").exists()]
        if not runs:
            raise FileNotFoundError(f"eval.policies: {path} is neither a model directory (config.json) nor a run "
                                    "directory, or folder of them, with a final_policy/")
        found += [(run / "final_policy", run) for run in runs]
    return found


def policy_labels(home: Path) -> dict:
    """A run directory's method (or arm), seed, defining overrides and prompt format (analysis.runs); a bare model
    directory is named by its folder."""
    config_file = home / "config_resolved.yaml"
    if not config_file.exists():
        return {"method": home.name, "seed": 0, "overrides": "", "prompt_format": "plain"}
    labels = run_labels(home)
    config = yaml.safe_load(config_file.read_text())
    return {"method": labels["name"], "seed": labels["seed"], "overrides": " ".join(labels["overrides"]),
            "prompt_format": (config.get("model") or {}).get("prompt_format", "plain")}


def prepare_sets(sets, count: int) -> dict[str, tuple[list, VerifierPool]]:
    """Each set's first `count` validation problems and its verifier, built once for every policy and checkpoint
    evaluated on it."""
    prepared = {}
    for name, overrides in sets.items():
        task = build_task(set_task_config(name, list(overrides)))
        problems = set_problems(task, count)
        verifier = VerifierPool(task.verifier, {}, workers=0)
        verifier.check([p.verifier for p in problems])
        prepared[name] = (problems, verifier)
    return prepared


def evaluate_set(engine, tokenizer, prompts: PromptRenderer, name: str, problems: list, verifier: VerifierPool,
                 cfg) -> dict:
    """The metrics of one set: every metric's mean over problems with its bootstrap interval."""
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                            n=cfg.n)
    per_problem, lengths = [], []
    for start in tqdm(range(0, len(problems), cfg.batch_size), desc=name, unit="batch"):
        chunk = problems[start:start + cfg.batch_size]
        batch = engine.generate([prompts.ids(p) for p in chunk], params)
        texts = decode_responses(tokenizer, batch)
        verdicts = verifier.score_batch(texts, [p for p in chunk for _ in range(cfg.n)])
        lengths += batch.response_lengths().tolist()
        for index in range(len(chunk)):
            rows = range(index * cfg.n, (index + 1) * cfg.n)
            per_problem.append(problem_scores([verdicts[r].reward >= 1.0 for r in rows],
                                              [extracted_answer(texts[r]) for r in rows], list(cfg.ks)))
    scores = pd.DataFrame(per_problem)
    metrics = {}
    for metric in scores.columns:
        low, high = bootstrap_ci(scores[metric].tolist(), cfg.bootstrap.samples, cfg.bootstrap.seed)
        metrics[metric] = {"value": float(scores[metric].mean()), "ci_low": low, "ci_high": high}
    metrics["response_length"] = {"value": float(sum(lengths) / len(lengths)), "ci_low": float("nan"),
                                  "ci_high": float("nan")}
    return {"problems": len(problems), "metrics": metrics}


def checkpoint_steps(home: Path) -> list[tuple[int, Path]]:
    """(RL step, file) of every checkpoint a run kept (last.ckpt, a link to the latest, left out)."""
    files = [f for f in sorted((home / "checkpoints").glob("*.ckpt")) if not f.is_symlink() and f.name != "last.ckpt"]
    return sorted((checkpoint_step(f), f) for f in files)


def policy_weights(model, checkpoint: Path) -> None:
    """Loads the policy's weights from a Lightning checkpoint of a run (its `model.` entries) into `model`."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    weights = {key.removeprefix("model."): value for key, value in state.items() if key.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{checkpoint}: its policy weights do not fit final_policy/ ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]}); LoRA checkpoints hold "
                         "an adapter, not the merged model: evaluate final_policy/ only (eval.checkpoints=final)")


def evaluate_run(model_dir: Path, home: Path, sets: dict, cfg) -> list[dict]:
    """The final policy (and with `eval.checkpoints=all` then every other kept checkpoint) on every prepared set;
    writes results.json (one entry per step, the final policy first) and the tidy results.csv."""
    labels = policy_labels(home)
    model, tokenizer = load_policy(model_dir, torch.float32, None)
    model = model.to("cuda" if cfg.accelerator == "gpu" else "cpu").eval()
    prompt_format = labels["prompt_format"] if cfg.prompt_format == "auto" else cfg.prompt_format
    prompts = PromptRenderer(prompt_format, tokenizer)
    settings = {k: cfg[k] for k in ("n", "temperature", "top_p", "max_new_tokens", "engine")}
    settings["prompt_format"] = prompt_format
    summary = home / "summary.json"
    final_step = json.loads(summary.read_text())["final_step"] if summary.exists() else None
    weights = [(final_step, None)]
    if cfg.checkpoints == "all":
        weights += [(step, f) for step, f in checkpoint_steps(home) if step != final_step]
    results = []
    for step, checkpoint in weights:
        if checkpoint is not None:
            policy_weights(model, checkpoint)
        engine = build_engine(cfg.engine, model, tokenizer, seed=cfg.seed)
        results.append({"policy": str(checkpoint or model_dir), "step": step, **labels, "settings": settings,
                        "sets": {name: evaluate_set(engine, tokenizer, prompts, name, problems, verifier, cfg)
                                 for name, (problems, verifier) in sets.items()}})
    out = Path(cfg.out) if cfg.out else home / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    pd.concat([tidy_rows(r) for r in results]).to_csv(out / "results.csv", index=False)
    return results


def tidy_rows(results: dict) -> pd.DataFrame:
    """One row per set and metric, with the policy's labels and the sampling settings."""
    return pd.DataFrame([{"policy": results["policy"], "step": results["step"], "method": results["method"],
                          "seed": results["seed"], "overrides": results["overrides"],
                          "set": name, "metric": metric, **values, "problems": data["problems"],
                          **results["settings"]}
                         for name, data in results["sets"].items() for metric, values in data["metrics"].items()])


def check_eval_config(cfg) -> None:
    if not cfg.policies:
        raise ValueError("eval.policies is empty: name run directories, folders of runs or model directories")
    if any(not 1 <= k <= cfg.n for k in cfg.ks):
        raise ValueError(f"eval.ks={list(cfg.ks)}: every k must be in [1, eval.n={cfg.n}]")
    if cfg.checkpoints not in ("final", "all"):
        raise ValueError(f"eval.checkpoints={cfg.checkpoints}: must be final or all")
    if cfg.temperature == 0 and cfg.n > 1:
        raise ValueError(f"eval.temperature=0 with eval.n={cfg.n}: greedy samples are all the same; use eval.n=1")


@hydra.main(config_path="../conf/eval", config_name="default", version_base="1.3")
def main(cfg: DictConfig) -> None:
    check_eval_config(cfg.eval)
    torch.manual_seed(cfg.eval.seed)
    sets = prepare_sets(cfg.eval.sets, cfg.eval.problems)
    for model_dir, home in policy_dirs(list(cfg.eval.policies)):
        results = evaluate_run(model_dir, home, sets, cfg.eval)[0]  # the final policy's
        print(f"[rlsd_lab] {results['method']} seed={results['seed']}: " + ", ".join(
            f"{name} avg@{cfg.eval.n} {data['metrics'][f'avg@{cfg.eval.n}']['value']:.3f}"
            for name, data in results["sets"].items()) + f" ({home / 'eval' if not cfg.eval.out else cfg.eval.out})")
    for _, verifier in sets.values():
        verifier.close()


if __name__ == "__main__":
    main()
