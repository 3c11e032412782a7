"""The few-step sampler of the span processes (MeanFlow, shortcut models; dit/processes/spans.py).

    x_(k+1) = x_k + h u(x_k, t_k, span(h)),   t_k = k / n,  h = 1 / n,   k = 0 .. n - 1

n network evaluations from noise at t = 0 to data at t = 1, each one jump along the average velocity
(MeanFlow's one-step z_0 = z_1 - u(z_1, 0, 1) is n = 1 in our time). `process.step_span(h)` is the span
the network is asked (a shortcut model's finest step is its flow, span 0) and `process.check_steps`
refuses counts it was not trained for. The denoiser takes the span as an extra cond entry,
denoiser(x, t, {SPAN: ...}) (dit/sampling/guidance.py), so classifier-free guidance wraps it as any other.
At span 0 the same networks are flows: every flow sampler (euler, heun, dopri5) is registered for them too.
"""

from __future__ import annotations

import torch

from dit.errors import UserError
from dit.layout import SPAN
from dit.sampling.flow import _progress


@torch.no_grad()
def few_step(denoiser, process, x_T, steps, noise=None, progress=False):
    """n jumps of span 1/n (module docstring); `noise` is not used (deterministic)."""
    x = x_T
    times = torch.linspace(0, 1, steps + 1, dtype=torch.float64).tolist()
    B = x.shape[0]
    for k in _progress(range(steps), progress):
        h = times[k + 1] - times[k]
        t = torch.full((B,), times[k], device=x.device, dtype=torch.float32)
        span = torch.full((B,), process.step_span(h), device=x.device, dtype=torch.float32)
        out = denoiser(x, process.network_time(t), {SPAN: process.span_input(span)})
        x = x + h * process.convert(out, x, t, "velocity")
    return x


def _check(process, steps) -> None:
    if not process.reads_span:
        raise UserError(f"the few-step sampler jumps with a network of two times (meanflow, shortcut); the "
                        f"{process.key!r} process has one")
    process.check_steps(steps)


few_step.check = _check
