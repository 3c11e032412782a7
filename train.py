"""Train a class-conditional DiT, from a CPU demo to multi-node ImageNet.

    python train.py                                    # CPU demo: built-in shapes, ~10 minutes on 2 cores
    accelerate launch train.py imagenet-256 --model DiT-B/4 --data /data/imagenet256-latents
    accelerate launch --multi_gpu --num_processes 8 train.py xl2-256 --data /data/imagenet256-latents \
        --mixed-precision bf16

The first positional argument names a preset (dit/train_config.py); every config field is a flag.
Re-running the same command resumes from the newest complete checkpoint of the run
(results/<run-name>/checkpoints/); `--resume PATH` resumes from a given checkpoint or run.
What one training step does (DiT §4): draw x_0 (a latent), t ~ U{0..T-1} and eps ~ N(0, I), drop
labels with probability 0.1, and minimise the hybrid loss (dit/diffusion.py) with AdamW; then
update the EMA. All per-sample randomness comes from the data stream (dit/loader.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch

from dit import train_state
from dit.config import check_image_size
from dit.diffusion import GaussianDiffusion
from dit.dist import check_world, force_cpu
from dit.errors import ArgumentParser, UserError, run_cli
from dit.generate import generate
from dit.guard import StepGuard
from dit.images import make_grid
from dit.loader import FolderImages, InMemoryImages, StreamBatches, TrainingItems, collate, per_process_batch
from dit.parallel import make_parallel
from dit.tracking import Tracker
from dit.train_config import DEFAULT_PRESET, PRESETS, RESUME_MAY_CHANGE, SHAPES, TrainConfig, field_types, from_preset
from dit.vae import Autoencoder

CHECK_EVERY = 10  # steps between host syncs that look for non-finite runs and SIGTERM
PREVIEW_SEED = 10_000  # previews always use the same noise, so successive grids show progress


# --- command line ---------------------------------------------------------------------------------


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def _typed(kind):
    def parse(s):
        try:
            return kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {s!r}") from None
    return parse


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"presets: {', '.join(PRESETS)} (default {DEFAULT_PRESET}); every field of "
                              "dit/train_config.py:TrainConfig is a flag, e.g. --global-batch-size 512")
    p.add_argument("preset", nargs="?", default=DEFAULT_PRESET, help="named preset")
    p.add_argument("--resume", metavar="PATH", help="checkpoint (.../checkpoints/step_*) or run directory to resume")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is visible")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--stop-at", type=_typed(int), metavar="STEP",
                   help="save and stop at this step (the schedule still runs to --max-steps); re-run to go on")
    defaults = TrainConfig()
    for name, kind in field_types().items():
        parse = _parse_bool if kind is bool else _typed(kind)
        metavar = "true|false" if kind is bool else kind.__name__.upper()
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=parse, default=None, metavar=metavar,
                       help=f"(TrainConfig default: {getattr(defaults, name)!r})")
    args = p.parse_args(argv)
    if args.stop_at is not None and args.stop_at < 1:
        raise UserError(f"--stop-at must be a positive step, got {args.stop_at}")
    overrides = {k: v for k, v in vars(args).items() if k in field_types() and v is not None}
    return from_preset(args.preset, **overrides), args


# --- data -------------------------------------------------------------------------------------------


def build_data(config: TrainConfig, device):
    """The base dataset, the autoencoder, and the shape of one training input (C, H, W)."""
    from dit.latent_cache import LatentCache, is_cache

    if not config.data:
        raise UserError("no --data given: pass an ImageFolder root (<root>/<class>/<image>) or a latent cache "
                        "written by cache_latents.py; `--data shapes` uses the built-in dataset")
    vae = Autoencoder.load(config.vae, device)
    patch = int(config.model.rpartition("/")[2])
    if config.data == SHAPES:
        from dit.shapes import CLASS_NAMES, cached_uint8

        check_image_size(config.image_size, vae.downsample, patch)
        # The same images on every process (rendered from seed 0), kept on disk for the next run.
        images, labels = cached_uint8(config.shapes_images, config.image_size, 0, Path(config.results_dir) / ".cache")
        base = InMemoryImages(images, labels, config.flip, len(CLASS_NAMES), list(CLASS_NAMES))
        encode_on_the_fly = vae.vae is not None
    elif is_cache(config.data):
        base = LatentCache(config.data, flip=config.flip)
        if base.settings["image_size"] != config.image_size:
            raise UserError(f"latent cache {config.data} holds {base.settings['image_size']}px images but "
                            f"--image-size is {config.image_size}; pass --image-size {base.settings['image_size']}")
        if vae.vae is None:
            raise UserError("--vae none, but --data is a latent cache: pass the VAE it was encoded with (--vae ema)")
        encode_on_the_fly = False
    else:
        from dit.data import ImageFolderDataset

        check_image_size(config.image_size, vae.downsample, patch)
        base = FolderImages(ImageFolderDataset(config.data, config.image_size), config.flip)
        encode_on_the_fly = vae.vae is not None
    side = check_image_size(config.image_size, vae.downsample, patch)
    shape = (vae.latent_channels, side, side)
    if hasattr(base, "latent_shape") and tuple(base.latent_shape) != shape:
        raise UserError(f"latent cache {config.data} holds latents {base.latent_shape}, but --vae {config.vae} at "
                        f"{config.image_size}px gives {shape}")
    return base, vae, shape, encode_on_the_fly


# --- resume -------------------------------------------------------------------------------------


def find_resume(config: TrainConfig, run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to continue from: --resume, else the newest one of this run, else None."""
    if resume:
        path = Path(resume)
        if not path.exists():
            raise UserError(f"--resume {resume} does not exist")
        if not (path / train_state.STATE_FILE).is_file():
            found = train_state.list_checkpoints(path)
            if not found:
                raise UserError(f"--resume {resume} is neither a checkpoint nor a run directory with checkpoints")
            path = found[-1][1]
    else:
        found = train_state.list_checkpoints(run_dir)
        if not found:
            return None
        path = found[-1][1]
    saved = train_state.read_state(path).get("config", {})
    changed = sorted(k for k, v in config.to_dict().items()
                     if k not in RESUME_MAY_CHANGE and k != "run_name" and saved.get(k, v) != v)
    if changed:
        diffs = "; ".join(f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in changed)
        raise UserError(f"checkpoint {path} was trained with other settings ({diffs}); pass the same flags to resume "
                        f"it, or choose a new --run-name to start another run")
    return path


# --- the run ------------------------------------------------------------------------------------


def make_accelerator(config: TrainConfig, cpu: bool):
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    # A collective that waits longer than this (a process died or hangs) fails the job instead of hanging it.
    kwargs = [InitProcessGroupKwargs(timeout=timedelta(minutes=config.dist_timeout_min)),
              DistributedDataParallelKwargs(find_unused_parameters=False)]
    try:
        accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=force_cpu(cpu), kwargs_handlers=kwargs)
    except ValueError as e:  # e.g. fp16 without a GPU
        raise UserError(f"cannot set up --mixed-precision {config.mixed_precision}: {e}") from None
    check_world(accelerator.state)
    return accelerator


def preview_labels(num_classes: int, per_class: int) -> list[int]:
    """Rows of the preview grid: every class of a small dataset, eight spread-out classes otherwise."""
    classes = list(range(num_classes)) if num_classes <= 10 else [round(i * (num_classes - 1) / 7) for i in range(8)]
    return [c for c in classes for _ in range(per_class)]


def preview(ema_model, vae, diffusion, config: TrainConfig, num_classes: int):
    labels = preview_labels(num_classes, config.samples_per_class)
    seeds = [PREVIEW_SEED + i for i in range(len(labels))]
    images = generate(ema_model, vae, diffusion, seeds, labels, config.sample_sampler, config.sample_steps,
                      config.sample_cfg)
    return make_grid(images, nrow=config.samples_per_class)


def main(argv=None):
    config, args = parse_args(argv)
    accelerator = make_accelerator(config, args.cpu)
    device, is_main = accelerator.device, accelerator.is_main_process
    per_proc = per_process_batch(config.global_batch_size, accelerator.num_processes, config.grad_accum)
    run_dir = Path(config.results_dir) / config.run_name
    resume_from = find_resume(config, run_dir, args.resume)
    base, vae, shape, encode_on_the_fly = build_data(config, device)
    model_config = config.model_config(in_channels=shape[0], input_size=shape[1], num_classes=base.num_classes)
    diffusion = GaussianDiffusion.from_schedule(config.schedule, config.timesteps)
    # Everything above only reads: bad input has touched nothing on disk.

    torch.manual_seed(config.seed)  # the initial weights; all later randomness comes from the data stream
    model = model_config.build()
    n_params = sum(p.numel() for p in model.parameters())
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)
    # Fused AdamW: one kernel for the whole update, and it can skip a bad step on the device (dit/guard.py).
    fused = device.type in ("cuda", "cpu")

    def adamw(params):
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)

    parallel = make_parallel(config.distributed, accelerator, model, adamw, config.ema_decay)
    model, optimizer, net = parallel.model, parallel.optimizer, parallel.net
    if config.compile:
        net.compile_blocks(backward=True)

    # skipped_steps: non-finite steps; unreadable_images: corrupt files replaced by readable ones (all processes)
    state = {"images_seen": 0, "skipped_steps": 0, "unreadable_images": 0}
    unreadable_here = torch.zeros((), dtype=torch.long)  # this process, since this (re)start
    start_step = 0
    if resume_from is not None:
        saved = train_state.load_checkpoint(parallel, resume_from)
        start_step = saved["step"]
        state.update({k: saved.get(k, 0) for k in state})
        accelerator.print(f"resumed from {resume_from} at step {start_step}")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / "config.json.tmp"
        tmp.write_text(json.dumps(config.to_dict(), indent=1))
        tmp.replace(run_dir / "config.json")
        print(f"run {run_dir}: {accelerator.num_processes} process(es) on {device.type}, per-process batch "
              f"{per_proc} x {config.grad_accum} accumulation; {n_params:,} parameters")
        print(json.dumps(config.to_dict()))
    tracker = Tracker(run_dir, config.to_dict(), is_main, config.wandb, config.wandb_project, config.wandb_mode,
                      config.run_name)
    export_meta = {"image_size": config.image_size, "vae": config.vae, "class_names": base.class_names,
                   "diffusion": {"schedule": config.schedule, "timesteps": config.timesteps}}

    def unreadable_total() -> int:  # a collective: call on every process
        return state["unreadable_images"] + int(accelerator.reduce(unreadable_here.to(device), "sum"))

    def save(step):
        payload = {**state, "unreadable_images": unreadable_total(), "config": config.to_dict(),
                   "model_config": model_config.to_dict()}
        try:
            path = train_state.save_checkpoint(accelerator, run_dir, step, payload, parallel, export_meta,
                                               config.keep_last)
        except OSError as e:
            raise UserError(f"could not write the checkpoint at step {step} ({e}); the previous checkpoints in "
                            f"{train_state.checkpoints_dir(run_dir)} are intact. Free disk space and re-run to resume")
        ema_model = parallel.ema_model()  # a collective under FSDP
        if is_main:
            from dit.checkpoint import save_export

            save_export(run_dir / "export.safetensors", ema_model, **export_meta, step=step)
        return path

    items = TrainingItems(base, config.seed, config.timesteps, config.class_dropout_prob, shape, encode_on_the_fly)
    batches = StreamBatches(len(base), config.global_batch_size, accelerator.num_processes, accelerator.process_index,
                            config.grad_accum, config.seed, start_step)
    loader = torch.utils.data.DataLoader(items, batch_sampler=batches, num_workers=config.num_workers,
                                         collate_fn=collate, pin_memory=device.type == "cuda",
                                         persistent_workers=config.num_workers > 0)
    stream = iter(loader)

    stop = {"signal": None}  # SIGTERM (pre-emption): finish the step, save, exit cleanly
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))

    from tqdm.auto import tqdm

    bar = tqdm(total=config.max_steps, initial=start_step, disable=not is_main or args.no_progress,
               desc="training", dynamic_ncols=True)
    window = new_window(device)
    guard = StepGuard(device, fp16=config.mixed_precision == "fp16")
    skipped_before = state["skipped_steps"]
    model.train()
    step = start_step
    end = min(config.max_steps, args.stop_at) if args.stop_at else config.max_steps
    while step < end:
        lr = learning_rate(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = torch.zeros((), device=device)
        for k in range(config.grad_accum):
            batch = next(stream)
            unreadable_here += batch["unreadable"].sum()
            x0 = batch["x"].to(device, non_blocking=True)
            if encode_on_the_fly:  # z ~ q(z|x) with the stream's noise, scaled (dit/vae.py)
                mean, std = vae.encode_moments(x0)
                x0 = mean + std * batch["post_noise"].to(device, non_blocking=True)
            kwargs = {"y": batch["y"].to(device), "force_drop_ids": batch["drop"].to(device)}
            t, noise = batch["t"].to(device), batch["noise"].to(device, non_blocking=True)
            last = k == config.grad_accum - 1  # all-reduce gradients only after the last micro-batch
            with contextlib.nullcontext() if last else parallel.no_sync():
                with accelerator.autocast():
                    loss = diffusion.training_losses(model, x0, t, kwargs, noise)["loss"].mean() / config.grad_accum
                parallel.backward(loss)
            step_loss += loss.detach()
        grad_norm = parallel.clip_grad_norm(config.grad_clip or math.inf)
        ok = guard.check(step_loss, grad_norm)  # no host sync: bad steps are skipped on the device
        parallel.step(ok)
        parallel.ema_update(min(config.ema_decay, (1 + step) / (10 + step)) if config.ema_warmup else None, ok)
        window["loss"] += torch.where(ok, step_loss, 0.0)
        window["grad_norm"] += torch.where(ok, grad_norm.detach().float(), 0.0)
        window["good"] += ok.float()
        window["steps"] += 1
        step += 1
        state["images_seen"] += config.global_batch_size
        bar.update(1)

        logging = step % config.log_every == 0 or step == end
        stopping = False
        # The only host syncs of the loop; also at checkpoints, so the saved counters are exact.
        if logging or step % CHECK_EVERY == 0 or step % config.ckpt_every == 0:
            skipped, worst_run = guard.read(accelerator)
            state["skipped_steps"] = skipped_before + skipped
            if worst_run >= config.max_nonfinite:
                last = train_state.list_checkpoints(run_dir)
                raise UserError(
                    f"{worst_run} consecutive steps with a non-finite loss or gradient (before step {step}); "
                    f"stopping. The last good checkpoint is {last[-1][1] if last else 'none (no checkpoint yet)'}. "
                    "Lower --lr, set --grad-clip 1.0, or use --mixed-precision bf16 instead of fp16"
                )
            flag = torch.tensor(float(stop["signal"] is not None), device=device)
            stopping = bool(accelerator.reduce(flag, "sum").item())  # every process stops at the same step
        if logging:
            metrics = log_window(accelerator, window, config, lr, {**state, "unreadable_images": unreadable_total()},
                                 device)
            window = new_window(device)
            if metrics:
                tracker.log(metrics, step)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", img_s=f"{metrics['images_per_s']:.0f}")
        if stopping:
            save(step)
            accelerator.print(f"received SIGTERM: saved a checkpoint at step {step} and stopped; re-run to resume")
            tracker.close()
            return
        if step % config.ckpt_every == 0 and step < config.max_steps:
            save(step)
        if config.sample_every and step % config.sample_every == 0 and step < config.max_steps:
            ema_model = parallel.ema_model()
            if is_main:
                tracker.image("samples", preview(ema_model, vae, diffusion, config, base.num_classes), step,
                              run_dir / "samples" / f"step_{step:09d}.png")
            accelerator.wait_for_everyone()
    bar.close()

    done = train_state.list_checkpoints(run_dir)
    if not done or done[-1][0] != step:
        save(step)
    if step < config.max_steps:
        accelerator.print(f"stopped at step {step} as asked (--stop-at); re-run to continue to {config.max_steps}")
        tracker.close()
        return
    ema_model = parallel.ema_model()
    if is_main:
        grid = preview(ema_model, vae, diffusion, config, base.num_classes)
        tracker.image("samples", grid, step, run_dir / "samples.png")
        print(f"finished at step {step} ({state['images_seen']:,} images): checkpoint in "
              f"{train_state.checkpoints_dir(run_dir)}, EMA export {run_dir / 'export.safetensors'}, samples "
              f"{run_dir / 'samples.png'} (rows: classes {preview_labels(base.num_classes, 1)})")
    tracker.close()


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warmup over warmup_steps, then constant (DiT §4) or a cosine decay to 0 at max_steps."""
    lr = config.lr * min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else config.lr
    if config.lr_schedule == "cosine" and step >= config.warmup_steps:
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        lr *= 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return lr


def new_window(device) -> dict:
    """Running sums since the last log, kept on the device (no sync until the log)."""
    zero = torch.zeros((), device=device)
    return {"loss": zero.clone(), "grad_norm": zero.clone(), "good": zero.clone(), "steps": 0, "start": time.time()}


def log_window(accelerator, window, config: TrainConfig, lr: float, state: dict, device) -> dict:
    """Means over the good steps since the last log, averaged over processes."""
    good = torch.clamp(window["good"], min=1.0)
    local = torch.stack([window["loss"] / good, window["grad_norm"] / good])
    per_process = accelerator.gather(local[None])  # (processes, 2)
    elapsed = time.time() - window["start"]
    metrics = {
        "loss": per_process[:, 0].mean().item(),
        "loss_per_process": per_process[:, 0].tolist(),
        "grad_norm": per_process[:, 1].mean().item(),
        "lr": lr,
        "steps_per_s": window["steps"] / elapsed,
        "images_per_s": window["steps"] * config.global_batch_size / elapsed,
        "images_seen": state["images_seen"],
        "skipped_steps": state["skipped_steps"],
        "unreadable_images": state["unreadable_images"],
    }
    if device.type == "cuda":
        metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return metrics if accelerator.is_main_process else {}


if __name__ == "__main__":
    sys.exit(run_cli(main))
