"""Interpolant paths of flow matching (SiT, Ma et al. 2024, §2 and Table 1): x_t = alpha_t x_1 + sigma_t x_0.

Convention (SiT's, written once here and in dit/processes/flow.py): x_0 is NOISE ~ N(0, I), x_1 is
DATA; t runs from 0 (pure noise) to 1 (data). Each path gives alpha_t, sigma_t and their time
derivatives; everything else (velocity, conversions between predictions, SDE coefficients) is
derived from these four numbers in flow.py, so a new path is four formulas.

- linear (rectified flow, Liu et al. 2023): alpha = t, sigma = 1 - t.
- gvp (generalised variance preserving): alpha = sin(pi t / 2), sigma = cos(pi t / 2).
- vp (the VP SDE of Song et al. 2021 in SiT time, beta from 0.1 to 20): log alpha = -1/4 (1-t)^2
  (b_max - b_min) - 1/2 (1-t) b_min, sigma = sqrt(1 - alpha^2). sigma -> 0 at t = 1 makes its
  derivative blow up there: the process keeps t <= 1 - eps for it (SiT: train 1e-5, sample 1e-3).

Coefficients are computed in float64 and returned in t's dtype (t (B,) -> each (B,)).
"""

from __future__ import annotations

import math

import torch

PATHS = ("linear", "gvp", "vp")
VP_BETA_MIN, VP_BETA_MAX = 0.1, 20.0  # SiT's VPCPlan defaults


def coefficients(path: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alpha_t, d alpha/dt, sigma_t, d sigma/dt) of `path` at t (B,)."""
    s = t.double()
    if path == "linear":
        one = torch.ones_like(s)
        alpha, d_alpha, sigma, d_sigma = s, one, 1 - s, -one
    elif path == "gvp":
        half_pi = math.pi / 2
        alpha, d_alpha = torch.sin(half_pi * s), half_pi * torch.cos(half_pi * s)
        sigma, d_sigma = torch.cos(half_pi * s), -half_pi * torch.sin(half_pi * s)
    elif path == "vp":
        span = VP_BETA_MAX - VP_BETA_MIN
        log_alpha = -0.25 * (1 - s) ** 2 * span - 0.5 * (1 - s) * VP_BETA_MIN
        d_log_alpha = 0.5 * (1 - s) * span + 0.5 * VP_BETA_MIN
        alpha = log_alpha.exp()
        d_alpha = alpha * d_log_alpha
        sigma = (-torch.expm1(2 * log_alpha)).sqrt()  # sqrt(1 - alpha^2), accurate near t = 1
        d_sigma = -alpha * d_alpha / sigma
    else:
        raise ValueError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")
    return tuple(v.to(t.dtype) for v in (alpha, d_alpha, sigma, d_sigma))
