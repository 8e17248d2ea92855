"""Typed configs (rlsd_lab/config.py): a bad value fails at start, before any model is loaded, naming its key,
its value and what is allowed; several bad values are listed in one message."""

import re

import pytest
from hydra.errors import ConfigCompositionException

from rlsd_lab.config import ConfigError
from rlsd_lab.train import run
from tests.helpers.configs import compose_config

NO_MODEL = "model.path=/nonexistent/model"  # the run must fail before it would look for the model

BAD_VALUES = [  # (overrides, the message's start: key=value: what is allowed)
    (["method=rlsd", "method.eps_w=-1"], "method.eps_w=-1.0: must be in (0, 1]"),
    (["method=rlsd", "method.eps_w=0"], "method.eps_w=0.0: must be in (0, 1]"),
    (["method=rlsd", "method.eps_w=1.5"], "method.eps_w=1.5: must be in (0, 1]"),
    (["method=rlsd", "method.lambda_0=2"], "method.lambda_0=2.0: must be in [0, 1]"),
    (["method=rlsd", "method.decay_steps=0"], "method.decay_steps=0: must be >= 1"),
    (["method=rlsd", "method.schedule=cosine"], "method.schedule=cosine: must be one of linear, constant"),
    (["method=rlsd", "method.teacher.reference=hint"],
     "method.teacher.reference=hint: must be one of answer, solution"),
    (["method=rlsd", "method.teacher.mode=snapshot"],
     "method.teacher.mode=snapshot: must be one of live, periodic, fixed, ema, external"),
    (["method=rlsd", "method.teacher.sync_every=0"], "method.teacher.sync_every=0: must be >= 1"),
    (["method=grpo", "method.lr=-1e-4"], "method.lr=-0.0001: must be >= 0"),
    (["method=opsd", "method.beta=1.5"], "method.beta=1.5: must be in [0, 1]"),
    (["method=opsd", "method.support=top5"], "method.support=top5: must be one of full, teacher_top1, student_top1"),
    (["method=opsd", "method.form=logit"], "method.form=logit: must be one of divergence, sampled_token"),
    (["method=opsd", "method.divergence_clip=0"], "method.divergence_clip=0.0: must be > 0"),
    (["method=hybrid"], "method.beta_h: required, no default"),
    (["method=hybrid", "method.beta_h=1.5"], "method.beta_h=1.5: must be in [0, 1]"),
    (["method=hybrid", "method.beta_h=0.1", "method.mix=product"],
     "method.mix=product: must be one of loss, advantage"),
    (["method=hybrid", "method.beta_h=0.1", "method.opsd.beta=-0.5"], "method.opsd.beta=-0.5: must be in [0, 1]"),
    (["method.name=ppo"], "method.name=ppo: must be one of grpo, hybrid, opd, opsd, rlsd, sdpo"),
    (["loss.aggregation=sum"], "loss.aggregation=sum: must be one of token-mean, seq-mean-token-mean, "
                               "seq-mean-token-sum-norm"),
    (["loss.kl_estimator=k4"], "loss.kl_estimator=k4: must be one of k1, k2, k3"),
    (["loss.clip_low=1.0"], "loss.clip_low=1.0: must be in [0, 1)"),
    (["loss.clip_high=-0.1"], "loss.clip_high=-0.1: must be >= 0"),
    (["loss.dual_clip=0.5"], "loss.dual_clip=0.5: must be > 1"),
    (["loss.kl_coef=-0.1"], "loss.kl_coef=-0.1: must be >= 0"),
    (["loss.entropy_coef=-1"], "loss.entropy_coef=-1.0: must be >= 0"),
    (["rollout.group_size=1"], "rollout.group_size=1: must be >= 2"),
    (["rollout.temperature=0"], "rollout.temperature=0.0: must be > 0"),
    (["rollout.top_p=1.5"], "rollout.top_p=1.5: must be in (0, 1]"),
    (["rollout.max_new_tokens=0"], "rollout.max_new_tokens=0: must be >= 1"),
    (["rollout=vllm", "rollout.top_p=0.9"], "rollout.top_p=0.9: must be in [1, 1]"),
    (["rollout=vllm", "rollout.tis_cap=0"], "rollout.tis_cap=0.0: must be > 0"),
    (["rollout=vllm", "rollout.engine.gpu_memory_utilization=2"],
     "rollout.engine.gpu_memory_utilization=2.0: must be in (0, 1]"),
    (["train.ppo_epochs=0"], "train.ppo_epochs=0: must be >= 1"),
    (["train.mini_batches=0"], "train.mini_batches=0: must be >= 1"),
    (["train.micro_batch_size=0"], "train.micro_batch_size=0: must be >= 1"),
    (["train.grad_clip=0"], "train.grad_clip=0.0: must be > 0"),
    (["train.logprob_chunk_size=0"], "train.logprob_chunk_size=0: must be >= 1"),
    (["train.val_every=0"], "train.val_every=0: must be >= 1"),
    (["train.val_early.every=0"], "train.val_early.every=0: must be >= 1"),
    (["train.val_early.until=-1"], "train.val_early.until=-1: must be >= 0"),
    (["train.max_consecutive_skips=0"], "train.max_consecutive_skips=0: must be >= 1"),
    (["diagnostics.every=0"], "diagnostics.every=0: must be >= 1"),
    (["diagnostics.reference=hint"], "diagnostics.reference=hint: must be one of answer, solution"),
    (["diagnostics.credit_samples=-1"], "diagnostics.credit_samples=-1: must be >= 0"),
    (["verify.workers=-1"], "verify.workers=-1: must be >= 0"),
    (["verify.timeout_s=0"], "verify.timeout_s=0.0: must be > 0"),
    (["data.prompts_per_step=0"], "data.prompts_per_step=0: must be >= 1"),
    (["threads=-2"], "threads=-2: must be >= 0"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_a_bad_value_fails_at_start_naming_its_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as error:
        run(compose_config([NO_MODEL, *overrides]), tmp_path / "run")
    assert message in str(error.value)
    assert not (tmp_path / "run").exists()  # nothing written, nothing loaded


def test_every_problem_is_listed_in_one_message(tmp_path):
    overrides = ["method=rlsd", "method.eps_w=-1", "method.schedule=cosine", "loss.aggregation=sum",
                 "train.grad_clip=0", "rollout.group_size=1"]
    with pytest.raises(ConfigError) as error:
        run(compose_config([NO_MODEL, *overrides]), tmp_path / "run")
    lines = str(error.value).splitlines()
    assert lines[0] == "bad configuration:" and len(lines) == 6
    for key in ("method.eps_w", "method.schedule", "loss.aggregation", "train.grad_clip", "rollout.group_size"):
        assert any(line.strip().startswith(f"{key}=") for line in lines[1:])


@pytest.mark.parametrize(("override", "key"), [("method.eps_w=abc", "method.eps_w"),
                                                ("train.val_every=ten", "train.val_every"),
                                                ("loss.dual_clip=high", "loss.dual_clip"),
                                                ("rollout.group_size=2.5", "rollout.group_size")])
def test_a_value_of_the_wrong_type_fails_while_the_config_is_composed(override, key):
    extra = ["method=rlsd"] if override.startswith("method.") else []
    with pytest.raises(ConfigCompositionException) as error:
        compose_config([*extra, override])
    assert f"full_key: {key}" in str(error.value.__cause__)


def test_the_shipped_configs_are_valid():
    from rlsd_lab.config import validate_config

    for method in (["method=grpo"], ["method=rlsd"], ["method=opsd"], ["method=hybrid", "method.beta_h=0.1"],
                   ["method=opd"], ["method=sdpo"]):
        for rollout in (["rollout=hf"], ["rollout=vllm"]):
            validate_config(compose_config([*method, *rollout]))


ARM_METHODS = {"grpo": "grpo", "dapo": "grpo", "gspo": "grpo", "cispo": "grpo", "rlsd": "rlsd", "opsd": "opsd",
               "hybrid": "hybrid", "sdpo": "sdpo", "opd": "opd"}


def test_every_arm_of_the_zoo_is_valid_and_sets_what_its_name_says():
    from pathlib import Path

    from rlsd_lab.config import validate_config

    arms = {p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "arm").glob("*.yaml")}
    assert arms == set(ARM_METHODS)
    for arm, method in ARM_METHODS.items():
        cfg = compose_config(["experiment=zoo", f"arm={arm}"])
        validate_config(cfg)
        assert cfg.method.name == method and cfg.trainer.max_steps == 40
    assert compose_config(["arm=gspo"]).loss.ratio == "sequence"
    assert compose_config(["arm=cispo"]).loss.surrogate == "cispo"
    dapo = compose_config(["arm=dapo"])
    assert dapo.data.dynamic_sampling.enabled and dapo.reward.overlong.enabled


@pytest.mark.parametrize("overrides, message", [
    (["rollout=vllm", "rollout.sequence_mask=[2.0,3.0]"], "rollout.sequence_mask=[2.0, 3.0]: must be [lo, hi]"),
    (["reward.overlong.enabled=true", "reward.overlong.buffer=64"], "reward.overlong.buffer=64: must be below"),
    (["rollout=vllm", "rollout.tis_level=word"], "rollout.tis_level=word: must be one of token, sequence"),
    (["loss.ratio=tokens"], "loss.ratio=tokens: must be one of token, sequence"),
    (["data.dynamic_sampling.max_draws=0"], "data.dynamic_sampling.max_draws=0: must be >= 1"),
])
def test_grpo_family_values_are_checked_at_start(overrides, message):
    from rlsd_lab.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(compose_config(overrides))


def test_the_base_policy_command_composes_the_typed_config():
    """`python -m rlsd_lab.bootstrap` (make base-policy) composes conf/ outside the entry point: every schema must
    be registered there too."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "rlsd_lab.bootstrap"], cwd=root, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[rlsd_lab] base policy" in result.stdout
