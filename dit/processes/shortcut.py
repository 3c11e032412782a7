"""Shortcut models (Frans, Hafner, Levine, Abbeel 2024, "One Step Diffusion via Shortcut Models"): the
"shortcut" process. Time and spans are dit/processes/spans.py's, which is the paper's convention
(noise x_0 at t = 0, data x_1 at t = 1); the network s(x_t, t, d) is the average velocity u(x_t, t, d).

Step sizes lie on a dyadic grid of M = `base_steps` (paper: 128) steps: d in {1/M, 2/M, 4/M, ..., 1}.
The finest, d = 1/M, is the flow itself: the network is asked it at span 0 (the official code, too,
gives its flow-matching samples the finest step's code), so M steps of span 1/M are Euler-M on the
instantaneous velocity.

Loss (paper eq. 5), per sample, drawn by the data stream:
- with probability 1 - `share` (paper: 3/4 of the batch), flow matching at span 0:
      || s(x_t, t, 0) - (x_1 - x_0) ||^2,   t uniform in [0, 1];
- otherwise self-consistency at a span 2d, d drawn uniformly among the grid's halves {1/M, ..., 1/2}, t
  uniform on the multiples of 2d in [0, 1 - 2d] (the official sampler's grid):
      || s(x_t, t, 2d) - sg(s_tgt) ||^2,   s_tgt = 1/2 s(x_t, t, d) + 1/2 s(x'_(t+d), t + d, d),
      x'_(t+d) = x_t + d s(x_t, t, d),
  exactly two Euler steps of span d composed (tests/test_few_step.py checks that). The two target
  passes run on the self-consistency samples only, without gradient, with the same labels; the paper's
  EMA-network targets are left out (the online network's, as its equation writes them).

Sampling: n jumps of span 1/n for n a power of two up to M (the spans it was trained on); classifier-free
guidance applies as to a flow (two passes), since training did not fold it in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dit.errors import UserError
from dit.processes.spans import SpanFlow, per_sample


@dataclass(frozen=True)
class ShortcutSection:
    """The shortcut process's training flags."""

    flow_time_scale: float = 1.0  # the network sees scale * t and scale * d (shared with flow's section)
    shortcut_steps: int = 128  # M: the finest step 1/M; a power of two (paper: 128)
    shortcut_share: float = 0.25  # share of samples with the self-consistency target (paper: 1/4 of a batch)


class Shortcut(SpanFlow):
    key = "shortcut"
    section = ShortcutSection

    def __init__(self, time_scale: float = 1.0, base_steps: int = 128, share: float = 0.25):
        super().__init__("uniform", 0.0, 1.0, time_scale)
        if not (isinstance(base_steps, int) and base_steps >= 2 and base_steps & (base_steps - 1) == 0):
            raise UserError(f"--shortcut-steps must be a power of two >= 2 (paper: 128), got {base_steps}")
        if not 0 <= share <= 1:
            raise UserError(f"--shortcut-share must be in [0, 1], got {share}")
        self.base_steps, self.share = base_steps, float(share)
        self.levels = int(math.log2(base_steps))  # spans 2d = 2^j / M for j = 1..levels

    @classmethod
    def from_run(cls, run) -> "Shortcut":
        return cls(run.flow_time_scale, run.shortcut_steps, run.shortcut_share)

    def to_meta(self) -> dict:
        return {"time_scale": self.time_scale, "base_steps": self.base_steps, "share": self.share}

    def draw(self, rng: np.random.Generator, shape: Sequence[int]) -> dict:
        """t (flow), noise, then whether the sample is a self-consistency one, its level and grid time
        (appended and always drawn, so every sample consumes the same randomness)."""
        t = self.draw_time(rng)
        noise = torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))
        consistent = rng.random() < self.share
        j = int(rng.integers(1, self.levels + 1))  # 2d = 2^j / M
        two_d = 2.0 ** j / self.base_steps
        k = int(rng.integers(0, round(1 / two_d)))  # t = k * 2d in [0, 1 - 2d]
        if consistent:
            return {"t": k * two_d, "span": two_d, "noise": noise}
        return {"t": t, "span": 0.0, "noise": noise}

    def loss(self, network, batch: dict) -> dict:
        x_t, v, t = self.interpolate(batch)
        h, cond = batch["span"].to(x_t.dtype), batch["cond"]
        target = v
        boot = torch.nonzero(h > 0).flatten()
        if boot.numel():
            sub = {k: val[boot] if isinstance(val, torch.Tensor) and val.shape[:1] == h.shape else val
                   for k, val in cond.items()}
            with torch.no_grad():
                guess = self.consistency_target(network, x_t[boot], t[boot], h[boot] / 2, sub)
            target = target.index_copy(0, boot, guess.to(target.dtype))
        pred = self.average_velocity(network, x_t, t, h, cond)
        err = self.squared_error(pred, target, cond)
        return {"loss": err, "mse": err}

    def consistency_target(self, network, x: torch.Tensor, t: torch.Tensor, d: torch.Tensor, cond) -> torch.Tensor:
        """s_tgt = (s(x, t, d) + s(x + d s(x, t, d), t + d, d)) / 2: two Euler jumps of span d averaged."""
        asked = self.network_span(d)
        wide = lambda out: out.float() if out.dtype in (torch.float16, torch.bfloat16) else out  # noqa: E731  (autocast)
        first = wide(self.average_velocity(network, x, t, asked, cond))
        second = wide(self.average_velocity(network, x + per_sample(d, x) * first, t + d, asked, cond))
        return (first + second) / 2

    def network_span(self, d: torch.Tensor) -> torch.Tensor:
        """The span the network is asked for steps d: 0 (the flow) at the finest step 1/M (module docstring)."""
        return torch.where(d * self.base_steps < 1.5, torch.zeros_like(d), d)

    # --- sampling ---

    def step_span(self, h: float) -> float:
        return 0.0 if h * self.base_steps < 1.5 else h

    def check_steps(self, steps: int) -> None:
        super().check_steps(steps)
        if steps & (steps - 1) or steps > self.base_steps:
            raise UserError(f"a shortcut model samples with a power of two of steps up to {self.base_steps} (the "
                            f"spans it was trained on), got {steps}; or use --sampler euler at span 0")
