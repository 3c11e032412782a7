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
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        """ema <- decay * ema + (1 - decay) * weights, for every parameter (the frozen pos_embed
        included: it never changes, so neither does its average). `decay` overrides self.decay."""
        decay = self.decay if decay is None else decay
        ema = [p for p in self.model.parameters()]
        new = [p.detach().to(e.dtype) for p, e in zip(model.parameters(), ema)]
        if len(new) != len(ema):
            raise ValueError("EMA and model have different parameter lists")
        torch._foreach_lerp_(ema, new, 1.0 - decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state_dict, strict=True)
