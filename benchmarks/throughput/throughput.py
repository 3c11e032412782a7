"""Training and sampling throughput on whatever device is here: images/s, peak memory, MFU.

    python benchmarks/throughput/throughput.py train --models DiT-S/2 DiT-B/2 --batch 8 --precision no
    python benchmarks/throughput/throughput.py train --models DiT-XL/2 --batch 256 --precision bf16 --compile   # a GPU
    python benchmarks/throughput/throughput.py max-batch --models DiT-XL/2 --precision bf16 [--grad-checkpointing]
    python benchmarks/throughput/throughput.py sample --models DiT-XL/2 --batch 64 --sampler ddpm --steps 250 --cfg-scale 4
    python benchmarks/throughput/throughput.py --report

`train` times train.py's own step (dit/training/step.py: train_step, through Accelerate as
train.py runs it) from latents already in memory (cached latents, the loader out of the picture):
autocast forward, the process's loss (DiT's hybrid loss), backward, gradient norm, the
non-finite guard, fused AdamW, the EMA update. `sample` times the guided denoiser with the
chosen sampler (dit/sampling/schedulers.py). MFU = (3 x forward FLOPs per image for training, 1 x (2 x
with CFG) per model call for sampling) x images/s over the device's peak (the table below, dense
bf16/fp16 tensor-core peak; no (float32) uses the TF32 peak; on a CPU, the measured rate of a 2048^3
matmul). `--profile` prints where a training step spends its time. Every measured model appends a row
to <out>/results.jsonl (default benchmarks/throughput) with every timed call, the peak it was
divided by, the commit, the machine and the command; tables.py renders RESULTS.md's table. Run ALONE.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch


from dit.analysis.flops import count_forward_macs
from dit.analysis.timing import add_speed_args, call_seconds, fake_batch, median_seconds, speed_device
from dit.cli import ArgumentParser, run_cli
from dit.errors import UserError
from dit.eval.records import ResultsLog, existing_log
from dit.eval.tables import benchmark_module
from dit.networks.dit import DiT
from dit.networks.dit_config import preset_config
from dit.precision import ALIASES, PRECISIONS, autocast_dtype, check_precision
from dit.processes.gaussian import GaussianDiffusion

OUT = Path(__file__).resolve().parent

# Dense peak TFLOP/s per GPU, from the vendors' data sheets: (bf16/fp16 tensor core, tf32 tensor core).
PEAK_TFLOPS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0), "L40S": (362.0, 183.0),
               "A10": (125.0, 62.5), "RTX 4090": (165.2, 82.6)}


def device_peak(device: torch.device, precision: str) -> float | None:
    """FLOP/s at 100% utilisation: the data sheet's on a known GPU; on a CPU, measured (a large matmul)."""
    if device.type == "cpu":
        return cpu_matmul_peak(autocast_dtype(precision))
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (half, tf32) in PEAK_TFLOPS.items():
        if key in name:
            return (tf32 if precision == "no" else half) * 1e12
    return None


def cpu_matmul_peak(dtype, n: int = 2048) -> float:
    """FLOP/s of a square n x n matmul on this CPU (all threads): the practical ceiling for a
    transformer, whose FLOPs are almost all matmuls."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    (sec,) = median_seconds([lambda: a @ b], torch.device("cpu"), 2, 7)
    return 2 * n**3 / sec


def build(name: str, image_size: int, device, grad_checkpointing=False, compile_=False, train=True):
    cfg = preset_config(name, input_size=image_size // 8)
    model = DiT.from_config(cfg).to(device)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    if compile_:
        model.compile_blocks(backward=train)
    return model


def train_row(name, args, device) -> dict:
    """Images/s of train.py's own step (dit/training/step.py: train_step) on random latents: the
    process's loss, backward, gradient clipping, the sync-free guard, fused AdamW and the EMA update."""
    import itertools

    from dit.training.config import from_preset
    from dit.training.monitor import Monitor
    from dit.training.parallel import make_parallel
    from dit.training.setup import make_accelerator
    from dit.training.step import train_step

    B = args.batch
    config = from_preset("imagenet-256", model=name, image_size=args.image_size, global_batch_size=B,
                         mixed_precision=args.precision, grad_checkpointing=args.grad_checkpointing)
    accelerator = make_accelerator(config, cpu=device.type == "cpu")
    model = build(name, args.image_size, device, args.grad_checkpointing, args.compile).train()
    fused = device.type in ("cuda", "cpu")
    parallel = make_parallel("ddp", accelerator, model, config.ema_decay, lambda params: torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.weight_decay, fused=fused))
    monitor = Monitor(accelerator, config, None, {"images_seen": 0, "skipped_steps": 0, "unreadable_images": 0}, None)
    fake = fake_batch(B, args.image_size, device)
    batch = {"x": fake["x"], "y": fake["y"], "drop": fake["drop"], "unreadable": torch.zeros(B, dtype=torch.long),
             "draws": {"t": fake["t"], "noise": fake["noise"]}}
    stream = itertools.repeat(batch)  # the step's input as the data stream collates it (dit/data/stream.py)
    process = config.make_process()
    counter = itertools.count()

    def step():
        train_step(next(counter), config, accelerator, parallel, process, stream, monitor)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    (seconds,) = call_seconds([step], device, args.warmup, args.iters)
    sec = statistics.median(seconds)
    if args.profile:
        profile(step, device)
    macs = count_forward_macs(model)
    ips = B / sec
    peak = device_peak(device, args.precision)
    return {"mode": "train", "model": name, "image_size": args.image_size, "batch": B, "precision": args.precision,
            "compile": args.compile, "grad_ckpt": args.grad_checkpointing, "seconds": seconds, "sec_per_step": sec,
            "images_per_s": ips, "gflop_per_image": 6 * macs / 1e9, "tflops": 6 * macs * ips / 1e12,
            "peak_tflops": peak / 1e12 if peak else None, "mfu": (6 * macs * ips / peak) if peak else None,
            "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def sample_row(name, args, device) -> dict:
    from dit.sampling.guidance import guided
    from dit.sampling.noise import PerSampleNoise
    from dit.networks.conditioning import unconditional
    from dit.sampling import run_sampler

    model = build(name, args.image_size, device, compile_=args.compile, train=False).eval()
    dtype = autocast_dtype(args.precision)
    B, s = args.batch, args.image_size // 8
    calls = {"n": 0}

    def net(x, t, cond):
        calls["n"] += 1
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            return model(x, t, cond).float()

    cond = {"y": torch.arange(B, device=device) % model.num_classes}
    denoiser = guided(net, cond, unconditional(cond, model.num_classes), args.cfg_scale)
    diffusion = GaussianDiffusion.from_schedule()

    def run():
        noise = PerSampleNoise(range(B), device)
        with torch.no_grad():
            run_sampler(denoiser, diffusion, noise.initial((4, s, s)), args.sampler, args.steps, noise=noise)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    (seconds,) = call_seconds([run], device, min(args.warmup, 1), max(1, args.iters // 5))
    sec = statistics.median(seconds)
    calls_per_run = calls["n"] / (min(args.warmup, 1) + max(1, args.iters // 5))
    macs = count_forward_macs(model) * (2 if args.cfg_scale != 1 else 1)
    ips = B / sec
    peak = device_peak(device, args.precision)
    return {"mode": "sample", "model": name, "image_size": args.image_size, "batch": B, "precision": args.precision,
            "compile": args.compile, "sampler": args.sampler, "steps": args.steps, "cfg_scale": args.cfg_scale,
            "seconds": seconds, "sec_per_batch": sec, "images_per_s": ips, "model_calls": calls_per_run,
            "peak_tflops": peak / 1e12 if peak else None, "mfu": (2 * macs * calls_per_run * ips / peak) if peak else None,
            "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def profile(fn, device, rows: int = 15) -> None:
    """Print where one more call of `fn` spends its time (torch.profiler, top ops by own time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows))


def max_batch(name, args, device) -> dict:
    """Largest power-of-two-then-bisected batch whose training step fits in GPU memory."""
    if device.type != "cuda":
        raise UserError("max-batch searches GPU memory; it needs a CUDA device")
    lo, hi = 0, args.batch

    def fits(b):
        args_b = argparse.Namespace(**{**vars(args), "batch": b, "warmup": 1, "iters": 1})
        try:
            train_row(name, args_b, device)
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            torch.cuda.empty_cache()

    while fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > max(1, lo // 16):  # to within ~6%
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    row = train_row(name, argparse.Namespace(**{**vars(args), "batch": lo}), device) if lo else {}
    return {**row, "mode": "max-batch", "model": name, "max_batch": lo}


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", choices=["train", "sample", "max-batch"])
    add_speed_args(p, ["DiT-S/2"], warmup=3, iters=10)
    p.add_argument("--precision", choices=[*PRECISIONS, *ALIASES], default="no", help="no (float32; TF32 on a GPU), bf16, fp16")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--sampler", default="ddpm")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--cfg-scale", type=float, default=4.0)
    p.add_argument("--profile", action="store_true", help="train: print a torch.profiler table of one step")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else OUT
    tables = benchmark_module("throughput", "tables")
    if args.report:
        existing_log(out)
        print(tables.tables(out)["cpu"])
        return
    if args.mode is None:
        raise UserError("say what to time: train, sample or max-batch (or --report)")
    args.precision = check_precision(args.precision)
    if args.steps < 1:
        raise UserError("--steps must be positive")
    device, where = speed_device(args)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # what "no" (float32) means on a GPU here (the paper's TF32)
        torch.backends.cudnn.allow_tf32 = True
    run = {"train": train_row, "sample": sample_row, "max-batch": max_batch}[args.mode]
    log = ResultsLog(out / "results.jsonl", quiet_keys=("seconds",))
    rows = [log.add(**run(name, args, device)) for name in args.models]
    print(f"# {where}; torch {torch.__version__}")
    print(tables.markdown(rows))


if __name__ == "__main__":
    sys.exit(run_cli(main))
