"""The inner training step, the same for every architecture and process: a micro-batch of the data
stream to a loss (the process computes it), and the learning-rate schedule.

What one step does (DiT §4): take x_0 (a latent: from the cache, or drawn from the VAE posterior
with the stream's noise), the label with its per-sample dropout, and the process's per-sample
draws; the process forms x_t and the loss. Nothing here names epsilon, sigma or t.
"""

from __future__ import annotations

import math

import torch


def micro_batch_loss(process, model, batch: dict, device, autoencoder=None, accum: int = 1) -> torch.Tensor:
    """Mean loss of one micro-batch, divided by the accumulation count (gradients add up over micro-batches)."""
    x0 = batch["x"].to(device, non_blocking=True)
    if autoencoder is not None:  # z ~ q(z|x) with the stream's noise, scaled (dit/autoencoders/vae.py)
        mean, std = autoencoder.encode_moments(x0)
        x0 = mean + std * batch["post_noise"].to(device, non_blocking=True)
    cond = {"y": batch["y"].to(device), "drop": batch["drop"].to(device)}
    draws = {k: v.to(device, non_blocking=True) for k, v in batch["draws"].items()}
    return process.loss(model, {"x0": x0, "cond": cond, **draws})["loss"].mean() / accum


def learning_rate(config, step: int) -> float:
    """Linear warmup over warmup_steps, then constant (DiT §4) or a cosine decay to 0 at max_steps."""
    lr = config.lr * min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else config.lr
    if config.lr_schedule == "cosine" and step >= config.warmup_steps:
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        lr *= 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return lr
