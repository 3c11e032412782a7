"""Deterministic inversion of an image to a noise level t_m, and denoising back that reproduces it.

Both processes are written as x = a * data + s * noise at every time (Gaussian: a = sqrt(abar_t),
s = sqrt(1 - abar_t), DDPM eq. 4; flow: alpha_t and sigma_t of its path), so one deterministic step
serves both: DDIM with eta = 0 (Song et al. 2021, eq. 12), i.e. from the noise estimate at level i,

    x0 = (x_i - s_i eps) / a_i,    x_j = a_j x0 + s_j eps.

On the rectified-flow path this is exactly an Euler step of the velocity ODE. Inverting runs it
upward from the clean image (the network read at each level on the way up); denoising runs it
downward. A DDIM round trip does not return exactly to the image, so the downward pass stores the
per-step corrections r_i = x_{i-1}(inversion) - step(x_i): adding them back makes the unmodulated
pass go through the inversion's points and end on the image itself. This is edit-friendly DDPM
inversion (Huberman-Spiegelglas et al. 2023: noise maps chosen so that the sampler's trajectory hits
given points) with a noise-free sampler: the corrections are the DDIM round-trip error, small,
and every modulated pass adds the same ones, so only the modulation makes the passes differ.

Times are the process's own: Gaussian timestep indices 0..T-1 (T-1 = noise), flow t in [0, 1]
(1 = data). Levels run from the clean image (a = 1, s = 0, the network read at the process's data
end) to t_m, `steps` steps evenly spaced in that time. Everything read of the process is declared
by it (dit/processes/base.py): `time_range`, `discrete_time`, `marginal` (a, s) and the noise
estimate `convert(..., "eps")`; a process without a marginal says why in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dit.errors import UserError


@dataclass(frozen=True)
class Level:
    t: float  # process time (a Gaussian timestep index, or flow t)
    a: float  # x = a * data + s * noise here
    s: float


def time_range(process) -> tuple[float, float, str]:
    """(clean end, noise end, description) of the process's time, for checks and messages; a
    process that cannot be inverted is refused here, in one line."""
    if process.inversion_refusal is not None:
        raise UserError(f"segmentation inverts the image deterministically, and the {process.key} process cannot be "
                        f"inverted: {process.inversion_refusal}")
    clean, noise = process.time_range
    if process.discrete_time:
        first, last = (clean + 1, noise) if noise > clean else (noise, clean - 1)
        return clean, noise, f"a timestep in {first}..{last} ({process.key}: {noise} = noise)"
    lo, hi = sorted((clean, noise))
    return clean, noise, f"a time in ({lo:g}, {hi:g}) ({process.key}: {clean:g} = data, {noise:g} = noise)"


def check_time(process, t: float, name: str) -> None:
    clean, noise, what = time_range(process)
    lo, hi = sorted((clean, noise))
    # Discrete time reaches its noise end (the last index); continuous time stays inside (an end may be singular).
    inside = (lo < t <= hi if noise > clean else lo <= t < hi) if process.discrete_time else lo < t < hi
    if not inside:
        raise UserError(f"{name} {t:g} is out of range: give {what}")
    if process.discrete_time and t != int(t):
        raise UserError(f"{name} {t:g}: a {process.key} time is a whole timestep index")


def _time(process, t: float) -> int | float:
    return int(t) if process.discrete_time else float(t)


def level(process, t: float) -> Level:
    """The coefficients (a, s) at process time t: x_t = a x0 + s eps (the process's `marginal`)."""
    t = _time(process, t)
    a, s = process.marginal(torch.tensor([t], dtype=torch.long if process.discrete_time else torch.float64))
    return Level(t, float(a), float(s))


def levels(process, t_m: float, steps: int) -> list[Level]:
    """steps + 1 levels, clean first, t_m last (discrete time: rounded, repeated indices dropped)."""
    clean, _, _ = time_range(process)
    times = [clean + (t_m - clean) * i / steps for i in range(1, steps + 1)]
    if process.discrete_time:
        times = sorted({round(t) for t in times}, key=lambda t: abs(t - clean))
    out = [level(process, t) for t in times]
    # DDIM's last step goes to a = 1, s = 0 (alphas_cumprod_prev at t = 0), not to the level of the
    # clean end's own time: the image itself.
    return [Level(clean, 1.0, 0.0), *out]


def noise_estimate(model, process, x: torch.Tensor, lv: Level, cond) -> torch.Tensor:
    """The network's noise prediction at x on level lv (through the process's own `convert`)."""
    dtype = torch.long if process.discrete_time else torch.float32
    t = torch.full((x.shape[0],), lv.t, dtype=dtype, device=x.device)
    return process.convert(model(x, process.network_time(t), cond), x, t, "eps")


def step(x: torch.Tensor, eps: torch.Tensor, src: Level, dst: Level) -> torch.Tensor:
    """DDIM (eta 0) from level src to level dst with noise estimate eps."""
    x0 = (x - src.s * eps) / src.a
    return dst.a * x0 + dst.s * eps


@torch.no_grad()
def invert(model, process, x0: torch.Tensor, path: list[Level], cond) -> list[torch.Tensor]:
    """DDIM inversion: the points x_0 (= x0), x_1, ..., x_n of the path, clean first."""
    xs = [x0]
    for i in range(len(path) - 1):
        eps = noise_estimate(model, process, xs[-1], path[i], cond)
        xs.append(step(xs[-1], eps, path[i], path[i + 1]))
    return xs
