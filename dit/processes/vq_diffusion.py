"""VQ-Diffusion (Gu et al., CVPR 2022): the "vq-diffusion" process, discrete diffusion over token ids.

The token ids ([MASK] = K), the time convention (t = 1..T, t = 0 the data), the schedule and the
posterior are written down once, in dit/processes/vq_schedule.py. This module owns training and
the network's interface.

- The network is fed x_t (ids, [MASK] included) and t as a float in 1..T (`network_time`), and
  returns log p(x~0 | x_t, y) over the K regular ids, (B, K, H, W): it never predicts [MASK]
  (paper §3.3, the reparameterisation). `read_output` renormalises it with a log-softmax, so raw
  logits and guided combinations are read the same way.
- Reverse step (paper eq. 11): p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p(x~0 = x0 | x_t), s = t - 1
  in training, s = t - dt in fast inference (the closed-form q over the skip, MaskReplace.posterior).
- Training randomness per sample (`draw`), in this order: t ~ U{1..T}; one uniform per token,
  from which x_t ~ q(x_t | x_0) is read by inverse CDF (MaskReplace.q_sample); one more uniform
  "t_u" that importance sampling maps to t. Nothing is random inside `loss`.
- Loss (per sample, the mean over tokens as the released code's loss.sum() / (B * N)):
      L = L_t / p(t) + lambda w(t) L_x0 / p(t)
  L_t = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for t >= 2 and -log p(x0 | x_1) for t = 1
  (the same expression: q(x_0 | x_1, x0) is the one-hot of x0); L_x0 = CE(x0, p(x~0 | x_t)) (paper
  eq. 12's auxiliary denoising objective); lambda = aux_weight (5e-4 in the released ImageNet and
  text-to-image configs); w(t) = 2 - (t - 1) / T with `aux_adaptive` (the released
  adaptive_auxiliary_loss: "1 - t/T + 1" with its 0-based t), else 1. p(t) = 1/T for uniform t,
  so L estimates the sum over t of the bound. The prior term KL(q(x_T | x0) || p(x_T)) has no
  parameters and is left out, as in the released code.
- Time sampling: "uniform" (default) or "importance" (the released code): once every t has been
  seen more than 10 times, p(t) is proportional to sqrt(E[L_t^2]) + 1e-4 (E[L_1^2] replaced by
  E[L_2^2]), E[L_t^2] an exponential moving average (0.1 new, 0.9 old) kept by this process. The
  per-sample uniform "t_u" picks t from that p(t) by inverse CDF, so the draw stays per-sample; but
  the history is state that the checkpoint must save and restore (`state_dict`), it is updated by
  every micro-batch on the device (no host sync) and it is per process under data parallelism:
  an importance-sampled run depends on batch size and process count. The default is uniform, whose
  runs do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dit.errors import UserError
from dit.layout import TOKENS
from dit.processes.base import Process, mean_over_generated
from dit.processes.vq_schedule import LOG_ZERO, RELEASED, MaskReplace, log_onehot, mask_id

TIMESTEPS = 100  # the paper's T
AUX_WEIGHT = 5e-4  # lambda of the released configs (auxiliary_loss_weight)
TIME_SAMPLING = ("uniform", "importance")
OUTPUTS = ("log_x0", "x0")
HISTORY_WARMUP = 10  # the released code samples uniformly until every t has been seen more than this
# The CPU tokenizer: train_vq.py's default run (its preset vq-cpu under --results-dir results), the
# --vae of `train.py --process vq-diffusion` over the CPU demo.
TOKENIZER_CPU = "results/vq-cpu"


@dataclass(frozen=True)
class VQDiffusionSection:
    """The vq-diffusion process's training flags (`--process vq-diffusion`, over a tokenizer --vae)."""

    # K of the token ids, declared alike by the tokenizer and token-dit (0: read from the tokenizer --vae)
    codebook_size: int = 0
    vq_timesteps: int = TIMESTEPS  # T of the vq-diffusion process (the paper's 100)
    replace_max: float = 0.0  # replace mass K bbar_T (0: the released schedule, pure masking; 0.1: the paper's text)
    aux_weight: float = AUX_WEIGHT  # lambda of the auxiliary x0 cross-entropy (the released configs)
    vq_time_sampling: str = "uniform"  # uniform or importance (the released code's; depends on batch and process count)


class VQDiffusion(Process):
    key = "vq-diffusion"
    section = VQDiffusionSection
    cpu_defaults = {"vae": TOKENIZER_CPU}  # when missing, train.py names `python train_vq.py`, which writes it
    classifier_guidance_refusal = "classifier guidance needs a score; the vq-diffusion process has token ids"
    guidance_space = "log-prob"  # CFG on log p(x~0 | x_t), renormalised (dit/sampling/vq_diffusion.py)
    data_kind = TOKENS  # x0 is a grid of token ids: trained through a VQ tokenizer (--vae), by --arch token-dit
    discrete_time = True  # t = 0 (data) .. T (all [MASK])
    outputs = OUTPUTS
    has_state = True  # importance sampling's history (`state_dict`), saved whatever the time sampling
    inversion_refusal = "its x_t are token ids masked or replaced, not alpha x0 + sigma eps"

    def __init__(self, codebook_size: int, timesteps: int = TIMESTEPS, replace_max: float = 0.0,
                 aux_weight: float = AUX_WEIGHT, aux_adaptive: bool = True, time_sampling: str = "uniform",
                 alpha_start: float = RELEASED["alpha_start"], alpha_end: float = RELEASED["alpha_end"],
                 gamma_start: float = RELEASED["gamma_start"], gamma_end: float = RELEASED["gamma_end"]):
        if not isinstance(codebook_size, int) or isinstance(codebook_size, bool) or codebook_size < 2:
            raise UserError(f"the vq-diffusion process needs the tokenizer's codebook size K >= 2, got {codebook_size!r}")
        if time_sampling not in TIME_SAMPLING:
            raise UserError(f"unknown time sampling {time_sampling!r} for vq-diffusion; choose one of {', '.join(TIME_SAMPLING)}")
        if not aux_weight >= 0:
            raise UserError(f"the auxiliary loss weight must be >= 0, got {aux_weight}")
        try:
            self.schedule = MaskReplace(codebook_size, timesteps, replace_max, alpha_start, alpha_end, gamma_start, gamma_end)
        except ValueError as e:
            raise UserError(f"vq-diffusion schedule: {e}") from None
        self.K, self.T = codebook_size, int(timesteps)
        self.replace_max, self.aux_weight, self.aux_adaptive = float(replace_max), float(aux_weight), bool(aux_adaptive)
        self.time_sampling = time_sampling
        self.ends = dict(alpha_start=float(alpha_start), alpha_end=float(alpha_end),
                         gamma_start=float(gamma_start), gamma_end=float(gamma_end))
        # Importance sampling's state (released: Lt_history, Lt_count), index t - 1.
        self.history = torch.zeros(self.T, dtype=torch.float64)
        self.count = torch.zeros(self.T, dtype=torch.float64)

    @property
    def mask_id(self) -> int:
        return mask_id(self.K)

    @property
    def codebook_size(self) -> int:
        return self.K

    @property
    def time_range(self) -> tuple[int, int]:
        return 0, self.T

    # --- the Process contract (dit/processes/base.py) ---

    @classmethod
    def from_run(cls, run) -> "VQDiffusion":
        """Its section's fields (VQDiffusionSection); codebook_size is required (train.py reads it from the tokenizer)."""
        return cls(run.codebook_size, run.vq_timesteps, run.replace_max, run.aux_weight,
                   time_sampling=run.vq_time_sampling)

    @classmethod
    def from_meta(cls, meta: dict) -> "VQDiffusion":
        known = {"codebook_size", "timesteps", "replace_max", "aux_weight", "aux_adaptive", "time_sampling", *RELEASED}
        unknown = sorted(set(meta) - known)
        if unknown:
            raise UserError(f"unknown vq-diffusion settings {unknown} in the checkpoint; this version knows {sorted(known)}")
        return cls(**meta)

    def to_meta(self) -> dict:
        return {"codebook_size": self.K, "timesteps": self.T, "replace_max": self.replace_max,
                "aux_weight": self.aux_weight, "aux_adaptive": self.aux_adaptive,
                "time_sampling": self.time_sampling, **self.ends}

    def draw(self, rng: np.random.Generator, shape: Sequence[int]) -> dict:
        t = int(rng.integers(1, self.T + 1))
        u = torch.from_numpy(rng.random(tuple(shape), dtype=np.float64))  # float64: the replace band is ~1e-6/K wide
        return {"t": t, "u": u, "t_u": float(rng.random())}

    def loss(self, network, batch: dict) -> dict:
        x0, cond = batch["x0"].long(), batch["cond"]
        t, weight = self._time(batch)
        x_t = self.schedule.q_sample(x0, t, batch["u"])
        log_x0 = self.read_output(network(x_t, self.network_time(t), cond))  # (B, K, ...)
        s = t - 1
        log_model = self.schedule.posterior(log_x0, x_t, t, s)  # log p(x_{t-1} | x_t)
        with torch.no_grad():
            log_true = self.schedule.posterior(log_onehot(x0, self.K, log_x0.dtype), x_t, t, s)
        # KL(q || p) per token; at t = 1 q is x0's one-hot, so this is -log p(x0 | x_1) (to the 1e-30 floor).
        kl = (log_true.exp() * (log_true - log_model)).sum(1)
        vlb = mean_over_generated(kl, cond)
        ce = -log_x0.gather(1, x0.unsqueeze(1)).squeeze(1)  # L_x0 per token
        aux = mean_over_generated(ce, cond)
        w = 2 - (t - 1).to(vlb.dtype) / self.T if self.aux_adaptive else torch.ones_like(vlb)
        if self.time_sampling == "importance" and torch.is_grad_enabled():  # an evaluation (no grad) leaves it alone
            self._record(t, vlb.detach())
        loss = weight * (vlb + self.aux_weight * w * aux)
        return {"loss": loss, "vlb": vlb, "aux": aux}

    def prior(self, noise, batch: int, shape: Sequence[int], device) -> torch.Tensor:
        """x_T: every token [MASK]. With the released schedule gbar_T = 0.99999 and abar_T = 9e-6, so
        q(x_T | x0) is all-[MASK] up to 1e-5 per token; with replace_max r a fraction r of tokens would
        be uniform noise at T, which the all-[MASK] start leaves out (as the paper's sampler)."""
        return torch.full((batch, *shape), self.mask_id, dtype=torch.long, device=device)

    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        return t.float()

    def convert(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, to: str) -> torch.Tensor:
        """The network's output as "log_x0", log p(x~0 | x_t) (B, K, ...), or "x0", its most likely ids."""
        log_x0 = self.read_output(output)
        if to == "log_x0":
            return log_x0
        if to == "x0":
            return log_x0.argmax(1)
        raise ValueError(f"the vq-diffusion process converts to {', '.join(OUTPUTS)}, not {to!r}")

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        return t.float() / self.T

    # --- what samplers use ---

    def read_output(self, output: torch.Tensor) -> torch.Tensor:
        """log p(x~0 | x_t) from a network output over the K regular ids (axis 1), renormalised and
        floored in float32 or wider (a bf16 log-softmax over K = 1024+ ids loses the small terms)."""
        if output.shape[1] != self.K:
            raise ValueError(f"a vq-diffusion network outputs K = {self.K} log-probabilities on axis 1, got {tuple(output.shape)}")
        dtype = torch.promote_types(output.dtype, torch.float32)
        return torch.log_softmax(output.to(dtype), 1).clamp_min(LOG_ZERO)

    @property
    def default_sampling_steps(self) -> int:
        """sample.py's --steps when none is given: every step of the chain."""
        return self.T

    def time_points(self, steps: int) -> list[int]:
        """T = t_0 > t_1 > ... > t_steps = 0, evenly spaced (steps = T: every step; fewer: the
        paper's fast inference, skips of dt = T / steps through the closed-form q over the skip)."""
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= self.T:
            raise UserError(f"vq-diffusion takes 1..{self.T} sampling steps (T = {self.T}), got {steps!r}")
        return [int(round(self.T * (steps - i) / steps)) for i in range(steps + 1)]

    # --- importance sampling of t: the history is training state, saved with the checkpoint ---

    def state_dict(self) -> dict:
        return {"history": self.history.cpu().clone(), "count": self.count.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.history = state["history"].to(torch.float64).clone()
        self.count = state["count"].to(torch.float64).clone()

    def time_probabilities(self) -> torch.Tensor:
        """p(t) for t = 1..T (T,) under importance sampling (the released sample_time)."""
        root = (self.history + 1e-10).sqrt() + 1e-4
        root[0] = root[1]  # the decoder term's own history is not used: it takes L_2's
        return root / root.sum()

    def _time(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(t (B,) long, 1 / p(t) (B,)): the drawn t (p = 1/T), or importance sampling's from t_u."""
        t = batch["t"].long()
        uniform = torch.full(t.shape, float(self.T), dtype=torch.float32, device=t.device)
        if self.time_sampling == "uniform":
            return t, uniform
        self.history, self.count = self.history.to(t.device), self.count.to(t.device)
        p = self.time_probabilities()
        u = batch["t_u"].to(t.device, torch.float64)
        t_is = torch.searchsorted(p.cumsum(0), u, right=True).clamp(max=self.T - 1) + 1  # inverse CDF
        warm = (self.count > HISTORY_WARMUP).all()  # a device tensor: no host sync
        chosen = torch.where(warm, t_is, t)
        return chosen, torch.where(warm, 1 / p[chosen - 1], uniform.double()).float()

    @torch.no_grad()
    def _record(self, t: torch.Tensor, L: torch.Tensor) -> None:
        """history[t] <- 0.9 history[t] + 0.1 mean(L_t^2 over the batch's samples at t); deterministic
        (a one-hot product rather than scatter, whose duplicate writes race on a GPU)."""
        self.history, self.count = self.history.to(L.device), self.count.to(L.device)
        onehot = torch.nn.functional.one_hot(t - 1, self.T).to(torch.float64)  # (B, T)
        n = onehot.sum(0)
        mean_sq = (onehot.T @ L.to(torch.float64) ** 2) / n.clamp_min(1)
        self.history = torch.where(n > 0, 0.9 * self.history + 0.1 * mean_sq, self.history)
        self.count = self.count + n
