"""Non-finite updates: skipped, counted, and fatal after `train.max_consecutive_skips` in a row.

One NaN or inf loss or gradient would write NaN into the weights and AdamW's moments, and every later step would be
lost. That optimiser step is skipped instead: its gradients are dropped and `optimizer.step()` still runs, with no
gradient, which leaves the parameters and AdamW's moments untouched but lets Lightning count the step. So
`trainer.max_steps`, the checkpoint cadence, the LR schedule (advanced as usual: a skipped update is a lost step,
not a pause), the RLSD lambda schedule and the periodic teacher sync stay functions of the step. Data parallel,
the ranks agree on every skip (the flags are summed over ranks), so the replicas stay identical.
"""

from __future__ import annotations

import math

import torch

from rlsd_lab.distributed import sum_over_ranks


class UpdateGuard:
    def __init__(self, max_consecutive: int):
        if max_consecutive < 1:
            raise ValueError(f"train.max_consecutive_skips={max_consecutive}: must be at least 1")
        self.max_consecutive = max_consecutive
        self.total = 0  # skipped optimiser steps in the whole run
        self.consecutive = 0
        self.last = ""  # what the last skipped update had that was not finite

    def allows(self, loss: float, grad_norm: float, device: torch.device) -> bool:
        """Whether this optimiser step may be applied (the same answer on every rank); counts a skip if not."""
        values = {"loss": loss, "gradient norm": grad_norm}
        flags = sum_over_ranks(torch.tensor([not math.isfinite(v) for v in values.values()], dtype=torch.float32,
                                            device=device))
        bad = [name for name, flag in zip(values, flags.tolist()) if flag]
        if not bad:
            self.consecutive = 0
            return True
        self.total += 1
        self.consecutive += 1
        self.last = " and ".join(bad) + f" (this rank: loss={loss:g}, gradient norm={grad_norm:g})"
        return False

    def check(self, step: int) -> None:
        """Stops the run once `max_consecutive` updates in a row were skipped."""
        if self.consecutive >= self.max_consecutive:
            raise RuntimeError(
                f"step {step}: the last {self.consecutive} optimizer updates were skipped (train.max_consecutive_skips="
                f"{self.max_consecutive}) because they were not finite; the last one had a non-finite {self.last}. "
                "metrics.csv holds every step up to this one (train/loss, train/grad_norm, train/skipped_updates).")

    def state_dict(self) -> dict:
        return {"total": self.total, "consecutive": self.consecutive, "last": self.last}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.consecutive, self.last = state["total"], state["consecutive"], state["last"]
