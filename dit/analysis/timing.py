"""Shared by the speed benchmarks (benchmarks/throughput, benchmarks/vs_diffusers): a fake training batch and a timer that respects the device."""

from __future__ import annotations

import statistics
import time

import torch

from dit.networks.dit_config import IMAGENET_CLASSES, MODEL_NAMES
from dit.processes.gaussian import TIMESTEPS
from dit.errors import UserError


def fake_batch(batch: int, image_size: int, device, seed: int = 0) -> dict:
    """What the training step consumes for 256/512 px ImageNet latents (8x VAE, 4 channels, 1000 classes)."""
    s = image_size // 8
    g = torch.Generator(device).manual_seed(seed)
    return {"x": torch.randn(batch, 4, s, s, device=device, generator=g),
            "t": torch.randint(0, TIMESTEPS, (batch,), device=device, generator=g),
            "y": torch.randint(0, IMAGENET_CLASSES, (batch,), device=device, generator=g),
            "noise": torch.randn(batch, 4, s, s, device=device, generator=g),
            "drop": torch.zeros(batch, dtype=torch.long, device=device)}


def median_seconds(fns, device, warmup: int, iters: int) -> list[float]:
    """Median seconds per call of each fn (see `call_seconds`)."""
    return [statistics.median(t) for t in call_seconds(fns, device, warmup, iters)]


def call_seconds(fns, device, warmup: int, iters: int) -> list[list[float]]:
    """Seconds of each of `iters` calls of each fn; calls interleaved (fn0, fn1, fn0, ...) so that noise
    from the rest of the machine hits all alike (call i of every fn is a pair: see
    dit/eval/intervals.py `ratio_of_medians`). On a GPU the device is synchronised around each call."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(iters):
        for i, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[i].append(time.perf_counter() - t0)
    return times


def add_speed_args(p, models: list[str], warmup: int, iters: int) -> None:
    """The flags every speed benchmark takes."""
    p.add_argument("--models", nargs="+", default=models, choices=MODEL_NAMES, metavar="MODEL")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--iters", type=int, default=iters)
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--out", help="the folder whose results.jsonl the rows are appended to (default: the benchmark's own)")
    p.add_argument("--report", action="store_true", help="only the tables, from --out's results.jsonl")


def speed_device(args) -> tuple[torch.device, str]:
    """Check the shared flags; the device to time on and how to name it."""
    if args.batch < 1 or args.iters < 1 or args.warmup < 0:
        raise UserError("--batch and --iters must be positive, --warmup >= 0")
    if args.image_size % 64:
        raise UserError("--image-size must be a multiple of 64 (the VAE's 8 x the largest patch 8)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but no CUDA device is visible")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return device, where
