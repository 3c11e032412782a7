"""sample.py's --prompt path, one image per prompt: a text-conditioned DiT of ours (train.py --arch text-dit,
through the usual pipeline), or a diffusers VQ-Diffusion text-to-image pipeline (a directory or hub id) read
into our vq-diffusion process and sampler (dit/pipelines/vq_text.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dit.errors import UserError
from dit.io.video import check_grid_path
from dit.pipelines.vq_text import is_vq_pipeline
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


# Flags of a text DiT's --prompt sampling that do not apply (dest, flag): one image per prompt, no classes.
NOT_PROMPTS = (("classes", "--classes"), ("num_samples", "--num-samples"), ("video_in", "--video-in"),
               ("given_frames", "--given-frames"), ("frames", "--frames"), ("inpaint_box", "--inpaint-box"),
               ("classifier", "--classifier"), ("truncation", "--truncation"))


def read_prompts(prompts: list[str] | None, path: str | None) -> list[str] | None:
    """--prompt values, then --prompts FILE's lines (blank lines skipped); None without either."""
    out = list(prompts or [])
    if path:
        file = Path(path).expanduser()
        if not file.is_file():
            raise UserError(f"--prompts {path}: no such file; pass a text file with one prompt per line")
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--prompts {path}: cannot read it as UTF-8 text ({type(e).__name__})") from None
        out += [line.strip() for line in lines if line.strip()]
        if not out:
            raise UserError(f"--prompts {path} holds no prompt; write one per line")
    return out or None


def check_prompt_args(args) -> argparse.Namespace:
    """--prompt with one of our checkpoints: the flags checked before anything is loaded (whether the network
    reads text is checked when the checkpoint is read: dit/pipelines/pipeline.py fit)."""
    used = [flag for dest, flag in NOT_PROMPTS if getattr(args, dest)]
    if used:
        raise UserError(f"{used[0]} does not apply to --prompt (one image per prompt, conditioned on its text)")
    return _outputs(args)


def _outputs(args) -> argparse.Namespace:
    """A grid by default, its path writable as an image; the precision checked."""
    if not args.out and not args.npz:
        args.out = "samples.png"
    if args.out:
        check_grid_path(args.out, clips=False)
    args.precision = check_precision(args.precision)
    return args


def check_text_args(args) -> argparse.Namespace:
    """--prompt with a VQ-Diffusion pipeline: every flag checked (and --steps against the scheduler's T)
    before anything is loaded."""
    if not args.prompt:
        raise UserError(f"{args.ckpt} is a text-to-image VQ-Diffusion pipeline: it takes --prompt \"...\" (one image "
                        "per --prompt), not class labels")
    used = [flag for dest, flag in NOT_TEXT if getattr(args, dest)]
    if used:
        raise UserError(f"{used[0]} does not apply to --prompt (a text pipeline: one image per prompt, guided by "
                        "the text, decoded by its own VQModel)")
    if args.sampler not in (None, "ancestral"):
        raise UserError(f"--sampler {args.sampler}: a VQ-Diffusion pipeline samples with the vq-diffusion 'ancestral' sampler")
    args.sampler = "ancestral"
    if is_vq_pipeline(args.ckpt) and args.steps is not None:  # a hub id's T is known once it is fetched
        from dit.pipelines.vq_text import process_from_scheduler

        sched = Path(args.ckpt).expanduser() / "scheduler" / "scheduler_config.json"
        process_from_scheduler(json.loads(sched.read_text())).time_points(args.steps)
    args.cfg_scale = TEXT_CFG if args.cfg_scale is None else args.cfg_scale
    args.truncation = 1.0 if args.truncation is None else args.truncation
    return _outputs(args)


def sample_prompts(ckpt: str, spec, batch_size: int, device, show: bool = True) -> np.ndarray:
    """uint8 NHWC images from the VQ-Diffusion pipeline `ckpt`: sample i (prompt i) from seed spec.seed + i,
    in batches of `batch_size`."""
    from dit.pipelines.vq_text import generate_from_prompts, load_vq_pipeline

    pipe = load_vq_pipeline(ckpt, device)
    steps = spec.steps or pipe.process.default_sampling_steps
    pipe.process.time_points(steps)  # a hub id's T is known only now
    prompts, images = list(spec.prompts), []
    for a in tqdm(range(0, len(prompts), batch_size), desc="sampling", disable=not show):
        idx = range(a, min(a + batch_size, len(prompts)))
        images.append(generate_from_prompts(pipe, [prompts[i] for i in idx], spec.seeds(idx), steps, spec.cfg_scale,
                                            spec.truncation, spec.precision))
    return np.concatenate(images)


def write_prompt_npz(path: str, images: np.ndarray, prompts) -> None:
    """uint8 NHWC images under arr_0, their prompts under "prompts"."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, arr_0=images, prompts=np.array(list(prompts)))
    print(f"wrote {path}: {len(images)} images, uint8 NHWC under arr_0, their prompts under 'prompts'")
