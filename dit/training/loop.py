"""The training run, the same for generators (train.py) and noise-aware classifiers
(train_classifier.py): set up, resume, loop, checkpoint, export.

An objective is what one step minimises: `draw(rng, shape)` per sample and `loss(network, batch)`.
For a generator it is the process itself; a classifier's wraps the process it classifies under
(dit/training/classifier_objective.py). Everything else (Accelerate, the data stream, EMA,
atomic checkpoints, exact resume, the non-finite guard, SIGTERM) is shared. Previews are drawn
only for generators.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dit.data.buckets import BucketedBatches
from dit.data.stream import StreamBatches, TrainingItems, make_loader, per_process_batch
from dit.networks import get_architecture
from dit.networks.base import CompileBlocks, GradCheckpointing, require
from dit.networks.compile import compile_network
from dit.networks.conditioning import is_unconditional
from dit.training import state as train_state
from dit.training.config import TrainConfig
from dit.training.data import build_data
from dit.training.monitor import Monitor
from dit.training.parallel import make_parallel
from dit.training.preview import preview_grid, preview_labels
from dit.training.setup import (NO_INIT, check_results_dir, find_resume, init_weights, make_accelerator,
                                resolve_init, start_run)
from dit.training.captions import CaptionIds
from dit.training.companion import attach_companion, resolve_companion
from dit.training.step import train_step
from dit.training.run_log import Tracker


def run_training(config: TrainConfig, args, objective_for: Callable | None = None, export_meta: dict | None = None):
    """Train `config` to --max-steps (or --stop-at), resuming where its run directory stopped.

    objective_for(process) -> the objective (None: the process); export_meta: more keys for every
    checkpoint and export (a classifier records what it classifies). args: --cpu, --resume,
    --stop-at, --no-progress."""
    accelerator = make_accelerator(config, args.cpu)
    device, is_main = accelerator.device, accelerator.is_main_process
    per_proc = per_process_batch(config.global_batch_size, accelerator.num_processes, config.grad_accum)
    run_dir = Path(config.results_dir) / config.run_name
    check_results_dir(config.results_dir)
    if config.init_from == NO_INIT:  # recorded as no init at all, fresh or resumed
        config = config.replace(init_from="")
    config = resolve_companion(config)  # a model the process reads while it trains (reflow's teacher), as recorded
    resume_from = find_resume(config, run_dir, args.resume, accelerator)
    if resume_from is None:  # a resumed run has its own weights: its image model may be gone
        config = config.replace(init_from=resolve_init(config.init_from, config.results_dir))
    if config.cosine_loss and not config.grad_clip:
        accelerator.print("warning: --cosine-loss without --grad-clip: at the zero-initialised output the cosine's "
                          "gradient is ~1/eps and can stall AdamW for thousands of steps; LightningDiT clips at 1")
    data = build_data(config, device)
    process = config.make_process()
    companion = attach_companion(process, config, device, data.shape)
    if companion:
        accelerator.print(companion)
    objective = process if objective_for is None else objective_for(process)
    generates = objective is process
    # Everything above only reads: bad input has touched nothing on disk.

    torch.manual_seed(config.seed)  # the initial weights; all later randomness comes from the data stream
    network = get_architecture(config.arch).build(data.network_config)
    for asked, capability, flag in ((config.grad_checkpointing, GradCheckpointing, "--grad-checkpointing"),
                                    (config.compile, CompileBlocks, "--compile")):
        if asked:  # declared capabilities (dit/networks/base.py): refused in one line, before anything is written
            require(network, capability, flag)
    if config.init_from and resume_from is None:  # a resumed run has its own weights
        accelerator.print(f"--init-from {config.init_from}: {init_weights(network, config.arch, config.init_from)}")
    if config.grad_checkpointing:
        network.set_grad_checkpointing(True)
    # Fused AdamW: one kernel for the whole update, and it can skip a bad step on the device (dit/training/guard.py).
    fused = device.type in ("cuda", "cpu")
    parallel = make_parallel(config.distributed, accelerator, network, config.ema_decay, lambda params: torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.weight_decay, fused=fused))
    if config.compile:
        compile_network(parallel.net, config.compile_best_effort)
    start_step, counters = train_state.resume(accelerator, parallel, resume_from, objective)
    if is_main:
        start_run(run_dir, config, f"{accelerator.num_processes} process(es) on {device.type}, per-process batch "
                  f"{per_proc} x {config.grad_accum} accumulation; {sum(p.numel() for p in network.parameters()):,} "
                  "parameters")
    tracker = Tracker(run_dir, config.to_dict(), is_main, config.wandb, config.wandb_project, config.wandb_mode,
                      config.run_name)
    monitor = Monitor(accelerator, config, tracker, counters, run_dir)
    clips = get_architecture(config.arch).data_kind == "clip"
    meta = {"arch": config.arch, "process": config.process, "process_config": process.to_meta(),
            "image_size": config.image_size, **({"image_width": config.image_width} if config.image_width else {}),
            "vae": config.vae, "class_names": data.base.class_names,
            **({"unconditional": True} if is_unconditional(data.base.num_classes) else {}),
            **({"video_masks": config.video_masks} if clips else {}),  # what a network of clips learned to complete
            **({"shapes_speed": config.shapes_speed} if config.shapes_speed != 1 else {}),  # evaluate.py's judges follow
            **({"sampling_steps": config.sampling_steps} if config.sampling_steps else {}),  # sampling's default
            **data.autoencoder.norm_meta(), **(export_meta or {})}
    save = train_state.RunSaver(accelerator, run_dir, config, data.network_config, parallel, meta, monitor, objective)
    # Posterior noise only where encoding in training draws z ~ q(z|x) (a VAE; a tokenizer's codes are not drawn).
    captions = CaptionIds(data.base, network.encode_text, data.captions.stored) if data.captions else None
    items = TrainingItems(data.base, config.seed, objective, config.class_dropout_prob, data.shape,
                          data.encode_on_the_fly and data.autoencoder.stochastic, data.mask, data.buckets, captions)
    prompts = data.captions.prompts if data.captions else None  # a captioned run's previews draw these
    stream_of = (StreamBatches, len(data.base)) if data.buckets is None else (BucketedBatches, data.buckets[0])
    batches = stream_of[0](stream_of[1], config.global_batch_size, accelerator.num_processes,
                           accelerator.process_index, config.grad_accum, config.seed, start_step)
    stream = make_loader(items, batches, config.num_workers, pin_memory=device.type == "cuda")
    end = min(config.max_steps, args.stop_at) if args.stop_at else config.max_steps
    bar = tqdm(total=config.max_steps, initial=start_step, disable=not is_main or args.no_progress, desc="training",
               dynamic_ncols=True)
    encoder = data.autoencoder if data.encode_on_the_fly else None
    parallel.model.train()
    step = start_step
    while step < end:
        lr = train_step(step, config, accelerator, parallel, objective, stream, monitor, encoder)
        step += 1
        bar.update(1)
        if monitor.after_step(step, end, lr, bar):
            save(step)
            accelerator.print(f"received SIGTERM: saved a checkpoint at step {step} and stopped; re-run to resume")
            return tracker.close()
        if step % config.ckpt_every == 0 and step < config.max_steps:
            save(step)
        if generates and config.sample_every and step % config.sample_every == 0 and step < config.max_steps:
            ema = parallel.ema_model()  # a collective under FSDP
            if is_main:
                grid = preview_grid(ema, process, data.autoencoder, config, data.base.num_classes, device, prompts)
                tracker.image("samples", grid, step, run_dir / "samples" / f"step_{step:09d}.png")
            accelerator.wait_for_everyone()
    bar.close()

    done = train_state.list_checkpoints(run_dir)
    if not done or done[-1][0] != step:
        save(step)
    if step < config.max_steps:
        accelerator.print(f"stopped at step {step} as asked (--stop-at); re-run to continue to {config.max_steps}")
        return tracker.close()
    if not generates:
        accelerator.print(f"finished at step {step} ({counters['images_seen']:,} images): checkpoint in "
                          f"{train_state.checkpoints_dir(run_dir)}, EMA export {run_dir / 'export.safetensors'}")
        return tracker.close()
    ema = parallel.ema_model()
    if is_main:
        tracker.image("samples", preview_grid(ema, process, data.autoencoder, config, data.base.num_classes, device, prompts), step,
                      run_dir / "samples.png")
        print(f"finished at step {step} ({counters['images_seen']:,} images): checkpoint in "
              f"{train_state.checkpoints_dir(run_dir)}, EMA export {run_dir / 'export.safetensors'}, samples "
              f"{run_dir / 'samples.png'} (" + (f"one per prompt: {prompts}" if prompts else "unconditional"
                                                if is_unconditional(data.base.num_classes) else
                                                f"rows: classes {preview_labels(data.base.num_classes, 1)}") + ")")
    tracker.close()
