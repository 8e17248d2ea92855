"""Data-parallel training: Lightning's `ddp` (`trainer.strategy=ddp trainer.devices=N trainer.num_nodes=M`).

Every rank holds a full replica of the policy. What makes N ranks compute the update of one process:

- Data: every rank's loader yields the same global batch of `data.prompts_per_step` prompt indices (one seeded
  shuffle, no DistributedSampler); rank r keeps prompts r, r + N, ... (`rank_share`) and samples their groups, so
  a group never straddles ranks and group-normalised advantages need no communication.
- Loss weights (rlsd_lab/update.py): token-mean divides by the token count of the global mini-batch and the
  seq-mean modes by its sequence count, both summed over ranks before the weights are computed. Each rank's
  weighted loss is then its share of the global loss, and the sum of the ranks' gradients is the global gradient.
- Gradient sync (`GradientSync`): DDP's reducer all-reduces gradients during backward and divides by N, so each
  rank's loss is multiplied by N to turn that mean into the sum. The reducer stays in charge (nothing to hand-roll
  or get wrong on bucket order); Lightning prepares it at every `manual_backward`, and all micro-batches but the
  last of an optimiser step run under `no_sync`, so one all-reduce of the accumulated gradient per step. Gradient
  clipping and the optimiser step then see identical gradients on every rank, and the replicas stay identical.
- Metrics: the loss and its token-mean diagnostics are exact global values (summed shares); the other metrics are
  means over ranks (`reduce_metrics`), exact for per-response means because every rank holds the same number of
  responses. Lightning's loggers write from rank 0 only; rank 0 alone writes the run directory's other files.
- Validation is sharded (problems r, r + N, ...) and the correct / token counts summed: exact, 1/N of the work each.
- Sampling: rank r's engine is seeded with `seed + r`, so ranks draw independent responses. With
  `train.mini_batches > 1` each rank splits its own rows, so the global mini-batches are a different (equally
  random) partition of the step's rows than one process would draw.

`trainer.strategy=fsdp` does all of the above and also shards the policy over the ranks: rlsd_lab/sharding.py.
A Hydra multirun of data-parallel runs works under the submitit launchers (one task per rank) and is refused
at start under the others (`check_launch`, rlsd_lab/launchers.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext

import lightning as L
import torch
import torch.distributed as dist

from rlsd_lab.choices import check_choice
from rlsd_lab.launchers import launcher_kind
from rlsd_lab.sharding import fsdp_strategy

STRATEGIES = ("auto", "ddp", "fsdp")
# Totals over ranks rather than means: throughput and counts.
SUMMED_METRICS = ("perf/", "verify/failures")


def build_strategy(trainer_cfg):
    """The Lightning strategy for `trainer.strategy`, or an error that lists the valid choices."""
    check_choice("trainer.strategy", trainer_cfg.strategy, STRATEGIES)
    if trainer_cfg.strategy == "fsdp":
        return fsdp_strategy(trainer_cfg.devices, trainer_cfg.num_nodes)
    return trainer_cfg.strategy


def check_prompts_per_rank(prompts_per_step: int, world_size: int) -> None:
    if prompts_per_step % world_size:
        raise ValueError(f"data.prompts_per_step={prompts_per_step} is the global number of prompts per step and "
                         f"must be split into equal shares for the {world_size} data-parallel ranks (devices x "
                         "num_nodes); whole groups stay on one rank, so choose a multiple of the world size")


def check_launch(cfg, world_size: int) -> None:
    """Combinations that cannot run, refused before any work: a Hydra multirun re-launched per rank would start
    the whole sweep on every rank; vLLM starts its own torch.distributed group and reads whole weights."""
    launcher = launcher_kind()
    if world_size > 1 and launcher in ("basic", "joblib"):
        raise ValueError(f"a data-parallel run (trainer.devices x trainer.num_nodes > 1) cannot be a job of a Hydra "
                         f"multirun (-m) under the {launcher} launcher: Lightning relaunches the command for every "
                         "rank, which would start the whole sweep again on each (Lightning #11300, hydra #2070). "
                         "Use hydra/launcher=slurm (or submitit_local), where submitit starts one task per rank "
                         "(hydra.launcher.tasks_per_node=trainer.devices), or start one run per command.")
    if cfg.rollout.name == "vllm" and (world_size > 1 or cfg.trainer.strategy == "fsdp"):
        raise ValueError("rollout=vllm runs in one process with the whole policy: vLLM starts its own "
                         "torch.distributed group, which would take over Lightning's data-parallel one, and its weight "
                         "push reads unsharded weights; use rollout=hf with trainer.strategy=ddp or fsdp")
    if cfg.trainer.strategy == "fsdp" and cfg.model.get("lora", {}).get("enabled"):
        raise ValueError("model.lora.enabled=true is not supported with trainer.strategy=fsdp: use "
                         "trainer.strategy=ddp (the frozen base is replicated, only the adapters' gradients sync)")


def rank_share(items: Sequence, rank: int, world_size: int) -> Sequence:
    """Items rank, rank + world_size, ...: equal shares when len(items) is a multiple of world_size."""
    return items[rank::world_size]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over all ranks (a new tensor); `tensor` itself in a single process."""
    if not is_distributed():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def sum_values_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Per-key sums over ranks of float values (every rank must hold the same keys)."""
    if not is_distributed():
        return values
    names = sorted(values)
    totals = sum_over_ranks(torch.tensor([values[n] for n in names], dtype=torch.float64, device=device))
    return dict(zip(names, totals.tolist()))


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order (the same list on every rank); `[obj]` in a single process."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def reduce_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Means over ranks (sums for `SUMMED_METRICS`), identical on every rank.

    A key some rank lacks counts as 0 there: such keys are shares of responses by verifier reason
    (`verify/<reason>`), 0 where no response had that reason. NaN (an empty selection on a rank) is left out.
    """
    if not is_distributed():
        return metrics
    gathered: list[dict[str, float]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, metrics)
    reduced = {}
    for key in sorted(set().union(*gathered)):
        values = [rank_metrics.get(key, 0.0) for rank_metrics in gathered]
        if key.startswith(SUMMED_METRICS):
            reduced[key] = sum(values)
        else:
            finite = [v for v in values if not math.isnan(v)]
            reduced[key] = sum(finite) / len(finite) if finite else math.nan
    return reduced


class GradientSync:
    """Backward passes of one rank's micro-batches whose DDP-reduced gradient is the global mini-batch's.

    The loss weights already give each rank its share of the global loss; DDP averages the ranks' gradients, so
    the loss is scaled by the world size to make that average the sum. `deferred` skips the all-reduce for all but
    the last micro-batch of an optimiser step (gradients accumulate locally; the last backward reduces the total).
    One process: plain `manual_backward`, `deferred` does nothing.
    """

    def __init__(self, module: L.LightningModule):
        self.module = module
        self.world_size = module.trainer.world_size
        self.deferred = getattr(module.trainer.strategy, "block_backward_sync", nullcontext)

    def backward(self, loss: torch.Tensor) -> None:
        self.module.manual_backward(loss * self.world_size if self.world_size > 1 else loss)
