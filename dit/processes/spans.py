"""Few-step flows: a network of two times that jumps along the flow, the base of MeanFlow and shortcut models.

Conventions (the flow's, dit/processes/flow.py, on its linear path; everything few-step reads them here):
- x_t = t x_data + (1 - t) noise, NOISE at t = 0 and DATA at t = 1; the instantaneous velocity is
  v(x_t, t) = E[x_data - noise | x_t], and sampling runs t upward.
- The network's output is an AVERAGE velocity over a span h >= 0 of time starting at t:
      u(x_t, t, h) = 1/h * integral_t^(t+h) v(x_tau, tau) dtau,   so   x_(t+h) = x_t + h u(x_t, t, h)
  exactly along the ODE's trajectory; h = 0 is the instantaneous velocity v (flow matching). One
  evaluation at (x_0, 0, 1) maps noise to data: the one-step sampler.
- The network is fed `network_time(t)` = time_scale * t and, as cond[SPAN] (dit/networks/conditioning.py),
  `span_input(h)` = time_scale * h (the same units), embedded by a second timestep embedder (DiT's
  span_embed).
- MeanFlow (Geng et al. 2025) writes time the other way (data at its t = 0, noise at 1, v = noise - data)
  and an interval [r, t] with r nearer the data. The mapping: its t is 1 - t here, its r is
  1 - (t + h), so its t - r is our h, and its u and v are minus ours. Its one-step sample
  z_0 = z_1 - u(z_1, 0, 1) is x_1 = x_0 + u(x_0, 0, 1) here.
- Shortcut models (Frans et al. 2024) use this convention already: s(x_t, t, d) is u(x_t, t, d).

Both processes predict velocity on the linear path only (the identity and the self-consistency rule are
written for it), train with the flow's per-sample draws plus a span, and sample with the few-step
sampler (dit/sampling/few_step.py: `steps` jumps of span 1/steps) or, at span 0, every flow ODE sampler.
"""

from __future__ import annotations

from types import MappingProxyType

import torch

from dit.errors import UserError
from dit.layout import SPAN
from dit.processes.base import mean_over_generated
from dit.processes.flow import FlowMatching


def per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """v (B,) viewed as (B, 1, ...) to scale x's samples."""
    return v.view(-1, *([1] * (x.dim() - 1)))


class SpanFlow(FlowMatching):
    """A flow whose network also takes the span h (module docstring). Subclasses set `key`, `section`,
    their loss and their settings; `step_span` and `check_steps` say how they are sampled."""

    reads_span = True
    classifier_guidance_refusal = ("classifier guidance needs the score of every intermediate time; a few-step "
                                   "model jumps over them: use classifier-free guidance or a flow model")
    default_sampling_steps = 1  # the point of these processes: one evaluation
    preview_sampler = "few-step"
    # Previews over the CPU demo show what sampling gives by default: one jump (train.py --sample-steps N).
    cpu_defaults = MappingProxyType({"sample_steps": 1})

    def __init__(self, time_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0,
                 time_scale: float = 1.0):
        super().__init__("linear", "velocity", time_sampling, logit_mean, logit_std, 0.0, time_scale=time_scale)

    def shared_meta(self) -> dict:
        return {"time_sampling": self.time_sampling, "logit_mean": self.logit_mean, "logit_std": self.logit_std,
                "time_scale": self.time_scale}

    # --- what the network is fed ---

    def span_input(self, h: torch.Tensor) -> torch.Tensor:
        """cond[SPAN] for spans h (B,) of process time: the network's time units (module docstring)."""
        return h.float() * self.time_scale

    def average_velocity(self, network, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor, cond: dict) -> torch.Tensor:
        """u(x, t, h) of the network (B,) times and spans, cond's labels."""
        return network(x, self.network_time(t), {**cond, SPAN: self.span_input(h)})

    # --- training ---

    def interpolate(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, v, t) of a batch: the linear path's point and its conditional velocity data - noise."""
        data, noise = batch["x0"], batch["noise"]
        t = batch["t"].to(data.dtype)
        tb = per_sample(t, data)
        return tb * data + (1 - tb) * noise, data - noise, t

    @staticmethod
    def squared_error(pred: torch.Tensor, target: torch.Tensor, cond) -> torch.Tensor:
        """Per-sample mean squared error over the generated positions (B,)."""
        return mean_over_generated((pred - target) ** 2, cond)

    # --- sampling (dit/sampling/few_step.py) ---

    def step_span(self, h: float) -> float:
        """The span the network is asked for a jump of length h (MeanFlow: h itself)."""
        return h

    def check_steps(self, steps: int) -> None:
        """A UserError for a jump count this process cannot sample with."""
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise UserError(f"the few-step sampler takes a whole number of steps >= 1, got {steps!r}")
