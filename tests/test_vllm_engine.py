"""The colocated vLLM engine (rlsd_lab/rollout/vllm_engine.py) on the embedded default policy.

Needs vLLM, which the main environment leaves out: `.venv-vllm/bin/python -m pytest tests/test_vllm_engine.py`
(requirements-vllm.txt). Without it only the import-isolation tests run.
"""

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rlsd_lab.logprobs import response_logprobs
from rlsd_lab.models import load_policy
from rlsd_lab.prompts import PromptRenderer
from rlsd_lab.rollout import SamplingParams, build_engine
from rlsd_lab.tasks import build_task
from rlsd_lab.train import policy_path, run

ROOT = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None
requires_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (see requirements-vllm.txt)")
ENGINE_OPTIONS = {"kv_cache_gib": 0.25}


def compose_config(overrides=()):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="module")
def policy():
    """The embedded default (built and cached on first use) and prompts of its task."""
    cfg = compose_config()
    model, tokenizer = load_policy(policy_path(cfg))
    renderer = PromptRenderer(cfg.model.prompt_format, tokenizer)
    prompts = [renderer.ids(problem) for problem in build_task(cfg.task).problems("val", 6, seed=0)]
    return model, tokenizer, prompts


@pytest.fixture(scope="module")
def engine(policy):
    model, tokenizer, _ = policy
    return build_engine("vllm", model, tokenizer, seed=0, **ENGINE_OPTIONS)


def trainer_logprobs(model, batch, temperature=1.0):
    with torch.no_grad():
        return response_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_ids.shape[1],
                                 temperature).logprobs * batch.response_mask


def vllm_sequence_logprobs(engine, ids: list[int], start: int) -> torch.Tensor:
    """vLLM's log-probs (temperature 1) of the tokens ids[start:], read as prompt log-probs of one fixed sequence."""
    from vllm import SamplingParams as VLLMSamplingParams
    from vllm.inputs import TokensPrompt

    engine._wake()
    output = engine.llm.generate([TokensPrompt(prompt_token_ids=ids)],
                                 VLLMSamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
    return torch.tensor([output.prompt_logprobs[i][ids[i]].logprob for i in range(start, len(ids))])


def test_importing_the_package_does_not_import_vllm():
    code = ("import sys, rlsd_lab.rollout, rlsd_lab.module, rlsd_lab.train; "
            "assert 'vllm' not in sys.modules, 'vllm imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.skipif(HAS_VLLM, reason="checks the message shown when vLLM is missing")
def test_missing_vllm_is_explained(tiny_model, tokenizer):
    with pytest.raises(ImportError, match="requirements-vllm.txt"):
        build_engine("vllm", tiny_model, tokenizer, seed=0)


@requires_vllm
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_batch_has_the_hf_engine_layout_and_trainer_logprobs(engine, policy, temperature):
    model, tokenizer, prompts = policy
    params = SamplingParams(max_new_tokens=64, temperature=temperature, n=3)
    ours = engine.generate(prompts, params)
    theirs = build_engine("hf", model, tokenizer, seed=0).generate(prompts, params)
    assert torch.equal(ours.prompt_ids, theirs.prompt_ids) and torch.equal(ours.prompt_mask, theirs.prompt_mask)
    for name in ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "logprobs", "finished"):
        assert getattr(ours, name).dtype == getattr(theirs, name).dtype, name
    rows, width = ours.response_ids.shape
    assert rows == len(prompts) * 3 and width == int(ours.response_lengths().max()) <= 64
    assert ours.finished.any()  # the base policy answers and stops within 64 tokens
    for row in range(rows):
        length = int(ours.response_mask[row].sum())
        ids = ours.response_ids[row]
        assert (ours.response_mask[row, :length] == 1).all() and (ours.response_mask[row, length:] == 0).all()
        assert (ids[length:] == tokenizer.pad_token_id).all() and (ours.logprobs[row, length:] == 0).all()
        assert bool(ours.finished[row]) == bool(ids[length - 1] == tokenizer.eos_token_id)
        assert bool(ours.finished[row]) or length == 64
    torch.testing.assert_close(ours.logprobs, trainer_logprobs(model, ours, temperature), atol=1e-4, rtol=0)


@requires_vllm
def test_greedy_decoding_matches_the_hf_engine(engine, policy):
    model, tokenizer, prompts = policy
    params = SamplingParams(max_new_tokens=64, temperature=0.0, n=2)
    ours = engine.generate(prompts, params)
    theirs = build_engine("hf", model, tokenizer, seed=0).generate(prompts, params)
    assert torch.equal(ours.response_ids, theirs.response_ids)
    assert torch.equal(ours.finished, theirs.finished)
    torch.testing.assert_close(ours.logprobs, theirs.logprobs, atol=1e-4, rtol=0)


@requires_vllm
def test_every_eos_id_of_the_generation_config_ends_a_response(policy):
    """As in the HF engine (tests/test_rollout.py): chat models end a turn with a generation-config eos id."""
    model, tokenizer, prompts = policy
    params = SamplingParams(max_new_tokens=16)
    free = build_engine("vllm", model, tokenizer, seed=5, **ENGINE_OPTIONS).generate(prompts[:1], params)
    tokens = free.response_ids[0, :int(free.response_mask[0].sum())].tolist()
    position = next(i for i in range(1, len(tokens)) if tokens[i] not in tokens[:i])  # first drawn at step i
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokens[position]]
    try:
        batch = build_engine("vllm", model, tokenizer, seed=5, **ENGINE_OPTIONS).generate(prompts[:1], params)
    finally:
        model.generation_config.eos_token_id = original
    assert batch.response_ids[0].tolist() == tokens[:position + 1]
    assert bool(batch.finished[0]) and int(batch.response_mask[0].sum()) == position + 1


@requires_vllm
def test_same_seed_same_samples(policy):
    model, tokenizer, prompts = policy
    params = SamplingParams(max_new_tokens=16, n=4)
    first = build_engine("vllm", model, tokenizer, seed=5, **ENGINE_OPTIONS).generate(prompts, params)
    second = build_engine("vllm", model, tokenizer, seed=5, **ENGINE_OPTIONS).generate(prompts, params)
    assert torch.equal(first.response_ids, second.response_ids)


@requires_vllm
def test_top_p_below_one_is_refused(engine, policy):
    with pytest.raises(ValueError, match="nucleus"):
        engine.generate(policy[2], SamplingParams(max_new_tokens=4, top_p=0.9))


@requires_vllm
def test_weight_push_makes_vllm_score_like_the_trainer(policy):
    model, tokenizer, prompts = policy
    model = copy.deepcopy(model)
    engine = build_engine("vllm", model, tokenizer, seed=0, **ENGINE_OPTIONS)
    ids = prompts[0] + tokenizer.encode("A:12", add_special_tokens=False)
    start = len(prompts[0])

    def trainer_scores():
        x = torch.tensor([ids])
        with torch.no_grad():
            return response_logprobs(model, x, torch.ones_like(x), len(ids) - start).logprobs[0]

    # Longer than a KV-cache block (128 tokens on CPU): its cached prefix must not outlive the push.
    long_prompt = ([token for ids in prompts for token in ids] * 4)[:200]
    engine.generate([long_prompt], SamplingParams(max_new_tokens=4))
    torch.testing.assert_close(vllm_sequence_logprobs(engine, ids, start), trainer_scores(), atol=1e-4, rtol=0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    assert (vllm_sequence_logprobs(engine, ids, start) - trainer_scores()).abs().max() > 0.05  # not pushed yet
    engine.sync_weights(model)
    torch.testing.assert_close(vllm_sequence_logprobs(engine, ids, start), trainer_scores(), atol=1e-4, rtol=0)
    batch = engine.generate([long_prompt], SamplingParams(max_new_tokens=8, n=2))
    torch.testing.assert_close(batch.logprobs, trainer_logprobs(model, batch), atol=1e-4, rtol=0)


@requires_vllm
def test_lora_policy_is_pushed_with_the_adapter_folded_in(tiny_model):
    peft = pytest.importorskip("peft")
    from rlsd_lab.rollout.vllm_engine import policy_weights

    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    lora = peft.get_peft_model(tiny_model, config)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_()  # B starts at zero: make the adapter change the weights
    pushed = dict(policy_weights(lora))
    merged = dict(copy.deepcopy(lora).merge_and_unload().named_parameters(remove_duplicate=False))
    assert pushed.keys() == merged.keys()
    for name, weight in merged.items():
        torch.testing.assert_close(pushed[name], weight, msg=name)


@requires_vllm
def test_short_training_run_with_vllm_rollouts(tmp_path, monkeypatch):
    """A 3-step run on vLLM rollouts: after each update the engine samples from the trained weights."""
    from rlsd_lab.module import RLModule

    cfg = compose_config(["rollout=vllm", "rollout.engine.kv_cache_gib=0.25", "trainer.max_steps=3",
                          "train.val_every=2", "data.prompts_per_step=8", "rollout.group_size=4",
                          "task.val_size=8", "task.train_size=64", "trainer.progress_bar=false"])
    modules, learn = [], RLModule.learn

    def learn_and_keep(self, *args, **kwargs):
        modules.append(self)
        return learn(self, *args, **kwargs)

    monkeypatch.setattr(RLModule, "learn", learn_and_keep)
    summary = run(cfg, tmp_path / "run")
    assert summary["final_step"] == 3 and len(modules) == 3
    module = modules[-1]
    prompts = [module.prompts.ids(problem) for problem in module.val_problems[:4]]
    batch = module.engine.generate(prompts, SamplingParams(max_new_tokens=16, n=2))
    # The engine samples from the trained policy, not from the base one it started with.
    torch.testing.assert_close(batch.logprobs, trainer_logprobs(module.model, batch), atol=1e-4, rtol=0)
    base, _ = load_policy(policy_path(cfg))
    assert (batch.logprobs - trainer_logprobs(base, batch)).abs().max() > 1e-3


@requires_vllm
def test_sequence_level_mismatch_corrections_run_with_vllm_rollouts(tmp_path):
    """Sequence TIS (geometric mean) and sequence masking on real engine log-probs: logged, and with the engine
    in float32 (ratios ~1) no response is masked."""
    import pandas as pd

    cfg = compose_config(["rollout=vllm", "rollout.engine.kv_cache_gib=0.25", "trainer.max_steps=2",
                          "train.val_every=2", "data.prompts_per_step=4", "rollout.group_size=4", "task.val_size=8",
                          "task.train_size=64", "trainer.progress_bar=false", "rollout.tis_cap=2.0",
                          "rollout.tis_level=geometric", "rollout.sequence_mask=[0.5,2.0]"])
    run(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv").dropna(subset=["train/loss"])
    assert metrics["mismatch/sequence_masked_share"].tolist() == [0.0, 0.0]
    assert metrics["mismatch/sequence_ratio_std"].between(0, 1e-2).all()
