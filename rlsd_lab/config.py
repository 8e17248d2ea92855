"""Typed configs: a Hydra structured config (a dataclass in the ConfigStore) for every group the code reads.

The yaml files stay the place users read (their comments say what each value does); each one starts with a
`defaults:` line naming its schema, so Hydra converts and type-checks every value while it composes the config
(`method.eps_w=abc` fails there, naming `method.eps_w`). Ranges, choices and cross-field rules are data on the
fields (`bounded`, `choice`); `validate_config` checks them all before anything is built and raises once with
every problem, each naming its key, its value and what is allowed (as litgpt's `validate_args` does).

Objectives declare their own schema next to their code (methods/base.py: `register_objective`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from rlsd_lab.prompts import REFERENCE_MODES, TEACHER_REFERENCES


class ConfigError(ValueError):
    """Every problem of a configuration, one per line."""


def choice(default, choices, help: str = ""):
    """A field whose value must be one of `choices`."""
    return field(default=default, metadata={"choices": tuple(choices), "help": help})


def bounded(default, low=None, high=None, *, low_open: bool = False, high_open: bool = False, help: str = ""):
    """A numeric field in [low, high]; `low_open` / `high_open` exclude the end. None: no bound."""
    return field(default=default, metadata={"range": (low, high, low_open, high_open), "help": help})


def _allowed_range(low, high, low_open, high_open) -> str:
    if high is None:
        return f"must be {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"must be {'<' if high_open else '<='} {high:g}"
    return f"must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _field_problem(value, metadata) -> str | None:
    if value is None:
        return None  # Optional fields: None means "off"; the schema's types reject None elsewhere
    if "choices" in metadata and value not in metadata["choices"]:
        return f"must be one of {', '.join(map(str, metadata['choices']))}"
    if "range" in metadata:
        low, high, low_open, high_open = metadata["range"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return "must be a number"
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            return _allowed_range(low, high, low_open, high_open)
    return None


def schema_problems(node: DictConfig, schema: type, prefix: str = "") -> list[str]:
    """`prefix.key=value: what is allowed` for every field of `schema` whose value in `node` breaks its rule."""
    problems, types = [], typing.get_type_hints(schema)
    for spec in dataclasses.fields(schema):
        key = f"{prefix}.{spec.name}" if prefix else spec.name
        if OmegaConf.is_missing(node, spec.name):
            problems.append(f"{key}: required, no default ({spec.metadata.get('help') or 'set it'})")
            continue
        value = node.get(spec.name)
        if dataclasses.is_dataclass(types[spec.name]):  # a nested schema (groups typed `Any` are checked apart)
            problems += schema_problems(value, types[spec.name], key)
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            continue
        problem = _field_problem(value, spec.metadata)
        if problem:
            problems.append(f"{key}={value}: {problem}")
    return problems


def typed(node: DictConfig, schema: type) -> DictConfig:
    """`node` as an instance of `schema`: already so when its yaml names the schema; else merged onto it (a
    config built in code), which converts and type-checks every value, naming the key of a bad one."""
    if OmegaConf.get_type(node) is schema:
        return node
    return OmegaConf.merge(OmegaConf.structured(schema), node)


# ---- the groups ---------------------------------------------------------------------------------------------
TEACHER_MODES = ("live", "periodic", "fixed", "ema", "external")


@dataclass
class TeacherConfig:
    """The teacher: the policy's own weights with a reference block in its prompt, or a separate external model."""

    mode: str = choice("live", TEACHER_MODES,
                       "live: the current weights; periodic: a copy re-synced every sync_every steps; fixed: the "
                       "initial weights; ema: an exponential moving average of the policy; external: another model")
    reference: str = choice("answer", TEACHER_REFERENCES, "what the teacher's prompt carries (none: the student's)")
    sync_every: int = bounded(10, 1, help="periodic mode: steps between re-syncs (RLSD paper: 10)")
    ema_rate: float = bounded(0.05, 0.0, 1.0, low_open=True,
                              help="ema mode: teacher <- (1 - rate) teacher + rate policy, once per step")
    model: Optional[str] = None  # external mode: a local transformers directory; null: the embedded teacher below
    embedded: Any = None  # external mode: the model config of the embedded teacher (conf/model/tiny_teacher.yaml)
    dtype: str = choice("auto", ("auto", "float32", "bfloat16"), "external weights; auto: bfloat16 on a GPU")
    require_stronger: bool = True  # external mode: refuse to train when its greedy accuracy is not above the student's


@dataclass
class LossConfig:
    """The clipped surrogate every objective shares (methods/policy_loss.py)."""

    clip_low: float = bounded(0.2, 0.0, 1.0, high_open=True, help="ratio clip 1 - clip_low")
    clip_high: float = bounded(0.28, 0.0, help="ratio clip 1 + clip_high (DAPO clip-higher)")
    dual_clip: Optional[float] = bounded(3.0, 1.0, low_open=True, help="cap on negative-advantage loss; null: off")
    aggregation: str = choice("token-mean", ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"))
    kl_coef: float = bounded(0.0, 0.0, help="KL to the initial policy; 0: off")
    kl_estimator: str = choice("k3", ("k1", "k2", "k3"), "Schulman's estimators")
    entropy_coef: float = bounded(0.0, 0.0)
    ratio: str = choice("token", ("token", "sequence"), "sequence: GSPO's geometric-mean ratio, with its own clip")
    sequence_clip_low: float = bounded(3e-4, 0.0, 1.0, high_open=True, help="loss.ratio=sequence: 1 - this")
    sequence_clip_high: float = bounded(4e-4, 0.0, help="loss.ratio=sequence: 1 + this (GSPO paper: 3e-4 / 4e-4)")
    surrogate: str = choice("ppo", ("ppo", "cispo"), "cispo: clipped, detached IS weight x A x log-prob")
    cispo_clip_low: Optional[float] = bounded(None, 0.0, 1.0, help="CISPO weight floor 1 - this; null: none (paper)")
    cispo_clip_high: float = bounded(0.28, 0.0, help="CISPO weight cap 1 + this")
    mask_truncated: bool = False  # DAPO overlong filtering: responses cut at max_new_tokens are left out of the loss


@dataclass
class RolloutConfig:
    """Sampling (conf/rollout/hf.yaml): what every engine reads."""

    name: str = choice("hf", ("hf", "vllm"))
    group_size: int = bounded(8, 2, help="G responses per prompt; group-normalised advantages need 2")
    temperature: float = bounded(1.0, 0.0, low_open=True)
    top_p: float = bounded(1.0, 0.0, 1.0, low_open=True)
    max_new_tokens: int = bounded(64, 1)


@dataclass
class VLLMEngineConfig:
    kv_cache_gib: Optional[float] = bounded(1.0, 0.0, low_open=True)
    gpu_memory_utilization: float = bounded(0.3, 0.0, 1.0, low_open=True)
    max_model_len: Optional[int] = bounded(None, 1)
    max_num_seqs: Optional[int] = bounded(None, 1)
    enforce_eager: bool = True
    dtype: Optional[str] = None
    sleep: bool = True


@dataclass
class VLLMRolloutConfig(RolloutConfig):
    """conf/rollout/vllm.yaml: the colocated vLLM engine."""

    name: str = choice("vllm", ("vllm",))
    top_p: float = bounded(1.0, 1.0, 1.0, help="vLLM's log-probs under top-p are renormalised over the nucleus")
    tis_cap: Optional[float] = bounded(None, 0.0, low_open=True, help="truncated importance sampling cap; null: off")
    tis_level: str = choice("token", ("token", "sequence", "geometric"),
                            "token: per-token ratio; sequence: the response's product of ratios; geometric: their "
                            "geometric mean (each truncated at tis_cap, weighting the whole response)")
    sequence_mask: Optional[list[float]] = field(default=None, metadata={
        "help": "[lo, hi]: responses whose geometric-mean trainer/engine ratio is outside are left out; null: off"})
    engine: VLLMEngineConfig = field(default_factory=VLLMEngineConfig)


@dataclass
class ValEarlyConfig:
    until: int = bounded(0, 0, help="dense validation up to this step; 0: off")
    every: int = bounded(3, 1)


@dataclass
class TrainConfig:
    ppo_epochs: int = bounded(1, 1)
    mini_batches: int = bounded(1, 1)
    micro_batch_size: int = bounded(128, 1, help="responses per forward/backward; does not change the update")
    grad_clip: float = bounded(1.0, 0.0, low_open=True)
    logprob_chunk_size: int = bounded(256, 1)
    val_every: int = bounded(10, 1)
    val_early: ValEarlyConfig = field(default_factory=ValEarlyConfig)
    val_batch_size: int = bounded(256, 1)
    val_sets: Any = None  # {name: [task overrides]} (rlsd_lab/tasks/sets.py); untyped, so a dict can replace null
    checkpoint_every: int = bounded(50, 1)
    keep_checkpoints: int = bounded(3, -1, help="-1: keep all")
    max_consecutive_skips: int = bounded(5, 1)


@dataclass
class DiagnosticsConfig:
    every: int = bounded(10, 1)
    credit_samples: int = bounded(4, 0)
    reference: str = choice("answer", REFERENCE_MODES, "the diagnostic teacher's reference (methods without one)")
    leakage_phrases: list[str] = field(default_factory=lambda: ["@ref"])
    answer_first: bool = True


@dataclass
class VerifyConfig:
    workers: int = bounded(2, 0, help="0: score in the trainer process")
    timeout_s: float = bounded(30.0, 0.0, low_open=True)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DynamicSamplingConfig:
    """DAPO's dynamic sampling: groups whose raw verifier scores are all equal carry no advantage."""

    enabled: bool = False
    max_draws: int = bounded(4, 1, help="prompt batches drawn per step at most (the first included)")


@dataclass
class DataConfig:
    prompts_per_step: int = bounded(16, 1)
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)


@dataclass
class OverlongConfig:
    """DAPO's soft overlong punishment, added to the verifier's reward (rlsd_lab/reward_shaping.py)."""

    enabled: bool = False
    max_len: Optional[int] = bounded(None, 1, help="L_max; null: rollout.max_new_tokens")
    buffer: int = bounded(16, 1, help="L_cache: the penalty ramps from 0 to -1 over the last `buffer` tokens")


@dataclass
class RewardConfig:
    overlong: OverlongConfig = field(default_factory=OverlongConfig)


@dataclass
class SearchConfig:
    """One job trains several seeds and returns their mean: the objective of an Optuna trial (hydra #1969: a
    seed sweep does not mix with the optuna sweeper). rlsd_lab/seed_average.py."""

    seeds: Optional[list[int]] = None
    metric: str = choice("val_accuracy_final", ("val_accuracy_final", "val_accuracy_best"),
                         help="the summary value a job returns to the sweeper")


@dataclass
class RootConfig:
    """conf/config.yaml. Groups typed by their own yaml's schema (method, rollout) or left free (task, model)."""

    method: Any = MISSING
    task: Any = MISSING
    model: Any = MISSING
    rollout: Any = MISSING
    logger: Any = MISSING
    seed: int = 1
    threads: int = bounded(0, 0, help="torch CPU threads; 0: torch's default")
    resume: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: Any = MISSING
    loss: LossConfig = field(default_factory=LossConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/config.yaml with `overrides`, composed as the entry point composes it (for code that is not the entry
    point: the base-policy build, benchmarks, analysis, tests). Every schema is registered first."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    import methods  # noqa: F401  (the objectives register their schemas)

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


ROLLOUT_SCHEMAS = {"hf": RolloutConfig, "vllm": VLLMRolloutConfig}
store = ConfigStore.instance()
store.store(name="schema", node=RootConfig)
for _name, _schema in ROLLOUT_SCHEMAS.items():
    store.store(group="schema/rollout", name=_name, node=_schema)


def group_problems(node: DictConfig, schema: type, key: str) -> list[str]:
    return schema_problems(typed(node, schema), schema, key)


def method_problems(method_cfg: DictConfig) -> list[str]:
    from methods import OBJECTIVES  # the objectives register their schemas (methods/base.py)

    if method_cfg.name not in OBJECTIVES:
        return [f"method.name={method_cfg.name}: must be one of {', '.join(sorted(OBJECTIVES))}"]
    return group_problems(method_cfg, OBJECTIVES[method_cfg.name].config, "method")


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise ConfigError("bad configuration:\n  " + "\n  ".join(problems))


def validate_config(cfg: DictConfig) -> None:
    """Every range, choice and required value of the typed groups, checked at once: one ConfigError listing
    every problem (`method.eps_w=-1.0: must be in (0, 1]`), before any model is loaded."""
    problems = method_problems(cfg.method)
    rollout_schema = ROLLOUT_SCHEMAS.get(cfg.rollout.name)
    if rollout_schema is None:
        problems.append(f"rollout.name={cfg.rollout.name}: must be one of {', '.join(ROLLOUT_SCHEMAS)}")
    else:
        problems += group_problems(cfg.rollout, rollout_schema, "rollout")
    problems += schema_problems(typed(cfg, RootConfig), RootConfig)  # loss, train, diagnostics, verify, data, ...
    problems += cross_field_problems(cfg)
    raise_problems(problems)


def cross_field_problems(cfg: DictConfig) -> list[str]:
    """Rules that tie two values together."""
    problems = []
    bounds = cfg.rollout.get("sequence_mask")
    if bounds is not None and not (len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)
                                   and 0 <= bounds[0] < 1 < bounds[1]):
        problems.append(f"rollout.sequence_mask={list(bounds)}: must be [lo, hi] with 0 <= lo < 1 < hi")
    overlong = cfg.reward.overlong
    max_len = overlong.max_len or cfg.rollout.max_new_tokens
    if overlong.enabled and overlong.buffer >= max_len:
        problems.append(f"reward.overlong.buffer={overlong.buffer}: must be below reward.overlong.max_len "
                        f"(here {max_len})")
    return problems
