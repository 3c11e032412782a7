"""Class conditioning and classifier-free guidance (Ho & Salimans 2022) as denoiser wrappers.

`conditional(model, cond)` and `guided(model, cond, uncond, ...)` turn a network model(x, t, cond)
into the denoiser(x, t) that samplers take (dit/sampling/catalog.py). A sampler may pass per-row cond
entries of its own, denoiser(x, t, extra) (the few-step sampler's span: dit/sampling/few_step.py);
they join cond (and, guided, both halves of the doubled batch). `cond` is a cond dict or
a label tensor (dit/networks/conditioning.py); `uncond` is the same with the null class, made by
`conditioning.unconditional(cond, num_classes)`: the null class comes from the model config,
never from a literal in calling code.

Guided eps = eps(x, t, null) + scale * (eps(x, t, y) - eps(x, t, null)), CFG eq. 6 written with
w + 1 = scale, so scale = 1 is the plain conditional model and scale = 0 the unconditional one.
Negative scales are rejected (they push samples away from their class: always a typo here).

The public DiT release guides only the first 3 of the 4 latent channels (a bug inherited from
GLIDE's 3-channel pixel models): `channels=3` reproduces it (needed to match its FID 2.27 at
scale 1.5); channel 3 then stays conditional. The default guides all C channels. Learned-variance
channels (2C outputs) always come from the conditional half, as in the public forward_with_cfg
whose sample.py keeps the conditional half of the doubled batch.
"""

import math

import torch

from dit.errors import UserError
from dit.layout import first_channels, num_channels
from dit.networks.conditioning import as_cond, cat_cond


def conditional(model, cond):
    """denoiser(x, t) = model(x, t, cond): the conditioning bound once."""
    def denoiser(x, t, extra=None):
        return model(x, t, {**as_cond(cond), **extra} if extra else cond)
    return denoiser


def guided(model, cond, uncond, scale: float, channels: int | None = None,
           interval: tuple[float, float] | None = None):
    """Classifier-free guided denoiser; returns B rows for B inputs.

    channels: guide only the first `channels` eps channels (None: all C). interval=(t_lo, t_hi):
    guide only where the ORIGINAL timestep t is in [t_lo, t_hi] (guidance-interval style), the
    conditional output elsewhere; a batch with no row inside skips the doubled forward pass.
    """
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise UserError(f"guidance scale must be a finite number >= 0 (1 = no guidance), got {scale}")
    if channels is not None and (not isinstance(channels, int) or channels < 1):
        raise UserError(f"guidance channels must be a positive int or None (all), got {channels!r}")
    if interval is not None:
        lo, hi = (float(v) for v in interval)
        if not 0 <= lo <= hi:
            raise UserError(f"guidance interval must be (t_lo, t_hi) with 0 <= t_lo <= t_hi, got {interval!r}")
    if scale == 1.0:
        # Exactly the conditional model (uncond + 1 * (cond - uncond) is not bit-exact) at half the cost.
        return conditional(model, cond)
    both = cat_cond(as_cond(cond), as_cond(uncond))  # (2B,) rows: conditional first, as forward_with_cfg

    def denoiser(x, t, extra=None):
        B, C = x.shape[0], num_channels(x)
        k = C if channels is None else channels
        if k > C:
            raise UserError(f"cannot guide {k} channels of a {C}-channel input")
        inside = torch.ones(B, dtype=torch.bool, device=x.device)
        if interval is not None:
            inside = (t >= lo) & (t <= hi)
            if not inside.any():
                return model(x, t, {**as_cond(cond), **extra} if extra else cond)
        rows = {**both, **{key: torch.cat([v, v]) for key, v in extra.items()}} if extra else both
        # (2B, ...): conditional rows first, then unconditional, as the public forward_with_cfg.
        out = model(torch.cat([x, x]), torch.cat([t, t]), rows)
        out_c, out_u = out[:B], out[B:]
        result = out_c.clone()  # channels >= k (incl. variance channels) stay conditional
        first_channels(result, k).copy_(first_channels(out_u, k) + scale * (first_channels(out_c, k) - first_channels(out_u, k)))
        if interval is not None:
            result = torch.where(inside.view(-1, *[1] * (x.dim() - 1)), result, out_c)
        return result

    return denoiser
