"""A Gaussian mixture's exact denoiser: the closed-form oracle for the flow and diffusion samplers.

For data x0 ~ sum_k w_k N(mu_k, s_k^2 I) and x_t = alpha_t x0 + sigma_t eps, each component gives
x_t | k ~ N(alpha mu_k, (alpha^2 s_k^2 + sigma^2) I), so the posterior over components and the
conditional means of x0 and eps are closed forms; E[velocity | x_t] = alpha' E[x0 | x_t] + sigma'
E[eps | x_t] (SiT's eq. 3-4) is then the exact minimiser of the velocity loss, and likewise for the
noise and score predictions. Integrating it with a sampler must give the mixture back: its mean and
variance per dimension (`moments`) are the targets.
"""

from __future__ import annotations

import torch

from dit.processes.paths import coefficients

# The mixture of tests/test_flow.py and benchmarks/flow_closed_forms: K = 2 components in d = 2.
MEANS = torch.tensor([[2.0, -1.0], [5.0, 3.0]], dtype=torch.float64)
STDS = torch.tensor([0.5, 0.8], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)


def moments(means=MEANS, stds=STDS, weights=WEIGHTS) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixture's exact mean and variance per dimension."""
    mean = (weights[:, None] * means).sum(0)
    second = (weights[:, None] * (means ** 2 + stds[:, None] ** 2)).sum(0)
    return mean, second - mean ** 2


def mixture_network(process, means=MEANS, stds=STDS, weights=WEIGHTS):
    """net(x, nt, cond) -> E[prediction | x_t] under `process` (its path, prediction and time scale),
    computed in float64 and returned in x's dtype."""
    def net(x, nt, cond=None):
        x64 = x.double()
        t = nt.double() / process.time_scale
        a, da, s, ds = (c[:, None, None] for c in coefficients(process.path, t))  # (B, 1, 1)
        var = a ** 2 * stds[None, :, None] ** 2 + s ** 2  # (B, K, 1)
        resid = x64[:, None, :] - a * means[None]  # (B, K, d)
        logp = torch.log(weights)[None] - 0.5 * (resid ** 2 / var).sum(-1) - x.shape[1] * 0.5 * torch.log(var[..., 0])
        w = torch.softmax(logp, dim=1)[..., None]  # (B, K, 1)
        data = (w * (means[None] + a * stds[None, :, None] ** 2 / var * resid)).sum(1)
        noise = (w * (s / var * resid)).sum(1)
        pred = {"velocity": da[:, 0] * data + ds[:, 0] * noise, "noise": noise, "score": -noise / s[:, 0]}
        return pred[process.prediction].to(x.dtype)
    return net
