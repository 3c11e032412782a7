"""diffusers' FlowMatchEulerDiscreteScheduler as a sampler of the flow process ("diffusers-euler").

diffusers writes rectified flow with the NOISE level sigma = 1 - t (x = (1 - sigma) data + sigma
noise, sigma from 1 down to 0) and feeds its transformer 1000 * sigma; its model output is
d x / d sigma = -(our velocity). Its timestep shift acts on sigma, sigma' = k sigma / (1 + (k - 1)
sigma), and equals ours, t' = s t / (1 + (s - 1) t) on t = 1 - sigma, exactly when k = 1 / s. So
with the unshifted grid sigma_k = 1 - k / n and shift 1 / s the scheduler walks the same times
as our `euler` (dit/sampling/flow.py), and the oracle test checks the trajectories agree.
Only the linear path is rectified flow, and the scheduler always ends at sigma = 0 (t = 1).
"""

from __future__ import annotations

import numpy as np
import torch

from dit.errors import UserError
from dit.processes.flow import FlowMatching
from dit.sampling.flow import _check_shift, _progress, _velocity, check_fixed_steps


def make_scheduler(steps: int, shift: float, device=None):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0 / shift)
    scheduler.set_timesteps(sigmas=(1 - np.arange(steps) / steps).tolist(), device=device)
    return scheduler


@torch.no_grad()
def flow_match_euler(denoiser, process: FlowMatching, x_T, steps, noise=None, progress=False, shift: float = 1.0):
    _check(process)
    scheduler = make_scheduler(steps, _check_shift(shift), x_T.device)
    sigmas = scheduler.sigmas.tolist()  # once, not a host sync per step
    x = x_T
    for i, timestep in enumerate(_progress(scheduler.timesteps, progress)):
        x = scheduler.step(-_velocity(denoiser, process, x, 1 - sigmas[i]), timestep, x).prev_sample
    return x


def _check(process) -> None:
    if process.path != "linear" or process.interval(process.sample_eps) != (0.0, 1.0):
        raise UserError("diffusers-euler is rectified flow from t = 0 to 1 (linear path, velocity prediction); "
                        f"this process has path {process.path!r}, prediction {process.prediction!r}: use euler")


def _check_all(process, steps) -> None:
    check_fixed_steps("diffusers-euler")(process, steps)
    _check(process)


flow_match_euler.check = _check_all
