"""VQ-Diffusion's mask-and-replace transitions (Gu et al., CVPR 2022, §3.2 and appendix A): the
schedule tables, the closed-form q(x_t | x_s) over any skip s < t, sampling q(x_t | x_0), and the
posterior p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p(x0 | x_t) in log space.

Token ids and time (the one place they are written down; dit/processes/vq_diffusion.py and the
samplers read them from here):
- ids 0..K-1 are the K codebook entries, id K is [MASK] (`mask_id(K)`). x is a LongTensor
  (B, H, W) or (B, L); a distribution over ids is (B, K + 1, ...) or, over regular ids only,
  (B, K, ...): the class axis is always axis 1, as in the network's output.
- t = 1..T, t = 0 is the data (the paper's). The public code and diffusers index steps 0..T-1:
  their index i is our t = i + 1, and their "t = -1" table entry (1, 0, 0) is our t = 0.
- One step (paper eq. 5): a regular token stays with alpha_t + beta_t, becomes each other regular
  token with beta_t and [MASK] with gamma_t, alpha_t + K beta_t + gamma_t = 1; [MASK] stays.
- Cumulative (paper eq. 7): abar_t = prod alpha_i, gbar_t = 1 - prod (1 - gamma_i),
  K bbar_t = 1 - abar_t - gbar_t. Why: given that a token is not masked, each step keeps it
  (probability alpha / (1 - gamma)) or redraws it uniformly, and keeps compose by product. The
  same rule gives the transition over any skip s -> t (fast inference, paper §3.3):
  keep a = abar_t / abar_s, mask c = 1 - (1 - gbar_t) / (1 - gbar_s), replace b = (1 - a - c) / K.

The schedule (paper §4.1 / released code), with the ramp rho_t = (t - 1) / (T - 1):
    A_t = alpha_start + rho_t (alpha_end - alpha_start)      the released abar
    G_t = gamma_start + rho_t (gamma_end - gamma_start)      the released gbar
    abar_t = A_t,  gbar_t = (1 - replace_max) G_t,  K bbar_t = (1 - A_t - G_t) + replace_max G_t.
`replace_max` is the replace mass K bbar_T. With 0 this is the released code's `alpha_schedule`
(and diffusers' VQDiffusionScheduler): abar_t + gbar_t = 0.999999 at every t, so K bbar_t = 1e-6
and "mask-and-replace" is pure masking. The paper's text ("we linearly increase gbar_t and bbar_t
from 0 to 0.9 and 0.1") needs replace_max = 0.1: a per-token bbar_T of 0.1 is impossible with
K = 2886 tokens (K bbar <= 1), so 0.1 is read as the replace mass; then gbar_T = 0.9 * 0.99999,
K bbar_T ~ 0.1, abar_T = 9e-6, each linear in t. Every replace_max in [0, 1) gives valid steps
(beta_t >= 0, checked at construction).

Probabilities below 1e-30 are floored (LOG_ZERO), as the released code does: exact zeros would make
log-space gradients NaN (logaddexp(-inf, -inf) has a NaN gradient) and the floor moves nothing a
float64 comparison at 1e-6 can see.
"""

from __future__ import annotations

import math

import torch

LOG_ZERO = math.log(1e-30)  # log of "probability 0"
# The released schedule's endpoints (image_synthesis/.../diffusion_transformer.py: alpha_schedule;
# diffusers' alpha_cum_start/end, gamma_cum_start/end).
RELEASED = dict(alpha_start=0.99999, alpha_end=0.000009, gamma_start=0.000009, gamma_end=0.99999)


def mask_id(num_tokens: int) -> int:
    """The [MASK] id for a codebook of K = num_tokens entries: K, one past the last regular id."""
    return num_tokens


def log_onehot(x: torch.Tensor, num: int, dtype=torch.float64) -> torch.Tensor:
    """ids (B, ...) -> floored log one-hot (B, num, ...)."""
    onehot = torch.nn.functional.one_hot(x, num).movedim(-1, 1).to(dtype)
    return torch.log(onehot.clamp_min(1e-30))


def _log(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p.clamp_min(1e-30))


class MaskReplace:
    """The mask-and-replace schedule for K regular tokens and T steps; tables are float64 (T + 1,)
    indexed by t = 0..T (abar_0 = 1, gbar_0 = bbar_0 = 0)."""

    def __init__(self, num_tokens: int, timesteps: int = 100, replace_max: float = 0.0,
                 alpha_start: float = RELEASED["alpha_start"], alpha_end: float = RELEASED["alpha_end"],
                 gamma_start: float = RELEASED["gamma_start"], gamma_end: float = RELEASED["gamma_end"]):
        K, T = int(num_tokens), int(timesteps)
        if K < 1 or T < 2:
            raise ValueError(f"need K >= 1 tokens and T >= 2 steps, got K = {K}, T = {T}")
        if not 0.0 <= replace_max < 1.0:
            raise ValueError(f"replace_max must be in [0, 1), got {replace_max}")
        ends = (alpha_start, alpha_end, gamma_start, gamma_end)
        if not all(0.0 < v < 1.0 for v in ends) or alpha_start + gamma_start > 1 or alpha_end + gamma_end > 1:
            raise ValueError(f"schedule endpoints must be in (0, 1) with abar + gbar <= 1, got {ends}")
        self.K, self.T = K, T
        rho = torch.arange(T, dtype=torch.float64) / (T - 1)  # t = 1..T -> 0..1
        A = alpha_start + rho * (alpha_end - alpha_start)
        G = gamma_start + rho * (gamma_end - gamma_start)
        one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        self.abar = torch.cat([one, A])  # (T + 1,)
        self.gbar = torch.cat([zero, (1 - replace_max) * G])
        self.replace = torch.cat([zero, (1 - A - G) + replace_max * G])  # K bbar_t
        a, b, c = self.transition(torch.arange(T), torch.arange(1, T + 1))
        if (b < -1e-15).any() or (a < 0).any() or (c < 0).any() or (self.replace[1:] <= 0).any() or (self.gbar[1:] <= 0).any():
            raise ValueError("this schedule has a step with a negative probability or a zero replace / mask mass")
        self._device_tables = {}  # (device, dtype) -> log tables

    # --- probabilities (float64; the tests build explicit transition matrices from these) ---

    def cumulative(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(abar_t, bbar_t, gbar_t) of q(x_t | x_0), each shaped like t."""
        t = torch.as_tensor(t).long().cpu()
        return self.abar[t], self.replace[t] / self.K, self.gbar[t]

    def transition(self, s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keep a, per-token replace b, mask c) of q(x_t | x_s), s < t; s = t - 1 is one step."""
        s, t = torch.as_tensor(s).long().cpu(), torch.as_tensor(t).long().cpu()
        a = self.abar[t] / self.abar[s]
        c = 1 - (1 - self.gbar[t]) / (1 - self.gbar[s])
        return a, (1 - a - c) / self.K, c

    # --- log space, on the device of the data ---

    def _tables(self, device, dtype) -> dict:
        key = (str(device), dtype)
        if key not in self._device_tables:
            T = torch.arange(self.T + 1)
            la = self.abar.log()
            lb, lc = _log(self.replace / self.K), _log(self.gbar)
            # Skips s -> t for every pair (T + 1, T + 1); only s < t is read.
            s_, t_ = torch.meshgrid(T, T, indexing="ij")
            a, b, c = self.transition(s_.reshape(-1), t_.reshape(-1))
            skip = [_log(v.clamp_min(0)).view(self.T + 1, self.T + 1) for v in (a, b, c)]
            self._device_tables[key] = {"cum": [v.to(device, dtype) for v in (la, lb, lc)],
                                        "skip": [v.to(device, dtype) for v in skip],
                                        "prob": [v.to(device, dtype) for v in (self.gbar, self.replace)]}
        return self._device_tables[key]

    def _at(self, t: torch.Tensor, dims: int, like: torch.Tensor, s: torch.Tensor | None = None):
        """Log tables at per-sample t (and skip from s), shaped (B, 1, ..., 1) with `dims` axes."""
        tab = self._tables(like.device, like.dtype)
        view = (-1,) + (1,) * (dims - 1)
        t = t.to(like.device).long()
        s = None if s is None else s.to(like.device).long()
        if s is None:
            return [v[t].view(view) for v in tab["cum"]]
        return [v[s, t].view(view) for v in tab["skip"]]

    def log_q(self, x0: torch.Tensor, t: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
        """log q(x_t | x_0) over all K + 1 ids, (B, K + 1, ...) for regular ids x0 (B, ...)."""
        like = torch.empty((), dtype=dtype, device=x0.device)
        la, lb, lc = self._at(t, x0.dim() + 1, like)
        reg = torch.logaddexp(log_onehot(x0, self.K, dtype) + la, lb)
        return torch.cat([reg, lc.expand_as(reg[:, :1])], 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) from one uniform u in [0, 1) per token, by inverse CDF over the ordered
        outcomes [MASK] (gbar_t), a uniform redraw (K bbar_t), x_0 kept: u < gbar_t masks, the next
        K bbar_t of the interval picks a regular id uniformly. Masking is monotone in t for a fixed u."""
        view = (-1,) + (1,) * (x0.dim() - 1)
        gbar, replace = self._tables(x0.device, torch.float64)["prob"]
        t = t.to(x0.device).long()
        g, r = gbar[t].view(view), replace[t].view(view)
        u = u.to(x0.device, torch.float64)
        redrawn = ((u - g) / r * self.K).floor().long().clamp(0, self.K - 1)
        return torch.where(u < g, mask_id(self.K), torch.where(u < g + r, redrawn, x0))

    def posterior(self, log_x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """log p(x_s | x_t) = log sum_x0 q(x_s | x_t, x0) p(x0), (B, K + 1, ...), for 0 <= s < t (B,).

        log_x0 (B, K, ...) is log p(x0) over regular ids (a network's prediction, or a floored log
        one-hot of the true x_0 for the true posterior q). By Bayes, q(x_s | x_t, x0) =
        q(x_t | x_s) q(x_s | x0) / q(x_t | x0), so with w(x0) = p(x0) / q(x_t | x0) and W = sum w:
            regular j:  q(x_t | x_s = j) (abar_s w_j + bbar_s W)
            [MASK]:     q(x_t | x_s = [MASK]) gbar_s W
        q(x_t | x_s = [MASK]) is 1 if x_t is [MASK] and 0 otherwise. s = 0 gives p(x0) itself.
        """
        K, dims = self.K, log_x0.dim()
        la_t, lb_t, lc_t = self._at(t, dims, log_x0)
        la_s, lb_s, lc_s = self._at(s, dims, log_x0)
        ka, kb, kc = self._at(t, dims, log_x0, s=s)
        masked = (x_t == mask_id(K)).unsqueeze(1)  # (B, 1, ...)
        onehot = log_onehot(x_t.clamp(max=K - 1), K, log_x0.dtype)  # x_t as a regular id (masked rows unused)
        log_q_t = torch.where(masked, lc_t, torch.logaddexp(onehot + la_t, lb_t))  # log q(x_t | x0 = i)
        log_w = log_x0 - log_q_t
        log_W = torch.logsumexp(log_w, 1, keepdim=True)
        regular = torch.logaddexp(la_s + log_w, lb_s + log_W)  # log sum_x0 w(x0) q(x_s = j | x0)
        step = torch.where(masked, kc, torch.logaddexp(onehot + ka, kb))  # log q(x_t | x_s = j)
        from_mask = torch.where(masked, torch.zeros_like(log_W), torch.full_like(log_W, LOG_ZERO))
        out = torch.cat([regular + step, lc_s + log_W + from_mask], 1)
        return out.clamp_min(LOG_ZERO)
