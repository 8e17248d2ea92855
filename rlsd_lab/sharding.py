"""Fully sharded data parallel (`trainer.strategy=fsdp`): PyTorch's FSDP2 (`fully_shard`) under Lightning's
ModelParallelStrategy, on top of everything rlsd_lab/distributed.py does for `ddp`.

Why this plan: besides the update's forward, the trainer calls parts of the policy on their own (the decoder with a
KV cache in the teacher pass, the output head on chunks of hidden states, recomputed in backward), and FSDP
gathers a unit's parameters only in the forward of that unit's own module. The plan is the usual FSDP2 one: one
unit per decoder layer (gathered for its own forward and backward) and the root unit for the rest (embedding,
final norm, output head; a tied head is the embedding's weight). Every pass with gradients goes through the
root's forward (`response_hidden` calls the whole model), which gathers the root's parameters and keeps them
until the gradient is reduced, so the head chunks after it and in backward use whole weights. The passes without
gradients run inside `gathered`, on whole weights.

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


def _set_resharding(model: torch.nn.Module) -> None:
    """Layers shard again after each forward. The root (embedding, final norm, output head) stays gathered after
    its forward, so the output head can then project any number of chunks (also recomputed in backward), until
    its gradient has been reduced at the end of backward, or `gathered` ends."""
    model.set_reshard_after_forward(True)
    model.set_reshard_after_forward(False, recurse=False)


def shard_model(model: torch.nn.Module, mesh) -> None:
    """Shards a transformers causal LM in place over the 1-D data-parallel `mesh`: one unit per decoder layer,
    and the root unit for the rest."""
    for layer in model.get_decoder().layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    _set_resharding(model)
    # FSDP2 takes the first unit to run forward as the root of all the others: make it the root now, whatever
    # the trainer calls first.
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
    for model in sharded:
        # From the same state on every rank: sharded, and no record of earlier forward passes (FSDP's backward
        # prefetching reads that record, so a decode loop's rank-dependent number of calls must not stay in it).
        model.reset_iter_state()
        model.set_reshard_after_forward(False)
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.unshard()
    try:
        yield
    finally:
        for model in sharded:
            model.reset_iter_state()
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
