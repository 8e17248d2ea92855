"""Rollout engines behind one interface. `build_engine` maps `rollout.name` to one."""

from __future__ import annotations

from rlsd_lab.choices import check_choice
from rlsd_lab.rollout.base import RolloutBatch, RolloutEngine, SamplingParams, concat_rollouts
from rlsd_lab.rollout.hf_engine import HFRolloutEngine


def vllm_engine(*args, **kwargs) -> RolloutEngine:
    """Imports vLLM only when asked for: it is an optional dependency (requirements-vllm.txt) and slow to import."""
    try:
        from rlsd_lab.rollout.vllm_engine import VLLMRolloutEngine
    except ModuleNotFoundError as error:
        if error.name != "vllm":
            raise
        raise ImportError("rollout=vllm needs vLLM, which is not installed: see requirements-vllm.txt") from error
    return VLLMRolloutEngine(*args, **kwargs)


ENGINES = {"hf": HFRolloutEngine, "vllm": vllm_engine}


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokens that end a response: the tokenizer's eos and every eos id of the model's generation config.

    Chat models often end a turn with a token other than the tokenizer's eos (Llama 3 Instruct: `<|eot_id|>`
    next to `<|end_of_text|>`; Qwen2.5 Instruct: `<|im_end|>` next to `<|endoftext|>`), and list them all there.
    """
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    return list(dict.fromkeys(i for i in ids if i is not None))


def build_engine(name: str, model, tokenizer, seed: int, **options) -> RolloutEngine:
    """`options`: the engine's own settings (`rollout.engine` in conf/rollout/vllm.yaml)."""
    check_choice("rollout engine", name, sorted(ENGINES))
    return ENGINES[name](model, tokenizer.pad_token_id, stop_token_ids(model, tokenizer), seed=seed, **options)


__all__ = ["ENGINES", "HFRolloutEngine", "RolloutBatch", "RolloutEngine", "SamplingParams", "build_engine",
           "stop_token_ids"]
