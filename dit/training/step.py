"""The inner training step, the same for every architecture and process: a micro-batch of the data
stream to a loss (the process computes it), and the learning-rate schedule.

What one step does (DiT §4): take x_0 (a latent: from the cache, or drawn from the VAE posterior
with the stream's noise; token ids: from the cache, or the nearest codes of a VQ tokenizer), the
label with its per-sample dropout, and the process's per-sample draws; the process forms x_t and
the loss. Nothing here names epsilon, sigma or t.
"""

from __future__ import annotations

import contextlib
import math

import torch

from dit.layout import CLEAN, GIVEN, IMAGES


def micro_batch_loss(process, model, batch: dict, device, autoencoder=None, accum: int = 1,
                     metrics: dict | None = None, given_weight: float = 1.0) -> torch.Tensor:
    """Mean loss of one micro-batch, divided by the accumulation count (gradients add up over micro-batches).

    metrics: if given, what the objective reports besides its loss ("metrics": name -> (values (B,),
    weights (B,)), say a classifier's accuracy per quarter of the time range) is stored in it.
    given_weight: mask modelling's per-task weight, the weight of a sample with something given against
    one with nothing given (1: VDT's plain mean over the batch)."""
    x0 = batch["x"].to(device, non_blocking=True)
    if autoencoder is not None and autoencoder.stochastic:  # z ~ q(z|x) with the stream's noise, scaled
        mean, std = autoencoder.encode_moments(x0)
        x0 = mean + std * batch["post_noise"].to(device, non_blocking=True)
    elif autoencoder is not None:  # deterministic (a tokenizer's nearest codes): nothing drawn
        x0 = autoencoder.encode(x0)
    cond = {"y": batch["y"].to(device), "drop": batch["drop"].to(device)}
    if "given" in batch:  # mask modelling (dit/layout.py): the network reads x0 where GIVEN is 1
        cond[GIVEN], cond[CLEAN] = batch["given"].to(device, non_blocking=True), x0
    if "images" in batch:  # joint image-video training: trailing frames that are single images
        cond[IMAGES] = batch["images"].to(device)
    for key, value in batch.get("cond", {}).items():  # what else the network reads (a caption's token ids)
        cond[key] = value.to(device, non_blocking=True)
    draws = {k: v.to(device, non_blocking=True) for k, v in batch["draws"].items()}
    losses = process.loss(model, {"x0": x0, "cond": cond, **draws})
    if metrics is not None:
        metrics.update(losses.get("metrics", {}))
    loss = losses["loss"]
    if given_weight != 1 and GIVEN in cond:  # a per-sample weight: which task the sample's mask drew
        has_given = cond[GIVEN].flatten(1).amax(1) > 0
        loss = loss * torch.where(has_given, given_weight, 1.0).to(loss.dtype)
    return loss.mean() / accum


def train_step(step: int, config, accelerator, parallel, process, stream, monitor, autoencoder=None) -> float:
    """One optimizer step (of `step`, counted from 0) as train.py runs it; returns its learning rate.

    `stream` yields collated micro-batches (dit/data/stream.py); `parallel` holds the network,
    optimizer and EMA (dit/training/parallel.py); `monitor` the non-finite guard and running sums
    (dit/training/monitor.py). No host sync: a bad step is skipped on the device.
    benchmarks/throughput/throughput.py times exactly this function.
    """
    lr = learning_rate(config, step)
    for group in parallel.optimizer.param_groups:
        group["lr"] = lr
    device = accelerator.device
    step_loss = torch.zeros((), device=device)
    for k in range(config.grad_accum):
        batch = next(stream)
        monitor.unreadable_here += batch["unreadable"].sum()
        last = k == config.grad_accum - 1  # all-reduce gradients only after the last micro-batch
        with contextlib.nullcontext() if last else parallel.no_sync():
            metrics = {}
            with accelerator.autocast():
                loss = micro_batch_loss(process, parallel.model, batch, device, autoencoder, config.grad_accum, metrics,
                                        config.given_loss_weight)
            parallel.backward(loss)
            monitor.add_metrics(metrics)
        step_loss += loss.detach()
    grad_norm = parallel.clip_grad_norm(config.grad_clip or math.inf)
    ok = monitor.check(step_loss, grad_norm)
    parallel.step(ok)
    parallel.ema_update(min(config.ema_decay, (1 + step) / (10 + step)) if config.ema_warmup else None, ok)
    return lr


def learning_rate(config, step: int) -> float:
    """Linear warmup over warmup_steps, then constant (DiT §4), or a cosine or linear (ADM's classifier
    anneal) decay to 0 at max_steps."""
    lr = config.lr * min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else config.lr
    if config.lr_schedule != "constant" and step >= config.warmup_steps:
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
        lr *= 0.5 * (1 + math.cos(math.pi * progress)) if config.lr_schedule == "cosine" else 1 - progress
    return lr
