"""Images from a DiT: the one function that sample.py, training previews and evaluation call."""

from __future__ import annotations

import numpy as np
import torch

from dit.guidance import guided
from dit.images import to_uint8
from dit.noise import PerSampleNoise
from dit.schedulers import sample

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@torch.no_grad()
def generate(model, vae, diffusion, seeds, labels, sampler: str = "ddpm", steps: int = 250, cfg_scale: float = 1.0,
             cfg_channels: int | None = None, interval: tuple[float, float] | None = None, eta: float = 0.0,
             precision: str = "fp32", device=None) -> np.ndarray:
    """uint8 NHWC images; image i is drawn from seed `seeds[i]` with class `labels[i]`.

    model: a DiT in eval mode; vae: dit.vae.Autoencoder; diffusion: the full T-step process.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = PRECISIONS[precision]

    def net(x, t, y):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            return model(x, t, y).float()

    noise = PerSampleNoise([int(s) for s in seeds], device)
    s = model.input_size
    x_T = noise(torch.empty(len(noise), model.in_channels, s, s, device=device))
    y = torch.as_tensor(np.asarray(labels), device=device, dtype=torch.long)
    denoiser = guided(net, y, cfg_scale, model.null_class, cfg_channels, interval)
    x0 = sample(denoiser, diffusion, x_T, sampler=sampler, steps=steps, eta=eta, noise=noise)
    return to_uint8(vae.decode(x0))
