"""Samplers of the flow process (dit/processes/flow.py): ODEs and an SDE over its velocity field.

Time runs from the noise end to the data end over the process's `sampling_interval` (flow: UP from
t = 0 to t = 1), in the process's own time; the denoiser gets `process.network_time(t)` and its
output is turned into a velocity by `process.convert`, so every prediction type (velocity, noise,
score) samples the same way. What they need of a process is declared (dit/processes/base.py):
continuous time, "velocity" among its `outputs` (the SDE: "score" too, and `marginal_rates`).

- euler / heun: fixed steps on the grid t_lo + (t_hi - t_lo) * shift(k / n), k = 0..n, with the
  timestep shift t' = s t / (1 + (s - 1) t) (LightningDiT: s = 0.3 spends more steps near the
  noise; s = 1 is the identity). Euler costs n evaluations, Heun 2n (its corrector also runs on
  the last step: the velocity is finite at t = 1).
- dopri5: adaptive Dormand-Prince 5(4) through torchdiffeq (SiT's default ODE, atol 1e-6,
  rtol 1e-3); `steps` is ignored. Its step size is controlled over the whole batch, so a sample
  agrees across batchings within the tolerance, not bit for bit.
- sde: Euler-Maruyama on dx = [u + w(t) score] dt + sqrt(2 w(t)) dW, which has the same marginals
  as the ODE for any w >= 0 (Fokker-Planck); w is one of SiT's diffusion forms times `norm`. The
  last step is a plain mean (drift) step of size `last_step` (SiT's "Mean"), so no fresh noise is
  left in the sample. n steps cost n evaluations.
Count evaluations by wrapping the denoiser (sample.py does, to report dopri5's).
"""

from __future__ import annotations

import math

import torch

from dit.errors import UserError
from dit.processes.base import Process

DIFFUSION_FORMS = ("constant", "SBDM", "sigma", "linear", "decreasing", "increasing-decreasing")


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = s t / (1 + (s - 1) t): the identity at s = 1, monotone, 0 and 1 fixed (LightningDiT).
    Written s t / (s t + 1 - t), whose value at t = 1 is exactly s / s = 1 in floating point."""
    return shift * t / (shift * t + (1 - t))


def time_grid(lo: float, hi: float, steps: int, shift: float = 1.0, device=None) -> torch.Tensor:
    """steps + 1 times from lo to hi (float64), the uniform grid bent by `shift`."""
    u = torch.linspace(0, 1, steps + 1, dtype=torch.float64, device=device)
    return lo + (hi - lo) * shift_time(u, shift)


def _velocity(denoiser, process: Process, x: torch.Tensor, t) -> torch.Tensor:
    """u(x, t) for a time t (a float, or a 0-d tensor, read without a host sync) shared by the batch."""
    if isinstance(t, torch.Tensor):
        tb = t.to(device=x.device, dtype=torch.float32).expand(x.shape[0])
    else:
        tb = torch.full((x.shape[0],), float(t), device=x.device, dtype=torch.float32)
    return process.convert(denoiser(x, process.network_time(tb)), x, tb, "velocity")


def _grid(process: Process, steps: int, shift) -> list[float]:
    """The fixed-step samplers' times over the process's sampling interval, as host floats."""
    return time_grid(*process.sampling_interval(), steps, _check_shift(shift)).tolist()


def _check_shift(shift) -> float:
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise UserError(f"the timestep shift must be a positive number (1 = none), got {shift!r}")
    return float(shift)


def _progress(items, progress: bool):
    if progress:
        from tqdm.auto import tqdm
        return tqdm(items)
    return items


@torch.no_grad()
def euler(denoiser, process: Process, x_T, steps, noise=None, progress=False, shift: float = 1.0):
    """Explicit Euler: x_{k+1} = x_k + (t_{k+1} - t_k) u(x_k, t_k)."""
    ts = _grid(process, steps, shift)
    x = x_T
    for k in _progress(range(steps), progress):
        x = x + (ts[k + 1] - ts[k]) * _velocity(denoiser, process, x, ts[k])
    return x


@torch.no_grad()
def heun(denoiser, process: Process, x_T, steps, noise=None, progress=False, shift: float = 1.0):
    """Heun's method (explicit trapezoid): an Euler predictor, then the mean of both slopes."""
    ts = _grid(process, steps, shift)
    x = x_T
    for k in _progress(range(steps), progress):
        h = ts[k + 1] - ts[k]
        u = _velocity(denoiser, process, x, ts[k])
        u_next = _velocity(denoiser, process, x + h * u, ts[k + 1])
        x = x + h * 0.5 * (u + u_next)
    return x


@torch.no_grad()
def dopri5(denoiser, process: Process, x_T, steps=None, noise=None, progress=False,
           atol: float = 1e-6, rtol: float = 1e-3):
    """Adaptive Dormand-Prince through torchdiffeq.odeint, from t_lo to t_hi; `steps` is not used."""
    from torchdiffeq import odeint

    for name, tol in (("atol", atol), ("rtol", rtol)):
        if not (isinstance(tol, (int, float)) and tol > 0):
            raise UserError(f"dopri5 {name} must be positive, got {tol!r}")
    lo, hi = process.sampling_interval()

    def field(t, x):
        return _velocity(denoiser, process, x, t)

    times = torch.tensor([lo, hi], dtype=torch.float64, device=x_T.device)
    return odeint(field, x_T, times, method="dopri5", atol=atol, rtol=rtol)[-1]


def diffusion_coefficient(process: Process, form: str, norm: float, t: torch.Tensor) -> torch.Tensor:
    """w(t) of SiT's diffusion forms (transport/path.py compute_diffusion), t (B,) -> (B,)."""
    (alpha, sigma), (d_alpha, d_sigma) = process.marginal(t), process.marginal_rates(t)
    if form == "constant":
        return torch.full_like(t, norm)
    if form == "SBDM":  # the reverse SDE of score-based diffusion: (alpha'/alpha) sigma^2 - sigma sigma'
        return norm * (d_alpha / alpha * sigma ** 2 - sigma * d_sigma)
    if form == "sigma":
        return norm * sigma
    if form == "linear":
        return norm * (1 - t)
    if form == "decreasing":
        return 0.25 * (norm * torch.cos(math.pi * t) + 1) ** 2
    if form == "increasing-decreasing":
        return norm * torch.sin(math.pi * t) ** 2
    raise UserError(f"unknown diffusion form {form!r}; choose one of {', '.join(DIFFUSION_FORMS)}")


@torch.no_grad()
def sde(denoiser, process: Process, x_T, steps, noise=None, progress=False, shift: float = 1.0,
        diffusion_form: str = "sigma", diffusion_norm: float = 1.0, last_step: float = 0.04):
    """Euler-Maruyama with n - 1 noisy steps on [t_lo, t_hi - last_step], then one mean step to t_hi."""
    if diffusion_form not in DIFFUSION_FORMS:
        raise UserError(f"unknown diffusion form {diffusion_form!r}; choose one of {', '.join(DIFFUSION_FORMS)}")
    if not (isinstance(diffusion_norm, (int, float)) and diffusion_norm >= 0):
        raise UserError(f"the diffusion norm must be >= 0, got {diffusion_norm!r}")
    lo, hi = process.sampling_interval(sde=True)
    if not 0 < last_step < hi - lo:
        raise UserError(f"the SDE's last step must be in (0, {hi - lo:.3f}), got {last_step!r}")
    noise = torch.randn_like if noise is None else noise
    ts = time_grid(lo, hi - last_step, steps - 1, _check_shift(shift)).tolist() + [hi]
    x = x_T
    B = x.shape[0]
    for k in _progress(range(steps), progress):
        t, h = ts[k], ts[k + 1] - ts[k]
        tb = torch.full((B,), t, device=x.device, dtype=torch.float32)
        out = denoiser(x, process.network_time(tb))
        u = process.convert(out, x, tb, "velocity")
        if k == steps - 1:  # SiT's "Mean" last step: the drift only
            x = x + h * u
            break
        w = diffusion_coefficient(process, diffusion_form, diffusion_norm, tb).view(-1, *[1] * (x.dim() - 1))
        score = process.convert(out, x, tb, "score")
        x = x + h * (u + w * score) + torch.sqrt(2 * w * h) * noise(x)
    return x


def check_fixed_steps(name: str, minimum: int = 1, needs: tuple[str, ...] = ("velocity",)):
    def check(process, steps) -> None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < minimum:
            raise UserError(f"{name} steps must be an int >= {minimum}, got {steps!r}")
        if process.discrete_time or not set(needs) <= set(process.outputs):
            raise UserError(f"{name} integrates over continuous time with the network's {' and '.join(needs)}, which "
                            f"the {process.key!r} process does not give")
    return check


euler.check = check_fixed_steps("euler")
heun.check = check_fixed_steps("heun")
sde.check = check_fixed_steps("sde", 2, ("velocity", "score"))
dopri5.check = check_fixed_steps("dopri5")
