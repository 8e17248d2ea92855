"""Colocated vLLM rollouts (`rollout=vllm`): vLLM runs inside the trainer process and the trainer pushes its current
weights into it in memory (`sync_weights`) after each update: no checkpoint goes through disk.

In process (VLLM_ENABLE_V1_MULTIPROCESSING=0) because the push hands tensors to vLLM's in-place reload
(`reload_weights`, which also re-packs weights for the CPU kernels); across a process boundary every push would be
serialised. vLLM starts from a dummy load plus one push, so it needs the model's config only, and starts from the
trainer's in-memory weights whatever their origin (checkpoint, LoRA, a model built in a test).

Log-probs: `logprobs_mode="processed_logprobs"` gives the log-prob of the sampled token after temperature and
top-k/top-p, i.e. under the temperature softmax renormalised over the nucleus. With top_p=1 that is exactly the
temperature-scaled full softmax the trainer recomputes (the RolloutBatch contract); `raw_logprobs` would ignore the
temperature. No mode gives the pre-top-p log-prob when top_p<1, so the engine refuses top_p<1 rather than bias the
importance ratio by log(nucleus mass). Greedy rows get log-probs at temperature 1, as in the HF engine.

Sleep mode (GPU only; the CPU backend has none): after each generate vLLM drops its weights and KV cache (level 2),
giving the memory back to training; the next push or generate brings them back.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence

import torch
from vllm import LLM
from vllm import SamplingParams as VLLMSamplingParams
from vllm.inputs import TokensPrompt
from vllm.platforms import current_platform

from rlsd_lab.models import has_adapter
from rlsd_lab.rollout.base import RolloutBatch, RolloutEngine, SamplingParams
from rlsd_lab.rollout.hf_engine import left_pad


def policy_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's parameters under checkpoint names, tied ones under each name: vLLM's CPU backend re-packs the
    output head only when `lm_head.weight` itself is loaded. A LoRA policy's adapter is folded in on the side:
    merging in place and unmerging would leave rounding drift in a bfloat16 base at every push."""
    if not has_adapter(model):
        yield from ((name, param.detach()) for name, param in model.named_parameters(remove_duplicate=False))
        return
    from peft.tuners.lora import LoraLayer

    lora_layers = {f"{name}.base_layer.weight": module for name, module in model.named_modules()
                   if isinstance(module, LoraLayer)}
    for name, param in model.named_parameters(remove_duplicate=False):
        if ".lora_" in name:
            continue
        weight = param.detach()
        if name in lora_layers:
            layer = lora_layers[name]
            weight = weight + sum(layer.get_delta_weight(adapter) for adapter in layer.active_adapters)
        yield name.removeprefix("base_model.model.").replace(".base_layer.", "."), weight


class VLLMRolloutEngine(RolloutEngine):
    """Options (conf/rollout/vllm.yaml `engine`): `kv_cache_gib` sizes the KV cache (null: vLLM sizes it from
    `gpu_memory_utilization`, GPU only; on CPU that fraction would be of all RAM), `dtype` null runs vLLM in the
    trainer's weights dtype, `sleep` enables sleep mode where the platform has it."""

    def __init__(self, model, pad_id: int, stop_ids: Sequence[int], seed: int = 0, *, kv_cache_gib: float | None = 1.0,
                 gpu_memory_utilization: float = 0.3, max_model_len: int | None = None,
                 max_num_seqs: int | None = None, enforce_eager: bool = True, dtype: str | None = None,
                 sleep: bool = True):
        self.model, self.pad_id, self.stop_ids = model, pad_id, list(stop_ids)
        self.generator = torch.Generator().manual_seed(seed)
        self.sleep_enabled = sleep and current_platform.is_sleep_mode_available()
        self.asleep: set[str] = set()  # vLLM memory tags ("weights", "kv_cache") released by sleep
        config = (model.get_base_model() if has_adapter(model) else model).config
        self._config_dir = tempfile.TemporaryDirectory(prefix="rlsd_lab_vllm_")
        config.save_pretrained(self._config_dir.name)
        memory = ({"kv_cache_memory_bytes": int(kv_cache_gib * 2**30)} if kv_cache_gib is not None
                  else {"gpu_memory_utilization": gpu_memory_utilization})
        # The weight push needs vLLM's engine in this process. Without a binding, vLLM's CPU worker leaves the
        # trainer's OpenMP threads and CPU affinity alone.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        set_num_threads = torch.set_num_threads  # vLLM's CPU worker turns it into a no-op for the whole process
        self.llm = LLM(model=self._config_dir.name, load_format="dummy", skip_tokenizer_init=True,
                       generation_config="vllm", logprobs_mode="processed_logprobs", seed=seed,
                       dtype=dtype or str(next(model.parameters()).dtype).removeprefix("torch."),
                       max_model_len=max_model_len, max_num_seqs=max_num_seqs, enforce_eager=enforce_eager,
                       enable_sleep_mode=self.sleep_enabled, **memory)
        torch.set_num_threads = set_num_threads
        self.sync_weights(model)

    def sync_weights(self, model) -> None:
        """Loads `model`'s current weights into vLLM in place. The trainer calls it after its optimizer steps, so
        that the next rollouts (and validation) sample from the updated policy."""
        if "weights" in self.asleep:
            self.llm.wake_up(tags=["weights"])
            self.asleep.discard("weights")
        with torch.no_grad():
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": policy_weights(model)})
        if "kv_cache" not in self.asleep:  # (sleep has emptied it already)
            self.llm.reset_prefix_cache()  # cached prompt KV blocks were computed by the old weights

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        if params.top_p < 1.0 and not params.greedy:
            raise ValueError(f"rollout.top_p={params.top_p}: vLLM returns log-probs renormalised over the top-p "
                             "nucleus, not the full-softmax log-probs the trainer recomputes; use top_p=1 "
                             "or rollout=hf")
        self._wake()
        rows = [ids for ids in prompt_ids for _ in range(params.n)]
        # One seed per row from the engine's own generator: samples repeat with the seed, and vLLM never draws
        # from the trainer process's global RNG.
        seeds = torch.randint(2**31 - 1, (len(rows),), generator=self.generator).tolist()
        sampling = [VLLMSamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature,
                                       logprobs=0, stop_token_ids=self.stop_ids,
                                       seed=None if params.greedy else seed) for seed in seeds]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in rows], sampling, use_tqdm=False)
        if self.sleep_enabled:
            self.llm.sleep(level=2)
            self.asleep = {"weights", "kv_cache"}
        return self._batch(rows, [output.outputs[0] for output in outputs])

    def _wake(self) -> None:
        if "weights" in self.asleep:  # level-2 sleep dropped them: the trainer's weights are the current ones
            self.sync_weights(self.model)
        if "kv_cache" in self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep.discard("kv_cache")

    def _batch(self, rows: list[list[int]], completions) -> RolloutBatch:
        """The HF engine's layout: prompts left-padded, responses right-padded with pad_id, eos kept in the mask."""
        prompt_ids, prompt_mask = left_pad(rows, self.pad_id)
        width = max(len(completion.token_ids) for completion in completions)
        response_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        logprobs = torch.zeros((len(rows), width))
        response_mask = torch.zeros((len(rows), width))
        for row, completion in enumerate(completions):
            tokens = list(completion.token_ids)
            response_ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            logprobs[row, :len(tokens)] = torch.tensor([step[token].logprob
                                                        for step, token in zip(completion.logprobs, tokens)])
            response_mask[row, :len(tokens)] = 1.0
        finished = torch.tensor([len(c.token_ids) > 0 and c.token_ids[-1] in self.stop_ids for c in completions])
        device = next(self.model.parameters()).device
        return RolloutBatch(prompt_ids=prompt_ids.to(device), prompt_mask=prompt_mask.to(device),
                            response_ids=response_ids.to(device), response_mask=response_mask.to(device),
                            logprobs=logprobs.to(device), finished=finished.to(device))
