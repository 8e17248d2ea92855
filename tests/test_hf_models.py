"""`model=hf`: local chat-model directories (Qwen2, Llama), load options, gradient checkpointing and LoRA."""

import math

import pandas as pd
import pytest
import torch
from omegaconf.errors import MissingMandatoryValue
from transformers import LlamaConfig, LlamaForCausalLM

from rlsd_lab.logprobs import TokenScorer, response_logprobs
from rlsd_lab.models import AdapterDisabled, build_tiny_qwen2, initial_weights, load_model, load_policy, weights_dtype
from rlsd_lab.prompts import PromptRenderer
from rlsd_lab.tasks.problem import Problem
from rlsd_lab.teacher import TeacherPass
from rlsd_lab.train import policy_path, run
from tests.conftest import TINY_ARCHITECTURE
from tests.test_end_to_end import FAST, compose_config

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
PROMPTS = ["<user>12+34\n<assistant>", "<user>5+6\n<assistant>"]


def build_llama(tokenizer):
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, **TINY_ARCHITECTURE)
    return LlamaForCausalLM(config)


BUILDERS = {"qwen2": lambda tokenizer: build_tiny_qwen2(tokenizer, TINY_ARCHITECTURE), "llama": build_llama}


def save_chat_model(path, kind, tokenizer):
    torch.manual_seed(0)
    BUILDERS[kind](tokenizer).save_pretrained(path)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    tokenizer.chat_template = None  # the session fixture is shared
    return path


@pytest.fixture(params=sorted(BUILDERS))
def chat_dir(request, tmp_path, tokenizer):
    return save_chat_model(tmp_path / request.param, request.param, tokenizer)


@pytest.fixture
def qwen_dir(tmp_path, tokenizer):
    return save_chat_model(tmp_path / "qwen2", "qwen2", tokenizer)


def hf_model(path, *overrides):
    cfg = compose_config(["model=hf", f"model.path={path}", *overrides])
    return load_model(cfg.model, cfg.model.path, cfg.trainer.accelerator)


def batch(tokenizer, response="7+8=15"):
    """Left-padded prompt + response ids and mask (as the trainer scores rollouts)."""
    rows = [tokenizer.encode(p + response, add_special_tokens=False) for p in PROMPTS]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    return ids, (ids != tokenizer.pad_token_id).long(), len(response)


def policy_logprobs(model, tokenizer):
    ids, mask, length = batch(tokenizer)
    return response_logprobs(model, ids, mask, length).logprobs


def test_hf_config_loads_a_chat_model_directory(chat_dir):
    model, tokenizer = hf_model(chat_dir)
    assert next(model.parameters()).dtype == torch.float32  # dtype=auto on CPU
    assert not model.is_gradient_checkpointing and all(p.requires_grad for p in model.parameters())
    assert model.config._attn_implementation == "sdpa"
    text = PromptRenderer("chat", tokenizer).text(Problem(uid="0", question="12+34", answer="46"), reference="46")
    assert text == "<user>12+34\n\nReference (for you only):\n46\n<assistant>"
    bf16, _ = hf_model(chat_dir, "model.dtype=bfloat16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}


def test_the_tiny_default_loads_as_before(qwen_dir):
    cfg = compose_config([f"model.path={qwen_dir}"])
    model, _ = load_model(cfg.model, cfg.model.path, cfg.trainer.accelerator)
    assert cfg.model.name == "tiny" and type(model) is type(load_policy(qwen_dir)[0])
    assert next(model.parameters()).dtype == torch.float32 and not model.is_gradient_checkpointing


def test_hf_config_needs_a_path():
    with pytest.raises(MissingMandatoryValue, match="model.path"):
        policy_path(compose_config(["model=hf"]))


def perturb_adapter(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)  # lora_B starts at zero: the adapter then changes nothing


def mlp_calls(model) -> list:
    """Grows by one whenever the first layer's MLP starts, a recompute in backward included."""
    calls = []
    model.get_decoder().layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(chat_dir, lora):
    gradients, layer_calls = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same LoRA initialisation
        model, tokenizer = hf_model(chat_dir, f"model.gradient_checkpointing={checkpointing}",
                                    f"model.lora.enabled={lora}")
        model.train()
        perturb_adapter(model)
        calls = mlp_calls(model)
        policy_logprobs(model, tokenizer).sum().backward()
        gradients.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
        layer_calls.append(len(calls))
    assert layer_calls == [1, 2]  # checkpointed: the layer is recomputed in backward
    assert gradients[0].abs().max() > 0
    torch.testing.assert_close(gradients[1], gradients[0], atol=1e-6, rtol=1e-5)


def test_auto_dtype_is_bfloat16_only_for_a_frozen_base_on_a_gpu(qwen_dir, monkeypatch):
    model, _ = hf_model(qwen_dir, "model.dtype=bfloat16", "model.lora.enabled=true")
    dtypes = {p.requires_grad: p.dtype for p in model.parameters()}
    assert dtypes == {False: torch.bfloat16, True: torch.float32}  # peft keeps the adapter in float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert weights_dtype("auto", "gpu", frozen=True) == torch.bfloat16
    assert weights_dtype("auto", "gpu", frozen=False) == torch.float32  # trained weights: float32 master copy
    assert weights_dtype("auto", "cpu", frozen=True) == torch.float32
    assert weights_dtype("bfloat16", "cpu", frozen=False) == torch.bfloat16
    with pytest.raises(ValueError, match="valid choices: auto, float32, bfloat16"):
        weights_dtype("fp8", "gpu", frozen=False)


def test_lora_trains_only_the_adapter(qwen_dir):
    model, _ = hf_model(qwen_dir, "model.lora.enabled=true", "model.lora.r=4")
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in name or "lora_B" in name for name in trainable)
    assert any("mlp.down_proj" in name for name in trainable)  # all-linear
    assert not any("lm_head" in name or "embed_tokens" in name for name in trainable)


def test_lora_fixed_teacher_is_the_base_model_without_a_copy(qwen_dir):
    model, tokenizer = hf_model(qwen_dir, "model.lora.enabled=true", "model.lora.r=4")
    model.train()
    perturb_adapter(model)
    base, _ = load_policy(qwen_dir)
    fixed = TeacherPass(model, "fixed")
    assert isinstance(fixed.frozen, AdapterDisabled) and not list(fixed.parameters())  # holds no weights

    prompts = [tokenizer.encode(p, add_special_tokens=False) for p in PROMPTS]
    responses = torch.tensor([tokenizer.encode(r, add_special_tokens=False) for r in ["7+8=15", "9+9=18"]])
    args = {"teacher_prompts": prompts, "response_ids": responses, "group_size": 1,
            "pad_id": tokenizer.pad_token_id, "scorer": TokenScorer(1.0, 4), "keep_hidden": False}
    teacher, _ = fixed.run(fixed.weights(model, 5), **args)
    base_logprobs, _ = TeacherPass(base, "live").run(base, **args)
    policy, _ = TeacherPass(model, "live").run(model, **args)
    torch.testing.assert_close(teacher, base_logprobs, atol=1e-5, rtol=1e-5)
    assert (teacher - policy).abs().max() > 1e-2
    assert model.training  # the teacher pass leaves the policy as it found it, adapter enabled

    reference = initial_weights(model)  # the KL reference (loss.kl_coef > 0)
    torch.testing.assert_close(policy_logprobs(reference, tokenizer), policy_logprobs(base, tokenizer))
    assert (policy_logprobs(model, tokenizer) - policy_logprobs(base, tokenizer)).abs().max() > 1e-2
    with pytest.raises(ValueError, match="periodic is not supported"):
        TeacherPass(model, "periodic")


def test_lora_rlsd_with_a_fixed_teacher_trains_end_to_end_and_saves_the_adapter(tmp_path, qwen_dir):
    from peft import AutoPeftModelForCausalLM

    cfg = compose_config(FAST + ["model=hf", f"model.path={qwen_dir}", "model.lora.enabled=true",
                                 "model.gradient_checkpointing=true", "method=rlsd", "method.teacher.mode=fixed",
                                 "loss.kl_coef=0.01", "trainer.max_steps=2", "diagnostics.every=1",
                                 "loss.entropy_coef=0.01"])  # a gradient even when every reward is 0
    run(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv").dropna(subset=["train/loss"])
    assert len(metrics) == 2 and metrics["train/loss"].map(math.isfinite).all()
    assert (metrics["train/grad_norm"] > 0).all()
    assert {"train/kl_ref", "time/teacher"} <= set(metrics.columns)

    assert (tmp_path / "run" / "final_policy" / "config.json").exists()  # merged: loads without peft
    adapter = tmp_path / "run" / "final_adapter"
    assert (adapter / "adapter_config.json").exists() and not (adapter / "config.json").exists()
    trained = AutoPeftModelForCausalLM.from_pretrained(adapter, local_files_only=True)  # base: model.path
    lora_b = [p for name, p in trained.named_parameters() if "lora_B" in name]
    assert lora_b and any(bool(p.abs().sum() > 0) for p in lora_b)  # trained away from its zero start
