"""Flow matching / stochastic interpolants (SiT, Ma et al. 2024; rectified flow, Liu et al. 2023):
the "flow" process. The one module that owns its time and prediction conventions.

Conventions (SiT's; everything else reads them from here):
- x_t = alpha_t x_data + sigma_t noise on a path of dit/processes/paths.py; t in [0, 1], NOISE at
  t = 0 and DATA at t = 1, so samplers integrate t upward (the reverse of the Gaussian process).
  In SiT's code the data is "x1" and the noise "x0"; in the batch and in `convert` the clean data
  is called "data" (also "x0", the project-wide name of clean data; "eps" is "noise").
- The network is fed `time_scale * t` (`network_time`). SiT's and LightningDiT's networks take t
  itself (time_scale 1, the default: public SiT weights need it); 1000 would put t in the range
  DiT's timestep embedder was designed for. Recorded in every checkpoint (`to_meta`).
- Predictions: "velocity" u_t = d alpha x_data + d sigma noise (default), "noise", or "score"
  grad log p_t(x_t) = -noise / sigma_t. An output with 2C channels is read from its first C (the
  released SiT keeps DiT's vestigial learned-sigma half). `convert` maps any prediction to any of
  velocity, noise, score, data exactly, by inverting the 2x2 system (x_t, u_t) = M (data, noise).
- Training randomness per sample (`draw`): t first (uniform, or logit-normal: t = sigmoid(m + s n),
  SD3 / LightningDiT; m is in THIS time, data at 1, so SD3's m > 0 towards noise is m < 0 here),
  then the noise, from the data stream's per-sample generator. Both are mapped into the
  training interval [t_lo, t_hi] (`interval`), away from the ends where a prediction is singular.
- Loss: MSE to the prediction's target (the score in noise units, sigma * score + noise, as SiT),
  plus, for velocity, `cosine_weight` * mean over positions of 1 - cos(u_hat, u) across channels
  (LightningDiT's cosine velocity loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dit.errors import UserError
from dit.layout import channel_dim, split_output
from dit.processes.base import Process, mean_over_generated
from dit.processes.paths import PATHS, coefficients

PREDICTIONS = ("velocity", "noise", "score")
OUTPUTS = ("velocity", "noise", "score", "data")
ALIASES = {"eps": "noise", "x0": "data"}  # the Gaussian process's names for the same quantities
TIME_SAMPLING = ("uniform", "logit-normal")
SDE_START = 1e-3  # SDE samplers start here at the earliest: SiT's SBDM diffusion is infinite at t = 0


def _broadcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class FlowSection:
    """The flow process's training flags (`--process flow`; SiT, LightningDiT)."""

    flow_path: str = "linear"  # linear (rectified flow), gvp, vp
    prediction: str = "velocity"  # velocity, noise, score
    time_sampling: str = "uniform"  # uniform or logit-normal (t = sigmoid(m + s n), data at t = 1)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    cosine_loss: float = 0.0  # weight of LightningDiT's cosine velocity loss (0: off)
    flow_time_scale: float = 1.0  # the network sees scale * t (SiT: 1)


class FlowMatching(Process):
    key = "flow"
    section = FlowSection
    # Through the score, velocity' = velocity + scale * sigma (d_alpha sigma - d_sigma alpha) / alpha * grad:
    # infinite at t = 0 where the samplers start (alpha_0 = 0) unless the classifier's gradient vanishes
    # there exactly. Refused rather than clipped silently.
    classifier_guidance_refusal = ("classifier guidance of a flow checkpoint is not supported: turning the "
                                   "classifier's score into a velocity divides by alpha_t, which is 0 where flow "
                                   "samplers start; use classifier-free guidance (--cfg-scale) or a Gaussian model")
    outputs = OUTPUTS + tuple(ALIASES)
    inversion_refusal = None  # `marginal`: the path's alpha_t, sigma_t
    time_range = (1.0, 0.0)  # data at t = 1, noise at t = 0 (module docstring)
    # Euler-50: the NFE every flow benchmark here measured (benchmarks/RESULTS.md: the CPU demo, time to
    # quality, video), where DiT's 250 would cost 5x for what those runs did not show to need.
    default_sampling_steps = 50

    def __init__(self, path: str = "linear", prediction: str = "velocity", time_sampling: str = "uniform",
                 logit_mean: float = 0.0, logit_std: float = 1.0, cosine_weight: float = 0.0,
                 train_eps: float | None = None, sample_eps: float | None = None, time_scale: float = 1.0):
        if path not in PATHS:
            raise UserError(f"unknown flow path {path!r}; choose one of {', '.join(PATHS)}")
        if prediction not in PREDICTIONS:
            raise UserError(f"unknown flow prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        if time_sampling not in TIME_SAMPLING:
            raise UserError(f"unknown time sampling {time_sampling!r}; choose one of {', '.join(TIME_SAMPLING)}")
        if not logit_std > 0:
            raise UserError(f"the logit-normal std must be positive, got {logit_std}")
        if not cosine_weight >= 0:
            raise UserError(f"the cosine loss weight must be >= 0, got {cosine_weight}")
        if cosine_weight and prediction != "velocity":
            raise UserError("the cosine loss compares velocity directions: use it with --prediction velocity")
        if not time_scale > 0:
            raise UserError(f"the flow time scale must be positive, got {time_scale}")
        # SiT's defaults: a velocity on linear/GVP is finite everywhere; noise and score predictions
        # divide by alpha or sigma at an end; VP's sigma'(1) is infinite.
        singular = path == "vp" or prediction != "velocity"
        default_train = 1e-5 if path == "vp" else 1e-3 if singular else 0.0
        self.train_eps = default_train if train_eps is None else float(train_eps)
        self.sample_eps = (1e-3 if singular else 0.0) if sample_eps is None else float(sample_eps)
        for name in ("train_eps", "sample_eps"):
            if not 0 <= getattr(self, name) < 0.5:
                raise UserError(f"{name} must be in [0, 0.5), got {getattr(self, name)}")
        self.path, self.prediction, self.time_sampling = path, prediction, time_sampling
        self.logit_mean, self.logit_std = float(logit_mean), float(logit_std)
        self.cosine_weight, self.time_scale = float(cosine_weight), float(time_scale)

    # --- the Process contract (dit/processes/base.py) ---

    @classmethod
    def from_run(cls, run) -> "FlowMatching":
        return cls(run.flow_path, run.prediction, run.time_sampling, run.logit_mean, run.logit_std,
                   run.cosine_loss, time_scale=run.flow_time_scale)

    @classmethod
    def from_meta(cls, meta: dict) -> "FlowMatching":
        """What a checkpoint recorded; SiT's conventions where it says nothing (public SiT weights)."""
        known = set(cls().to_meta())
        unknown = sorted(set(meta) - known)
        if unknown:
            raise UserError(f"unknown {cls.key} settings {unknown} in the checkpoint; this version knows {sorted(known)}")
        return cls(**meta)

    def to_meta(self) -> dict:
        return {"path": self.path, "prediction": self.prediction, "time_sampling": self.time_sampling,
                "logit_mean": self.logit_mean, "logit_std": self.logit_std, "cosine_weight": self.cosine_weight,
                "train_eps": self.train_eps, "sample_eps": self.sample_eps, "time_scale": self.time_scale}

    def draw(self, rng: np.random.Generator, shape: Sequence[int]) -> dict:
        t = self.draw_time(rng)
        noise = torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))
        return {"t": t, "noise": noise}

    def draw_time(self, rng: np.random.Generator) -> float:
        """One training time: uniform or logit-normal (module docstring), in the training interval."""
        if self.time_sampling == "uniform":
            u = rng.random()
        else:
            u = 1 / (1 + np.exp(-(self.logit_mean + self.logit_std * rng.standard_normal())))
        lo, hi = self.interval(self.train_eps)
        return float(lo + (hi - lo) * u)

    def loss(self, network, batch: dict) -> dict:
        data, noise, t = batch["x0"], batch["noise"], batch["t"].to(batch["x0"].dtype)
        alpha, d_alpha, sigma, d_sigma = (_broadcast(c, data) for c in coefficients(self.path, t))
        x_t = alpha * data + sigma * noise
        out = network(x_t, self.network_time(t), batch["cond"])
        pred = self._prediction_of(out, data)
        cond = batch["cond"]
        if self.prediction == "velocity":
            target = d_alpha * data + d_sigma * noise
            mse = mean_over_generated((pred - target) ** 2, cond)
        elif self.prediction == "noise":
            target = noise
            mse = mean_over_generated((pred - target) ** 2, cond)
        else:  # score, in noise units: sigma * score = -noise exactly (SiT's score loss without weighting)
            target = -noise / sigma
            mse = mean_over_generated((sigma * pred + noise) ** 2, cond)
        losses = {"loss": mse, "mse": mse}
        if self.cosine_weight:
            d = channel_dim(data)
            cos = 1 - F.cosine_similarity(pred, target, dim=d, eps=1e-8).unsqueeze(d)  # per position, across channels
            losses["cos"] = mean_over_generated(cos, cond)
            losses["loss"] = mse + self.cosine_weight * losses["cos"]
        return losses

    def prior(self, noise, batch: int, shape: Sequence[int], device) -> torch.Tensor:
        """x at t = 0: pure noise (alpha_0 = 0 on linear and GVP; VP's alpha_0 is e^-5, ignored as in SiT)."""
        return noise(torch.empty(batch, *shape, device=device))

    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        return t.float() * self.time_scale

    def convert(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, to: str) -> torch.Tensor:
        """The network's prediction at (x_t, t) (t in [0, 1], (B,)) as velocity, noise, score or data."""
        to = ALIASES.get(to, to)
        if to not in OUTPUTS:
            raise ValueError(f"the flow process converts to {', '.join(OUTPUTS)}, not {to!r}")
        pred = self._prediction_of(output, x_t)
        if to == self.prediction:
            return pred
        alpha, d_alpha, sigma, d_sigma = (_broadcast(c, x_t) for c in coefficients(self.path, t.to(x_t.dtype)))
        if self.prediction == "velocity":
            det = alpha * d_sigma - sigma * d_alpha  # never 0: linear -1, GVP -pi/2, VP -alpha'/sigma
            noise = (alpha * pred - d_alpha * x_t) / det
            data = (d_sigma * x_t - sigma * pred) / det
        else:
            noise = pred if self.prediction == "noise" else -sigma * pred
            data = (x_t - sigma * noise) / alpha
        if to == "noise":
            return noise
        if to == "data":
            return data
        if to == "score":
            return -noise / sigma
        return d_alpha * data + d_sigma * noise

    # --- noise-aware classifiers (train_classifier.py) ---

    def draw_uniform(self, rng: np.random.Generator, shape: Sequence[int]) -> dict:
        lo, hi = self.interval(self.train_eps)
        t = float(lo + (hi - lo) * rng.random())
        return {"t": t, "noise": torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))}

    def noised(self, x0: torch.Tensor, draws: dict) -> torch.Tensor:
        alpha, _, sigma, _ = (_broadcast(c, x0) for c in coefficients(self.path, draws["t"].to(x0.dtype)))
        return alpha * x0 + sigma * draws["noise"]

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        return 1 - t.float()  # data at t = 1

    # --- time, and the forward process as x_t = alpha x0 + sigma eps (dit/processes/base.py) ---

    def sampling_interval(self, sde: bool = False) -> tuple[float, float]:
        return self.interval(self.sample_eps, sde)

    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha, _, sigma, _ = coefficients(self.path, t)
        return alpha, sigma

    def marginal_rates(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, d_alpha, _, d_sigma = coefficients(self.path, t)
        return d_alpha, d_sigma

    def interval(self, eps: float, sde: bool = False) -> tuple[float, float]:
        """[t_lo, t_hi] kept away from the ends where this prediction or path is singular (SiT's
        check_interval): the data end for VP and for noise/score predictions, also the noise end
        for those on linear/GVP, and for SDE sampling (its score term)."""
        singular = self.prediction != "velocity"
        lo = eps if (self.path != "vp" and (singular or sde)) else 0.0
        hi = 1 - eps if (self.path == "vp" or singular) else 1.0
        if sde:
            lo = max(lo, SDE_START)
        return lo, hi

    def coefficients(self, t: torch.Tensor):
        """(alpha, d alpha, sigma, d sigma) at t (B,): for samplers (the SDE's diffusion term)."""
        return coefficients(self.path, t)

    def _prediction_of(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return split_output(output, x)[0]  # C channels, or 2C in SiT's layout (the sigma half unused)
