"""Non-finite steps: detected, skipped and counted on the device, without a host sync per step.

A step is *bad* when its gradient norm is not finite (a NaN or inf loss always makes it so). Bad
steps do not change the weights: the optimizer is told through `found_inf`, the flag PyTorch's
fused AdamW reads on the device (the same mechanism GradScaler uses), and the EMA update is
multiplied by 0. Nothing here calls `.item()`; the counters are read every few steps
(`read`), where train.py syncs anyway to log, and the run stops once `max_nonfinite` steps in a
row were bad.

Under fp16 the loss scaler skips steps whose gradients overflowed, which is normal (the scale is
searched for); those are not counted, only steps whose *loss* is not finite are, so loss scaling
never trips the stop rule.
"""

from __future__ import annotations

import torch


class StepGuard:
    def __init__(self, device, fp16: bool):
        self.fp16 = fp16
        zero = torch.zeros((), device=device)
        self.skipped, self.in_a_row, self.worst_run = zero.clone(), zero.clone(), zero.clone()

    def check(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
        """Device bool: may this step update the weights? Updates the counters (no sync)."""
        ok = torch.isfinite(grad_norm.detach().float())
        counted_bad = ~torch.isfinite(loss.detach().float())
        if not self.fp16:
            counted_bad = counted_bad | ~ok
        bad = counted_bad.float()
        self.skipped += bad
        self.in_a_row = (self.in_a_row + 1) * bad
        self.worst_run = torch.maximum(self.worst_run, self.in_a_row)
        return ok

    def read(self, accelerator) -> tuple[int, int]:
        """(bad steps so far, the longest run of consecutive bad steps since the last read), the
        maximum over processes. A sync: call on every process at the same step."""
        counts = accelerator.reduce(torch.stack([self.skipped, self.worst_run]), "max").tolist()
        self.worst_run = self.in_a_row.clone()
        return int(counts[0]), int(counts[1])
