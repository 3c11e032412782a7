"""MeanFlow (Geng, Deng, Bai, Kolter, He 2025, "Mean Flows for One-step Generative Modeling"): the
"meanflow" process. Time, spans and the sign mapping to the paper are dit/processes/spans.py's.

The network u_theta(x_t, t, h) learns the average velocity over [t, t + h] from the MeanFlow identity,
differentiating h u(x_t, t, h) = integral_t^(t+h) v dtau in t with the end s = t + h held fixed:

    u(x_t, t, h) = v(x_t, t) + h * du/dt,   du/dt = v . grad_x u + d_t u   (paper eq. 6, in our time)

The training target (paper eq. 10) replaces v by the sample's conditional velocity v_t = data - noise
and u by the network, behind a stop-gradient:

    u_tgt = sg(v_t + h * jvp(u_theta, (x_t, t), tangent (v_t, 1)))   at s = t + h fixed,

one forward-mode JVP (dit/processes/jvp.py, `target`). Draws (paper §4.3,
Table 1): two times from the flow's time sampler, t the earlier and t + h the later; with probability
1 - `share` the span is 0 (plain flow matching: the paper's r = t, 75% by default). Loss (§4.3): the
per-sample squared error times the adaptive weight sg(1 / (error + c)^p) (p = `power`, c = 1e-3;
p = 0 is the plain squared error).

Classifier-free guidance folded into the target (§4.2, eq. 13-16): for a sample whose label is kept,
the velocity of the guided field v_cfg = w v_t + (1 - w) u_theta(x_t, t, 0 | null) replaces v_t (as the
target's velocity and as the JVP's tangent); a sample whose label was dropped learns the unguided v_t,
so u_theta(., ., 0 | null) is the unconditional velocity. Sampling then takes ONE pass per step with
no doubled batch, and adding guidance again at sampling is refused (`guidance_refusal`). w = 1: none.

Cost: the JVP runs on the bare module (no gradient, no data-parallel wrapper), and the gradient pass
is an ordinary forward through the wrapper (so DDP's all-reduce happens), so a step costs about a
JVP (~2 forwards) more than a flow step; benchmarks/few_step/ measures it. FSDP (sharded parameters)
and compiled blocks are refused: the JVP needs the whole, eager module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dit.errors import UserError
from dit.layout import SPAN
from dit.processes import jvp as fwd
from dit.processes.spans import SpanFlow, per_sample

ADAPTIVE_C = 1e-3  # the adaptive weight's c (paper §4.3)


@dataclass(frozen=True)
class MeanFlowSection:
    """The meanflow process's training flags (shared with flow's section where the names are the same)."""

    time_sampling: str = "uniform"  # uniform or logit-normal (recipe meanflow: the paper's, in our time)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    flow_time_scale: float = 1.0  # the network sees scale * t and scale * h
    meanflow_share: float = 0.25  # share of samples with a span h > 0 (paper: r != t for 25%)
    meanflow_power: float = 1.0  # adaptive loss weight 1 / (error + c)^p (paper: p = 1; 0: plain MSE)
    meanflow_cfg: float = 1.0  # guidance scale w folded into training (1: none; paper ImageNet: 3)


class MeanFlow(SpanFlow):
    key = "meanflow"
    section = MeanFlowSection

    def __init__(self, time_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0,
                 time_scale: float = 1.0, share: float = 0.25, power: float = 1.0, cfg: float = 1.0):
        super().__init__(time_sampling, logit_mean, logit_std, time_scale)
        if not 0 <= share <= 1:
            raise UserError(f"--meanflow-share must be in [0, 1], got {share}")
        if not power >= 0:
            raise UserError(f"--meanflow-power must be >= 0 (0: plain squared error), got {power}")
        if not (np.isfinite(cfg) and cfg >= 1):
            raise UserError(f"--meanflow-cfg must be >= 1 (1: no guidance folded into training), got {cfg}")
        self.share, self.power, self.cfg = float(share), float(power), float(cfg)

    @classmethod
    def from_run(cls, run) -> "MeanFlow":
        if run.distributed == "fsdp":
            raise UserError("--process meanflow takes a JVP of the whole network, which FSDP shards: use "
                            "--distributed ddp")
        if run.compile:
            raise UserError("--process meanflow takes a JVP through the network, which compiled blocks do not "
                            "support: drop --compile")
        return cls(run.time_sampling, run.logit_mean, run.logit_std, run.flow_time_scale, run.meanflow_share,
                   run.meanflow_power, run.meanflow_cfg)

    def to_meta(self) -> dict:
        return {**self.shared_meta(), "share": self.share, "power": self.power, "cfg": self.cfg}

    @property
    def guidance_refusal(self) -> str | None:
        if self.cfg == 1:
            return None
        return (f"this meanflow model folded guidance (scale {self.cfg:g}) into training, so its one pass per step "
                "is already guided: sample it with --cfg-scale 1")

    def draw(self, rng: np.random.Generator, shape: Sequence[int]) -> dict:
        """t, noise, then a second time and whether the span is kept (appended: the flow's order first)."""
        a = self.draw_time(rng)
        noise = torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))
        b = self.draw_time(rng)
        spans = rng.random() < self.share
        t, s = (min(a, b), max(a, b)) if spans else (a, a)
        return {"t": t, "span": s - t, "noise": noise}

    def loss(self, network, batch: dict) -> dict:
        x_t, v, t = self.interpolate(batch)
        h, cond = batch["span"].to(x_t.dtype), batch["cond"]
        if self.cfg != 1:
            v = self.guided_velocity(network, x_t, t, v, cond)
        target = self.target(fwd.bare(network), x_t, t, h, v, cond)
        pred = self.average_velocity(network, x_t, t, h, cond)
        err = self.squared_error(pred, target, cond)
        weight = 1 / (err.detach() + ADAPTIVE_C) ** self.power if self.power else torch.ones_like(err)
        return {"loss": weight * err, "mse": err}

    @torch.no_grad()
    def target(self, network, x_t: torch.Tensor, t: torch.Tensor, h: torch.Tensor, v: torch.Tensor, cond) -> torch.Tensor:
        """u_tgt = v + h du/dt, du/dt the JVP of the network's u along (v, 1) in (x, t) with the end
        t + h held fixed (module docstring); `network` the bare module."""
        end = t + h  # held fixed while t moves: d(span)/dt = -1

        def u_of(x, tt):
            return network(x, self.network_time(tt), {**cond, SPAN: self.span_input(end - tt)})

        _, dudt = fwd.jvp(u_of, (x_t, t), (v, torch.ones_like(t)))
        return v + per_sample(h, x_t) * dudt.to(v.dtype)  # u = v + h du/dt

    def guided_velocity(self, network, x_t, t, v, cond) -> torch.Tensor:
        """v_cfg = w v_t + (1 - w) u(x_t, t, 0 | null) where the label is kept, v_t where dropped (§4.2)."""
        drop = cond.get("drop")
        kept = torch.ones_like(t, dtype=torch.bool) if drop is None else drop == 0
        with torch.no_grad():
            null = {**cond, "drop": torch.ones_like(t, dtype=torch.long)}
            v_null = self.average_velocity(network, x_t, t, torch.zeros_like(t), null).float().to(v.dtype)
        guided = self.cfg * v + (1 - self.cfg) * v_null
        return torch.where(per_sample(kept, v), guided, v)
