"""Fully sharded data parallel (`trainer.strategy=fsdp`): PyTorch's FSDP2 (`fully_shard`) under Lightning's
ModelParallelStrategy, on top of everything rlsd_lab/distributed.py does for `ddp`.

Why FSDP2 and this sharding plan: besides the update's forward, the trainer calls the policy in many other ways:
the rollout's decode loop, the decoder alone for hidden states, the output head on chunks of them (recomputed in
backward), the teacher's KV-cached passes. FSDP1 gathers parameters only inside the wrapped root's forward, so
those calls would see shards. FSDP2 gathers a unit's parameters in a pre-forward hook of the unit's own modules,
wherever they are called from, and reduce-scatters their gradients after backward. So every module holding
parameters is in a unit: one per decoder layer, and one for the modules outside the layers (input embedding,
final norm, output head), grouped because a tied head shares its weight with the embedding.

What else differs from ddp:
- Gradients are reduce-scattered and averaged over ranks, so the loss is scaled by the world size as under DDP
  (`GradientSync`); every micro-batch reduce-scatters (no deferred sync).
- `clip_grad_norm_` over sharded gradients returns the norm of the full gradient as a DTensor (`full_value`).
- The passes without gradients (rollout, validation, teacher pass, diagnostics) run on whole weights gathered once
  per pass (`gathered`), not per token and layer: every rank then holds the full policy (and the teacher) while
  sampling, as with vLLM-style rollouts. This also lets ranks make different numbers of calls there.
- Frozen copies (fixed/periodic teacher, KL reference) are deep-copied before sharding and sharded the same way,
  so the periodic teacher re-syncs shard by shard.
- Checkpoints gather a full state dict to rank 0 (one file, as under ddp; `resume` works the same), and
  `final_policy/` is saved from a gathered state dict.
- Each rank loads the full weights before sharding them (no meta-device initialisation), so the policy must fit
  one device once at start; FSDP saves the gradients, the AdamW state and the parameters at rest.
Not supported (refused at start, distributed.check_launch): LoRA, rollout=vllm; the hybrids' per-term gradient
norms (`train/grad_norm/<term>`) are not measured under fsdp.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor


def fsdp_strategy(devices: int, num_nodes: int) -> ModelParallelStrategy:
    """Data parallel over every rank (no tensor parallelism); checkpoints as single files on rank 0."""
    if not isinstance(devices, int):
        raise ValueError(f"trainer.strategy=fsdp needs a number of devices per node, not trainer.devices={devices}")
    return ModelParallelStrategy(data_parallel_size=devices * num_nodes, tensor_parallel_size=1,
                                 save_distributed_checkpoint=False)


def is_sharded(model) -> bool:
    return isinstance(model, FSDPModule)


def _outside_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Input embedding, final norm and output head, each once (a tied head is the embedding's weight)."""
    modules: list[torch.nn.Module] = []
    for module in (model.get_input_embeddings(), model.get_decoder().norm, model.get_output_embeddings()):
        if all(module is not other for other in modules):
            modules.append(module)
    return modules


def _set_resharding(model: torch.nn.Module) -> None:
    """Layers shard again after each forward; the unit outside the layers stays gathered until its gradient is
    reduced (or `gathered` ends), so the output head can run on any number of chunks without communicating."""
    model.set_reshard_after_forward(True)
    model.get_input_embeddings().set_reshard_after_forward(False, recurse=False)


def shard_model(model: torch.nn.Module, mesh) -> None:
    """Shards a transformers causal LM in place over the 1-D data-parallel `mesh` (the plan above)."""
    for layer in model.get_decoder().layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(_outside_layers(model), mesh=mesh)
    fully_shard(model, mesh=mesh)
    _set_resharding(model)
    # FSDP2 takes the first unit to run forward as the root of all the others. The trainer may call the decoder
    # first (an update without a rollout before it), so run one token through the whole model now.
    with torch.no_grad():
        model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device), use_cache=False)


@contextmanager
def gathered(*models) -> Iterator[None]:
    """Whole weights inside the block: every unit of the sharded `models` is gathered on entry and sharded again
    on exit, and forward passes inside communicate nothing.

    Every forward of a sharded unit outside such a block is a collective, so all ranks must make the same calls;
    inside it, ranks may differ (decode loops that stop early, a teacher pass with no group to score on one rank,
    rank 0 alone exporting token credit). Entering and leaving are the collectives, made by every rank. Models
    that are not sharded (and None) are passed over.
    """
    sharded = [model for model in models if is_sharded(model)]
    units = [module for model in sharded for module in model.modules() if isinstance(module, FSDPModule)]
    for model in sharded:
        model.set_reshard_after_forward(False)
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
        for model in sharded:
            _set_resharding(model)


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a DTensor (e.g. a gradient norm over shards); any other tensor unchanged."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict on CPU (a collective: every rank must call it; rank 0 gets the tensors), with a
    tied weight under its first name only, as `save_pretrained` writes it."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    tied = ({name for name, _ in model.named_parameters(remove_duplicate=False)}
            - {name for name, _ in model.named_parameters()})
    return {name: tensor for name, tensor in state.items() if name not in tied}
