"""The Gaussian diffusion process: the one module that owns the time and noise conventions.

Conventions (everything else in dit/ reads them from here):
- Discrete time t in {0, ..., T-1}, T = 1000 for DiT. t = 0 is nearly clean data, t = T-1 is
  nearly pure noise; sampling runs t downward.
- Forward process (Ho et al. 2020, DDPM eq. 4): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,
  abar_t = prod_{s<=t} (1 - beta_s).
- The network is a pure function network(x, t, cond). It always receives the ORIGINAL timestep
  index (float tensor of shape (B,)), also when sampling with a respaced process: `timestep_map`
  maps a respaced index to the original one (`network_time`).
- Training randomness per sample (`draw`): t ~ U{0, ..., T-1}, then eps ~ N(0, I), in that order,
  from the generator the data stream keys by the sample's stream position.
- Prediction type: epsilon. An output with 2C channels (C = channels of x) carries "learned range"
  variance values v in [-1, 1] in its second half (Improved DDPM, Nichol & Dhariwal 2021, eq. 15):
  log sigma^2 = frac log beta_t + (1 - frac) log beta~_t, frac = (v + 1) / 2, beta~ the clipped
  posterior variance. With C channels the variance is fixed "large": beta~_1 at t = 0, beta_t after
  (as the public DiT with learn_sigma=False).
- Coefficient tables are computed in float64 and cast to float32 when gathered at t, as the public
  DiT code does, so trajectories match it to float32 rounding.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dit.errors import UserError
from dit.layout import channel_dim, split_output
from dit.processes.base import Process, mean_over_generated
from dit.processes.likelihoods import discretized_gaussian_log_likelihood, normal_kl
from dit.processes.schedules import SCHEDULE, TIMESTEPS, beta_schedule, space_timesteps


def _broadcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) so it broadcasts against x."""
    return v.view(-1, *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class GaussianSection:
    """The Gaussian process's training flags (`--process gaussian`, the default)."""

    schedule: str = SCHEDULE  # the beta schedule (dit/processes/schedules.py): DiT's linear, or cosine (IDDPM)
    timesteps: int = TIMESTEPS  # T of training; sampling respaces it

    def __post_init__(self):
        if self.timesteps < 1:
            raise UserError(f"--timesteps must be positive, got {self.timesteps}")


class GaussianDiffusion(Process):
    """A (possibly respaced) DDPM process built from its betas. Tables are float64 (S,) tensors."""

    key = "gaussian"
    section = GaussianSection
    preview_sampler = "ddim"  # previews take few steps: DDIM over the registry default (ddpm)
    learns_variance = True
    OUTPUTS = ("eps", "x0", "score")  # what `convert` gives
    outputs = OUTPUTS
    classifier_guidance_refusal = None  # `guide`: ADM's eps form
    discrete_time = True
    inversion_refusal = None  # `marginal`: DDPM eq. 4

    def __init__(self, betas: torch.Tensor, timestep_map: torch.Tensor | None = None, schedule: str | None = None):
        self.schedule = schedule  # the name it was built from (None: explicit betas), for to_meta
        b = torch.as_tensor(betas, dtype=torch.float64).cpu()
        if b.dim() != 1 or not ((b > 0) & (b <= 1)).all():
            raise ValueError("betas must be a 1-D tensor with values in (0, 1]")
        S = len(b)
        self.num_timesteps = S
        self.timestep_map = (torch.arange(S) if timestep_map is None else torch.as_tensor(timestep_map)).long().cpu()
        self.betas = b
        self.log_betas = b.log()
        self.alphas_cumprod = torch.cumprod(1 - b, 0)
        self.alphas_cumprod_prev = torch.cat([b.new_ones(1), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1 / self.alphas_cumprod - 1).sqrt()
        # Posterior q(x_{t-1} | x_t, x_0), DDPM eq. 6-7.
        self.posterior_variance = b * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        # beta~_0 = 0, so the log is clipped by repeating beta~_1 (Improved DDPM §3.1). A 1-step
        # process has no beta~_1; its only step is noise-free anyway, so use beta.
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = torch.cat([pv[1:2], pv[1:]]).log() if S > 1 else b.log()
        self.posterior_mean_coef1 = b * self.alphas_cumprod_prev.sqrt() / (1 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1 - self.alphas_cumprod_prev) * (1 - b).sqrt() / (1 - self.alphas_cumprod)
        fixed_large = torch.cat([pv[1:2], b[1:]]) if S > 1 else b
        self.fixed_large_log_variance = fixed_large.log()
        self._f32 = {}  # (table name, device) -> float32 copy; cast-then-gather == gather-then-cast

    @classmethod
    def from_schedule(cls, name: str = SCHEDULE, T: int = TIMESTEPS) -> "GaussianDiffusion":
        return cls(beta_schedule(name, T), schedule=name)

    # --- the Process contract (dit/processes/base.py) ---

    @classmethod
    def from_run(cls, run) -> "GaussianDiffusion":
        return cls.from_schedule(run.schedule, run.timesteps)

    @classmethod
    def from_meta(cls, meta: dict) -> "GaussianDiffusion":
        """The process a checkpoint recorded (`to_meta`); the paper's where it does not say (public weights)."""
        if "betas" in meta:
            return cls(torch.tensor(meta["betas"], dtype=torch.float64))
        return cls.from_schedule(meta.get("schedule", SCHEDULE), meta.get("timesteps", TIMESTEPS))

    def to_meta(self) -> dict:
        if self.is_respaced:
            raise ValueError("a respaced process is a sampling device; record the full process")
        if self.schedule is None:
            return {"betas": self.betas.tolist()}
        return {"schedule": self.schedule, "timesteps": self.num_timesteps}

    def draw(self, rng: np.random.Generator, shape: Sequence[int]) -> dict:
        t = int(rng.integers(self.num_timesteps))
        noise = torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))
        return {"t": t, "noise": noise}

    def loss(self, network, batch: dict) -> dict:
        return self.training_losses(network, batch["x0"], batch["t"], batch["cond"], batch["noise"])

    def prior(self, noise, batch: int, shape: Sequence[int], device) -> torch.Tensor:
        """x_T ~ N(0, I): the forward process's end point (abar_{T-1} ~ 0)."""
        return noise(torch.empty(batch, *shape, device=device))

    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        return self.model_timesteps(t)

    @property
    def time_range(self) -> tuple[int, int]:
        return 0, self.num_timesteps - 1  # indices of THIS process: 0 nearly clean, T-1 nearly pure noise

    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(abar_t), sqrt(1 - abar_t)) at indices t of this process (DDPM eq. 4), float64."""
        abar = self.alphas_cumprod[torch.as_tensor(t).long().cpu()]
        return abar.sqrt(), (1 - abar).sqrt()

    def convert(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, to: str) -> torch.Tensor:
        """The eps prediction (first C channels of the output) as eps, x0 (DDPM eq. 4 inverted) or
        the score grad log p_t(x_t) = -eps / sqrt(1 - abar_t); t indexes THIS process."""
        eps = split_output(output, x_t)[0]
        if to == "eps":
            return eps
        if to == "x0":
            return self.predict_xstart(x_t, t, eps)
        if to == "score":
            return -eps / self._at("sqrt_one_minus_alphas_cumprod", t, x_t)
        raise ValueError(f"the Gaussian process converts to {', '.join(self.OUTPUTS)}, not {to!r}")

    # --- noise-aware classifiers and classifier guidance (dit/sampling/classifier_guidance.py) ---

    def draw_uniform(self, rng: np.random.Generator, shape: Sequence[int]) -> dict:
        return self.draw(rng, shape)  # t is uniform already

    def noised(self, x0: torch.Tensor, draws: dict) -> torch.Tensor:
        return self.q_sample(x0, draws["t"], draws["noise"])

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        return t.float() / self.num_timesteps

    def guide(self, output: torch.Tensor, x_t: torch.Tensor, network_t: torch.Tensor, grad: torch.Tensor,
              scale: float) -> torch.Tensor:
        """ADM eq. 14: eps' = eps - scale * sqrt(1 - abar_t) * grad log p(y | x_t, t), so the score
        -eps' / sqrt(1 - abar_t) gains scale * grad. network_t is the ORIGINAL timestep (whatever
        respacing the sampler uses), so this must be the full process; variance channels pass through."""
        if self.is_respaced:
            raise ValueError("guide with the full process: the sampler's timesteps are original ones")
        eps, rest = split_output(output, x_t)
        eps = eps - scale * self._at("sqrt_one_minus_alphas_cumprod", network_t.round().long(), x_t) * grad
        return eps if rest is None else torch.cat([eps, rest], channel_dim(x_t))

    @property
    def is_respaced(self) -> bool:
        return not torch.equal(self.timestep_map, torch.arange(len(self.timestep_map)))

    def respace(self, steps) -> "GaussianDiffusion":
        """Keep `steps` (see space_timesteps) of this process's timesteps. Jumping from kept step
        t_{k-1} to t_k has beta = 1 - abar[t_k]/abar[t_{k-1}], so abar is unchanged where kept."""
        kept = torch.tensor(space_timesteps(self.num_timesteps, steps))
        abar = self.alphas_cumprod[kept]
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        return GaussianDiffusion(1 - abar / abar_prev, timestep_map=self.timestep_map[kept], schedule=self.schedule)

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Indices into this process (B,) -> original timesteps the network expects, float (B,)."""
        return self.timestep_map.to(t.device)[t].float()

    def _at(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Gather table `name` at t (B,) as float32, shaped (B, 1, ..., 1) to broadcast against x."""
        key = (name, t.device)
        if key not in self._f32:
            self._f32[key] = getattr(self, name).float().to(t.device)
        return _broadcast(self._f32[key][t], x)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample q(x_t | x_0), DDPM eq. 4."""
        noise = torch.randn_like(x0) if noise is None else noise
        return self._at("sqrt_alphas_cumprod", t, x0) * x0 + self._at("sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def q_posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x_0), DDPM eq. 7."""
        return self._at("posterior_mean_coef1", t, x_t) * x0 + self._at("posterior_mean_coef2", t, x_t) * x_t

    def predict_xstart(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1-abar) eps) / sqrt(abar), inverting DDPM eq. 4."""
        return self._at("sqrt_recip_alphas_cumprod", t, x_t) * x_t - self._at("sqrt_recipm1_alphas_cumprod", t, x_t) * eps

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (self._at("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x0) / self._at("sqrt_recipm1_alphas_cumprod", t, x_t)

    def p_mean_variance(self, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = False) -> dict:
        """p(x_{t-1} | x_t) from a model output (B, C or 2C, ...) at index t (B,) of THIS process."""
        eps, v = split_output(model_output, x)
        if v is not None:
            frac = (v + 1) / 2  # Improved DDPM eq. 15: interpolate log-variance beta~_t .. beta_t
            log_variance = frac * self._at("log_betas", t, x) + (1 - frac) * self._at("posterior_log_variance_clipped", t, x)
        else:
            log_variance = self._at("fixed_large_log_variance", t, x).expand_as(x)
        pred_xstart = self.predict_xstart(x, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        return {"mean": self.q_posterior_mean(pred_xstart, x, t), "variance": log_variance.exp(),
                "log_variance": log_variance, "pred_xstart": pred_xstart, "eps": eps}

    def p_sample(self, model_output, x, t, noise, clip_denoised=False, mean_shift: torch.Tensor | None = None) -> dict:
        """One ancestral step x_t -> x_{t-1} (DDPM Algorithm 2); no noise is added at t == 0.
        mean_shift: classifier guidance's s * grad log p(y | x_t) (ADM Algorithm 1): the mean moves by
        Sigma * mean_shift, Sigma the step's (learned or fixed) variance."""
        out = self.p_mean_variance(model_output, x, t, clip_denoised)
        mean = out["mean"] if mean_shift is None else out["mean"] + out["variance"] * mean_shift
        nonzero = _broadcast((t != 0).float(), x)
        return {"sample": mean + nonzero * torch.exp(0.5 * out["log_variance"]) * noise,
                "pred_xstart": out["pred_xstart"]}

    def ddim_step(self, model_output, x, t, noise, eta=0.0, clip_denoised=False) -> dict:
        """One DDIM step (Song et al. 2021, eq. 12; eta = 0 deterministic, eta = 1 ancestral-like).
        eps is re-derived from the (possibly clipped) pred_xstart, as the public code does."""
        out = self.p_mean_variance(model_output, x, t, clip_denoised)
        eps = self.predict_eps(x, t, out["pred_xstart"])
        abar, abar_prev = self._at("alphas_cumprod", t, x), self._at("alphas_cumprod_prev", t, x)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)  # eq. 16
        mean = out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma ** 2) * eps
        nonzero = _broadcast((t != 0).float(), x)
        return {"sample": mean + nonzero * sigma * noise, "pred_xstart": out["pred_xstart"]}

    def training_losses(self, model, x0: torch.Tensor, t: torch.Tensor, cond=None,
                        noise: torch.Tensor | None = None) -> dict:
        """Improved DDPM hybrid objective as DiT trains it: loss = mse + vb, each (B,).

        mse is the simple eps loss (DDPM eq. 14). With a learned variance, vb is the variational
        bound term L_{t-1} in bits/dim (Improved DDPM eq. 4-5) computed with eps DETACHED, so vb
        trains only the variance and mse only the mean (Improved DDPM §3.1). Without one, vb = 0.
        """
        noise = torch.randn_like(x0) if noise is None else noise
        x_t = self.q_sample(x0, t, noise)
        out = model(x_t, self.model_timesteps(t), cond)
        eps, v = split_output(out, x0)
        mse = mean_over_generated((noise - eps) ** 2, cond)
        vb = torch.zeros_like(mse)
        if v is not None:
            vb = self._vb_bits_per_dim(torch.cat([eps.detach(), v], channel_dim(x0)), x0, x_t, t, cond)
        return {"loss": mse + vb, "mse": mse, "vb": vb}

    def _vb_bits_per_dim(self, model_output, x0, x_t, t, cond=None) -> torch.Tensor:
        """KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 and the decoder NLL -log p(x_0|x_1)
        at t == 0 (DDPM §3.3), averaged over dims, in bits (B,)."""
        p = self.p_mean_variance(model_output, x_t, t)
        true_mean = self.q_posterior_mean(x0, x_t, t)
        kl = normal_kl(true_mean, self._at("posterior_log_variance_clipped", t, x_t), p["mean"], p["log_variance"])
        nll = -discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])
        return torch.where(t == 0, mean_over_generated(nll, cond), mean_over_generated(kl, cond)) / math.log(2.0)


