"""Exponential moving average of the network weights (DiT §4: decay 0.9999; every reported
result samples from the EMA weights).

The EMA is a plain copy of the *unwrapped* network, never wrapped by DDP or compiled, so it is
saved, exported and sampled from like any model. Under DDP every process holds identical
weights after each optimizer step, so every process updates its own copy identically and no
communication is needed.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None, mask: torch.Tensor | None = None) -> None:
        """ema <- decay * ema + (1 - decay) * weights, for every parameter (the frozen pos_embed
        included: it never changes, so neither does its average). `decay` overrides self.decay;
        `mask`, a 0-dim device tensor, multiplies the update (0: skip it, without a host sync)."""
        ema_lerp(list(self.model.parameters()), list(model.parameters()), self.decay if decay is None else decay, mask)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state_dict, strict=True)


@torch.no_grad()
def ema_lerp(ema: list[torch.Tensor], weights: list[torch.Tensor], decay: float, mask: torch.Tensor | None = None):
    """In place: ema += (1 - decay) * mask * (weights - ema), over lists of matching tensors."""
    if len(ema) != len(weights):
        raise ValueError("EMA and model have different parameter lists")
    new = [w.detach().to(e.dtype) for w, e in zip(weights, ema)]
    if mask is None:
        torch._foreach_lerp_(ema, new, 1.0 - decay)
        return
    # One pass with a 0-dim weight tensor (broadcast): exactly ema where mask is 0, since the
    # weights of a skipped step are the previous, finite ones.
    weight = mask.to(ema[0].dtype) * (1.0 - decay)
    torch._foreach_lerp_(ema, new, [weight] * len(ema))
