"""Class conditioning and classifier-free guidance (Ho & Salimans 2022) as denoiser wrappers.

`conditional(model, y)` and `guided(model, y, ...)` turn a network model(x, t, y) into the
denoiser(x, t) that dit/samplers.py and dit/schedulers.py expect.

Guided eps = eps(x, t, null) + scale * (eps(x, t, y) - eps(x, t, null)), CFG eq. 6 written with
w + 1 = scale, so scale = 1 is the plain conditional model and scale = 0 the unconditional one.
Negative scales are rejected (they push samples away from their class: always a typo here).

`null_class` is the label index the model was trained with for dropped labels; it comes from the
model config (`model.null_class`, = num_classes), never a literal in calling code.

The public DiT release guides only the first 3 of the 4 latent channels (a bug inherited from
GLIDE's 3-channel pixel models): `channels=3` reproduces it (needed to match its FID 2.27 at
scale 1.5); channel 3 then stays conditional. The default guides all C channels. Learned-variance
channels (2C outputs) always come from the conditional half, as in the public forward_with_cfg
whose sample.py keeps the conditional half of the doubled batch.
"""

import math

import torch

from dit.errors import UserError


def conditional(model, y: torch.Tensor):
    """denoiser(x, t) = model(x, t, y): labels y (B,) bound once."""
    def denoiser(x, t):
        return model(x, t, y)
    return denoiser


def guided(model, y: torch.Tensor, scale: float, null_class: int, channels: int | None = None,
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
        return conditional(model, y)
    null = torch.full_like(y, null_class)

    def denoiser(x, t):
        B, C = x.shape[:2]
        k = C if channels is None else channels
        if k > C:
            raise UserError(f"cannot guide {k} channels of a {C}-channel input")
        inside = torch.ones(B, dtype=torch.bool, device=x.device)
        if interval is not None:
            inside = (t >= lo) & (t <= hi)
            if not inside.any():
                return model(x, t, y)
        # (2B, ...): conditional rows first, then unconditional, as the public forward_with_cfg.
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out[:B], out[B:]
        result = cond.clone()  # channels >= k (incl. variance channels) stay conditional
        result[:, :k] = uncond[:, :k] + scale * (cond[:, :k] - uncond[:, :k])
        if interval is not None:
            result = torch.where(inside.view(-1, *[1] * (x.dim() - 1)), result, cond)
        return result

    return denoiser
