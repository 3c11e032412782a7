"""sample.py's --prompt path: a diffusers VQ-Diffusion text-to-image pipeline (a directory or hub id)
read into our vq-diffusion process and sampler (dit/io/vq_pipeline.py), one image per prompt."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dit.errors import UserError
from dit.io.images import save_png
from dit.io.video import check_grid_path
from dit.io.vq_pipeline import is_hub_id, is_vq_pipeline
from dit.precision import check_precision

TEXT_CFG = 5.0  # a text pipeline's classifier-free guidance (VQDiffusionPipeline's default)

# Flags of class-conditional sampling that a text pipeline has no use for (dest, flag).
NOT_TEXT = (("classes", "--classes"), ("num_samples", "--num-samples"), ("video_in", "--video-in"),
            ("given_frames", "--given-frames"), ("frames", "--frames"), ("inpaint_box", "--inpaint-box"),
            ("classifier", "--classifier"), ("cfg_channels", "--cfg-channels"),
            ("guidance_interval", "--guidance-interval"), ("model", "--model"), ("arch", "--arch"),
            ("process", "--process"), ("vae", "--vae"), ("image_size", "--image-size"), ("num_classes", "--num-classes"),
            ("eta", "--eta"), ("shift", "--shift"), ("atol", "--atol"), ("rtol", "--rtol"),
            ("diffusion_form", "--diffusion-form"), ("diffusion_norm", "--diffusion-norm"),
            ("last_step", "--last-step"), ("compile", "--compile"))


def check_text_args(args) -> argparse.Namespace:
    """--prompt with a VQ-Diffusion pipeline: every flag checked (and --steps against the scheduler's T)
    before anything is loaded."""
    if not args.prompt:
        raise UserError(f"{args.ckpt} is a text-to-image VQ-Diffusion pipeline: it takes --prompt \"...\" (one image "
                        "per --prompt), not class labels")
    if not (is_vq_pipeline(args.ckpt) or is_hub_id(args.ckpt)):
        raise UserError(f"--prompt needs a text-to-image VQ-Diffusion pipeline as --ckpt (a diffusers "
                        f"VQDiffusionPipeline directory or hub id); {args.ckpt} is not one: class-conditional "
                        "checkpoints take --classes")
    used = [flag for dest, flag in NOT_TEXT if getattr(args, dest)]
    if used:
        raise UserError(f"{used[0]} does not apply to --prompt (a text pipeline: one image per prompt, guided by "
                        "the text, decoded by its own VQModel)")
    if args.sampler not in (None, "ancestral"):
        raise UserError(f"--sampler {args.sampler}: a VQ-Diffusion pipeline samples with the vq-diffusion 'ancestral' sampler")
    args.sampler = "ancestral"
    if is_vq_pipeline(args.ckpt) and args.steps is not None:  # a hub id's T is known once it is fetched
        from dit.io.vq_pipeline import process_from_scheduler

        sched = Path(args.ckpt).expanduser() / "scheduler" / "scheduler_config.json"
        process_from_scheduler(json.loads(sched.read_text())).time_points(args.steps)
    args.cfg_scale = TEXT_CFG if args.cfg_scale is None else args.cfg_scale
    args.truncation = 1.0 if args.truncation is None else args.truncation
    if not args.out and not args.npz:
        args.out = "samples.png"
    if args.out:
        check_grid_path(args.out, clips=False)
    args.precision = check_precision(args.precision)
    return args


def sample_prompts(args, state, save_grid) -> None:
    """--prompt: sample i (prompt i) from seed --seed + i, in batches of --batch-size, on the main process;
    a grid (--out: `save_grid(images, args)`, --save-images) and/or --npz (uint8 NHWC under arr_0, the
    prompts under "prompts")."""
    from dit.io.vq_pipeline import generate_from_prompts, load_vq_pipeline

    if not state.is_main_process:
        return
    pipe = load_vq_pipeline(args.ckpt, state.device)
    steps = args.steps or pipe.process.T
    pipe.process.time_points(steps)  # a hub id's T is known only now
    n, bs, images = len(args.prompt), args.batch_size, []
    for a in tqdm(range(0, n, bs), desc="sampling", disable=args.no_progress):
        idx = range(a, min(a + bs, n))
        images.append(generate_from_prompts(pipe, [args.prompt[i] for i in idx], [args.seed + i for i in idx], steps,
                                            args.cfg_scale, args.truncation, args.precision))
    images = np.concatenate(images)
    try:
        if args.out:
            save_grid(images, args)
            print(f"wrote {args.out}")
        if args.save_images:
            for i, img in enumerate(images):
                save_png(img, Path(args.save_images) / f"{i:06d}.png")
        if args.npz:
            Path(args.npz).parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.npz, arr_0=images, prompts=np.array(args.prompt))
            print(f"wrote {args.npz}: {n} images, uint8 NHWC under arr_0, their prompts under 'prompts'")
    except OSError as e:
        raise UserError(f"could not write output: {e}") from None
