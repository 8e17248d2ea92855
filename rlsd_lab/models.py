"""Building the embedded tiny Qwen2 policy from a config, and loading any local HF causal-LM directory.

`load_model` applies the load options of conf/model/hf.yaml (weights dtype, attention, gradient checkpointing,
LoRA). With LoRA the initial policy is the base model under the adapter, so the frozen teacher and the KL
reference cost no second copy of the weights (`initial_weights`).
"""

from __future__ import annotations

import copy
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from rlsd_lab.choices import check_choice


def build_tiny_qwen2(tokenizer, architecture: dict) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM sized by `architecture` (conf/model/tiny.yaml)."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
        **architecture,
    )
    return Qwen2ForCausalLM(config)


# Tokenizers saved as a bare `tokenizer.json` (ours: rlsd_lab/tokenizer.py). AutoTokenizer would swap in the model
# type's tokenizer class (Qwen2Tokenizer for a qwen2 config), whose normaliser drops characters such as newlines.
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(path: Path):
    config_file = path / "tokenizer_config.json"
    tokenizer_class = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.exists() else None
    if tokenizer_class in GENERIC_TOKENIZER_CLASSES:
        return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_policy(path: str | Path, dtype: torch.dtype = torch.float32,
                attn_implementation: str | None = None) -> tuple[PreTrainedModel, object]:
    """Model and tokenizer from a local directory (no downloads: `local_files_only`)."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no model at {path}: expected a transformers directory with config.json")
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype,
                                                 attn_implementation=attn_implementation)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def weights_dtype(name: str, accelerator: str, frozen: bool, key: str = "model.dtype") -> torch.dtype:
    """`auto` is bfloat16 only for frozen weights on a GPU (a LoRA base, an external teacher). Trained weights stay
    float32 (bf16 compute comes from
    `trainer.precision=bf16-mixed`): an AdamW step in bfloat16 rounds away updates below ~0.3% of a weight, which
    is most of them at RL learning rates (1e-6)."""
    check_choice(key, name, ["auto", *DTYPES])
    if name != "auto":
        return DTYPES[name]
    on_gpu = accelerator != "cpu" and torch.cuda.is_available()
    return torch.bfloat16 if on_gpu and frozen else torch.float32


def load_model(model_cfg, path: str | Path, accelerator: str = "cpu") -> tuple[PreTrainedModel, object]:
    """The policy at `path` with the load options of `model_cfg` (conf/model/hf.yaml). Options a config leaves
    out (conf/model/tiny.yaml) keep `load_policy`'s defaults: float32 weights, full fine-tuning."""
    lora = model_cfg.get("lora") or {}
    dtype = weights_dtype(model_cfg.get("dtype", "float32"), accelerator, bool(lora.get("enabled")))
    path = Path(path).resolve()  # a saved LoRA adapter names its base model by this path
    model, tokenizer = load_policy(path, dtype, model_cfg.get("attn_implementation"))
    if model_cfg.get("gradient_checkpointing"):
        # Non-reentrant: gradients reach LoRA weights inside checkpointed layers with no input-grad hooks.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora.get("enabled"):
        model = add_lora(model, lora)
    return model, tokenizer


def add_lora(model: PreTrainedModel, lora) -> PreTrainedModel:
    """Wraps `model` in a peft LoRA model: only the adapter weights are trainable."""
    try:
        from peft import LoraConfig, get_peft_model
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError as error:
        raise ImportError("model.lora.enabled=true needs peft: pip install 'rlsd-lab[lora]'") from error
    targets = lora["target_modules"]  # "all-linear" (every linear layer but the output head) or module names
    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=targets if isinstance(targets, str) else list(targets), task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    if isinstance(model.get_output_embeddings(), BaseTunerLayer):
        raise ValueError("model.lora.target_modules must leave out the output head: the teacher's hidden states are "
                         "projected by the head after the teacher pass, with the adapter enabled again")
    return model


def has_adapter(model) -> bool:
    """Whether `model` is a peft model (checked without importing peft: optional, and slow to import)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


class AdapterDisabled:
    """The base model under a LoRA policy, used like a frozen model: every decoder call runs in eval mode with the
    adapter disabled. It shares the policy's weights (nothing copied) and is not a submodule, so checkpoints do
    not hold the policy twice."""

    def __init__(self, policy):
        self.policy = policy

    def __call__(self, *args, **kwargs):
        with self.base():
            return self.policy(*args, **kwargs)

    def get_decoder(self):
        decoder = self.policy.get_decoder()

        def run(*args, **kwargs):
            with self.base():
                return decoder(*args, **kwargs)
        return run

    @contextmanager
    def base(self):
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.disable_adapter():
                yield
        finally:
            self.policy.train(was_training)

    def __getattr__(self, name):  # config, get_output_embeddings, training, eval, train, parameters, ...
        if name.startswith("__"):  # copy and pickle probe for these before `policy` exists
            raise AttributeError(name)
        return getattr(self.policy, name)


def initial_weights(policy):
    """The initial policy without gradients: a frozen deep copy, or for a LoRA policy its base model (no copy)."""
    if has_adapter(policy):
        return AdapterDisabled(policy)
    return copy.deepcopy(policy).eval().requires_grad_(False)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
