"""Class-conditional sampling from any DiT checkpoint.

Grid of chosen classes:
    python sample.py --model DiT-XL/2 --ckpt DiT-XL-2-256x256 --image-size 256 \
        --classes 207 360 387 974 --cfg-scale 4.0 --sampler ddpm --steps 250 --seed 0 --out samples.png
Evaluation batch in the ADM evaluator's format (split over processes, resumable):
    accelerate launch sample.py --ckpt DiT-XL-2-256x256 --num-samples 50000 --npz samples.npz \
        --cfg-scale 1.5 --cfg-channels 3
Clips from a video checkpoint (--arch video-dit): an animated grid, or completion of given clips:
    python sample.py --ckpt results/video-cpu --classes 0 1 2 3 --cfg-scale 3 --steps 50 --out grid.gif
    python sample.py --ckpt results/video-cpu --video-in clips.npz --given-frames 0-3 --npz completed.npz
    python sample.py --ckpt results/video-cpu --video-in clips.npz --inpaint-box 4,4,8,8 --out inpainted.gif
    python sample.py --ckpt results/video-cpu --classes 0 1 --frames 4 --out short.gif   # up to the model's F
Token ids (VQ-Diffusion: --arch token-dit, --process vq-diffusion) decode through the VQ tokenizer
the model was trained with (its run directory, recorded as the checkpoint's --vae):
    python sample.py --ckpt results/vq-diffusion-cpu --classes 0 1 2 3 --cfg-scale 3 --steps 25 --out grid.png
Text-to-image from a diffusers VQ-Diffusion pipeline (a VQDiffusionPipeline directory, or a hub id such
as microsoft/vq-diffusion-ithq), sampled with our vq-diffusion process (dit/io/vq_pipeline.py):
    python sample.py --ckpt vq-diffusion-ithq --prompt "teddy bear playing in the pool" --prompt "a red car" \
        --cfg-scale 5 --truncation 0.86 --out grid.png
Sample i is always drawn from seed (--seed + i): the same image whatever the batch size or
number of processes. `--arch` / `--process` default to the checkpoint's own (older checkpoints:
dit, gaussian); `--sampler` names a sampler registered for the process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dit.autoencoders.vae import DEFAULT_VAE, Autoencoder, ChannelNorm
from dit.cli import ArgumentParser, add_switch, positive, run_cli
from dit.dist import check_world, force_cpu
from dit.errors import UserError
from dit.autoencoders.vq import ARCH as TOKENIZER_ARCH
from dit.io.checkpoint import checkpoint_sha256, instantiate, load_model, load_weights
from dit.io.images import save_png
from dit.io.prompts import TEXT_CFG, check_text_args, sample_prompts
from dit.io.video import check_grid_path, write_grid
from dit.io.vq_pipeline import is_vq_pipeline
from dit.io.zoo import sha256_of
from dit.io.shards import sample_to_npz
from dit.networks import ARCHITECTURES, get_architecture
from dit.networks.conditioning import IMAGENET_CLASSES
from dit.networks.dit_config import MODEL_NAMES, check_image_size, preset_config
from dit.precision import ALIASES, PRECISIONS, check_precision
from dit.processes import PROCESSES, process_from_meta
from dit.registry import load_plugins
from dit.sampling import check_sampler, default_sampler, sampler_names
from dit.sampling.classifier_guidance import FORMS, check_classifier, check_scale, resolve_form
from dit.sampling.generate import generate_images
from dit.training.setup import compile_network

DEFAULT_IMAGE_SIZE, DEFAULT_NUM_CLASSES = 256, IMAGENET_CLASSES  # ImageNet, the paper's setting
DEFAULT_STEPS = 250  # the paper's DDPM protocol; a process may choose its own (vq-diffusion: every one of its T steps)
DEFAULT_CFG = 4.0  # classifier-free guidance: DiT's grids (a text pipeline's: dit/io/prompts.py)


def parse_args(argv=None) -> argparse.Namespace:
    load_plugins()  # modules in $DIT_PLUGINS register their architectures, processes and samplers first
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint: .pt, .safetensors export, training/diffusers directory, or manifest name")
    p.add_argument("--arch", choices=ARCHITECTURES.keys(), help="architecture key; default: the checkpoint's (older ones: dit)")
    p.add_argument("--process", choices=PROCESSES.keys(), help="process key; default: the checkpoint's (older ones: gaussian)")
    p.add_argument("--model", help=f"architecture ({', '.join(MODEL_NAMES)}); default: the checkpoint's own")
    p.add_argument("--image-size", type=positive(int), help="pixels per side; default: the checkpoint's, else 256")
    p.add_argument("--num-classes", type=positive(int), help="default: the checkpoint's, else 1000")
    p.add_argument("--vae", help="ema, mse, none (pixel space), hub id or directory; default: the checkpoint's, else ema")
    p.add_argument("--classes", type=int, nargs="+", help="class labels for a grid (one image each)")
    p.add_argument("--num-samples", type=positive(int), help="with --npz: how many samples for evaluation")
    p.add_argument("--npz", help="write samples as uint8 NHWC under arr_0 (labels under arr_1), ADM evaluator format")
    p.add_argument("--labels", choices=["uniform", "balanced"], default="uniform", help="labels for --num-samples")
    p.add_argument("--prompt", action="append", help="text-to-image (with a VQ-Diffusion pipeline as --ckpt): one "
                   "image per --prompt, repeat the flag for more")
    p.add_argument("--cfg-scale", type=float, help=f"classifier-free guidance scale; 1 = none; default {DEFAULT_CFG:g} "
                   f"({TEXT_CFG:g} with --prompt, the pipeline's)")
    p.add_argument("--cfg-channels", type=positive(int), help="guide only the first N latent channels (3 = public release)")
    p.add_argument("--guidance-interval", type=float, nargs=2, metavar=("T_LO", "T_HI"),
                   help="guide only where the network's time is in [T_LO, T_HI]: gaussian 0..999 (999 = noise), "
                        "flow t in 0..1 (1 = data; LightningDiT: 0.11 1)")
    p.add_argument("--classifier", metavar="RUN", help="classifier guidance (ADM): a run of train_classifier.py (or its "
                                                       "export) on the model's input space and process")
    p.add_argument("--classifier-scale", type=float, help="classifier guidance scale s (with --classifier; default 1)")
    p.add_argument("--classifier-form", choices=FORMS, default="auto",
                   help="eps: eps - s sqrt(1-abar) grad log p (ADM eq. 14, any sampler); mean: the ancestral mean + s "
                        "Sigma grad log p (ADM Alg. 1, ddpm); auto: mean for ddpm, eps otherwise")
    p.add_argument("--sampler", help="a sampler of the process; default: the process's first (gaussian: "
                   f"{', '.join(sampler_names('gaussian'))}; flow: {', '.join(sampler_names('flow'))})")
    p.add_argument("--steps", type=positive(int), help=f"sampler steps (heun: 2 evaluations each; dopri5: unused); default "
                   f"{DEFAULT_STEPS}, vq-diffusion: its T (fewer: the paper's fast inference)")
    p.add_argument("--eta", type=float, help="DDIM stochasticity (gaussian ddim, diffusers-ddim); default 0")
    # Options of the flow samplers (dit/sampling/flow.py); given to a sampler without them, they are an error.
    p.add_argument("--shift", type=float, help="flow euler/heun/sde/diffusers-euler: timestep shift s, t' = s t / (1 + (s-1) t); default 1")
    p.add_argument("--atol", type=float, help="flow dopri5: absolute tolerance; default 1e-6")
    p.add_argument("--rtol", type=float, help="flow dopri5: relative tolerance; default 1e-3")
    p.add_argument("--diffusion-form", help="flow sde: w(t), one of constant, SBDM, sigma, linear, decreasing, "
                                            "increasing-decreasing; default sigma")
    p.add_argument("--diffusion-norm", type=float, help="flow sde: scale of w(t); default 1")
    p.add_argument("--last-step", type=float, help="flow sde: size of the final noise-free step; default 0.04")
    p.add_argument("--truncation", type=float, metavar="R", help="vq-diffusion ancestral: keep the most likely ids of "
                   "p(x0 | x_t) up to cumulative probability R (the released truncation_rate; ImageNet 0.86); "
                   "default 1 (none)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i")
    p.add_argument("--batch-size", type=positive(int), default=32, help="per process")
    p.add_argument("--out", help="grid: .png (clips: one row of frames per clip), .gif or .mp4 (clips); default "
                                  "samples.png (with --video-in: no grid unless given)")
    p.add_argument("--video-in", metavar="CLIPS.npz", help="complete these clips (uint8 (N, F, H, W, 3) under arr_0, "
                                                           "labels under arr_1) from --given-frames; write --npz")
    p.add_argument("--given-frames", metavar="SPEC", help="with --video-in: the frames given, e.g. 0-3 or 0,7")
    p.add_argument("--inpaint-box", metavar="TOP,LEFT,HEIGHT,WIDTH", help="with --video-in, instead of --given-frames: "
                   "generate this box (pixels) in every frame, the rest given (VDT's spatial in-painting)")
    p.add_argument("--frames", type=positive(int), help="video checkpoints: clips of N frames, 1 to the checkpoint's "
                   "F (its temporal table covers any shorter clip); default its F")
    p.add_argument("--nrow", type=positive(int), help="images per grid row (default: a near-square grid)")
    p.add_argument("--save-images", metavar="DIR", help="also write one PNG per sample")
    p.add_argument("--precision", choices=[*PRECISIONS, *ALIASES], default="no", help="autocast: no (float32), fp16, bf16")
    add_switch(p, "compile", default=False, help="torch.compile the transformer blocks (a failure is an error)")
    add_switch(p, "compile-best-effort", default=False, help="with --compile: run eagerly (and say so) if compiling fails")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    _check_classifier_flags(args)
    if args.truncation is not None and not 0 < args.truncation <= 1:
        raise UserError(f"--truncation must be in (0, 1] (1: none), got {args.truncation}")
    if args.cfg_scale is not None and args.cfg_scale < 0:
        raise UserError(f"--cfg-scale must be >= 0, got {args.cfg_scale}")
    if args.prompt or is_vq_pipeline(args.ckpt):
        return check_text_args(args)
    args.cfg_scale = DEFAULT_CFG if args.cfg_scale is None else args.cfg_scale
    if args.given_frames is not None and args.inpaint_box is not None:
        raise UserError("--given-frames or --inpaint-box, not both: whole frames given, or a box generated in every frame")
    if (args.video_in is not None) != (args.given_frames is not None or args.inpaint_box is not None):
        raise UserError("--video-in and --given-frames (or --inpaint-box) go together: the clips to complete and "
                        "which of their positions are given")
    if args.inpaint_box is not None:
        from dit.data.video_masks import parse_box

        parse_box(args.inpaint_box, 1 << 30)  # its form now; its fit once the clips' size is known
    if args.video_in is not None:
        if args.classes or args.num_samples or args.frames:
            raise UserError("--video-in takes its labels and length from the clips file: drop --classes / "
                            "--num-samples / --frames")
        if not args.npz and not args.out:
            raise UserError("--video-in writes --npz OUT.npz (the completed clips) and/or --out GRID.gif; give one")
        args.precision = check_precision(args.precision)
        return args
    args.out = args.out or "samples.png"
    if (args.num_samples is None) != (args.npz is None):
        raise UserError("--num-samples and --npz go together (evaluation mode); for a grid use --classes")
    if args.npz is None and not args.classes:
        raise UserError("nothing to sample: give --classes for a grid, or --num-samples with --npz")
    if args.npz and args.classes:
        raise UserError("--classes is for grids; --npz draws its labels with --labels uniform|balanced")
    args.precision = check_precision(args.precision)
    return args


def _check_classifier_flags(args) -> None:
    if args.classifier is None:
        if args.classifier_scale is not None or args.classifier_form != "auto":
            raise UserError("--classifier-scale / --classifier-form need --classifier RUN (a train_classifier.py run)")
        return
    args.classifier_scale = check_scale(1.0 if args.classifier_scale is None else args.classifier_scale)


def _state(device: str):
    from accelerate import PartialState

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but no CUDA device is visible; use --device auto or cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps, but MPS is not available; use --device auto or cpu")
    state = PartialState(cpu=force_cpu(device == "cpu"))
    check_world(state)
    return state


def _keys(args, ckpt) -> None:
    """--arch / --process name what a checkpoint that does not say holds; they cannot contradict one that does."""
    for flag, key in (("arch", "arch"), ("process", "process")):
        given, recorded = getattr(args, flag), ckpt.meta.get(key)
        if given and recorded and given != recorded:
            raise UserError(f"--{flag} {given}, but {ckpt.source} holds a {recorded!r} {flag}; drop --{flag}")
        if given:
            ckpt.meta[key] = given


def default_steps(process) -> int:
    return getattr(process, "default_sampling_steps", DEFAULT_STEPS)


def build(args, device):
    """Network, autoencoder and process for the checkpoint and flags."""
    ckpt = load_weights(args.ckpt)
    if ckpt.meta.get("objective") == "noisy-classification":
        raise UserError(f"{args.ckpt} is a noise-aware classifier (train_classifier.py), not a generator: pass it as "
                        "--classifier, and a generator as --ckpt")
    if ckpt.arch == TOKENIZER_ARCH:
        raise UserError(f"{args.ckpt} is a tokenizer (train_vq.py), not a generator: pass it as --vae, and a "
                        "generator trained on its ids (train.py --arch token-dit) as --ckpt")
    _keys(args, ckpt)
    process = process_from_meta(ckpt.meta)
    args.steps = args.steps or default_steps(process)
    args.sampler = args.sampler or default_sampler(process.key)
    check_sampler(process, args.sampler, args.steps, **sampler_options(args))
    tokens = get_architecture(ckpt.arch).data_kind == "tokens" or getattr(process, "data_kind", None) == "tokens"
    if args.model and ckpt.arch != "dit":
        raise UserError(f"--model names a DiT preset; {ckpt.source} holds a {ckpt.arch!r} network")
    model = None if args.model else instantiate(ckpt, None, device)  # the file is checked before the VAE is sought
    # The latent space the network was trained in: the VAE, and the per-channel normalisation if it recorded one.
    vae = Autoencoder.load(args.vae or ckpt.meta.get("vae") or DEFAULT_VAE, device)
    vae.with_norm(ChannelNorm.from_meta(ckpt.meta))
    if tokens or vae.kind == "tokens":
        check_token_space(model, vae, process, ckpt, args)
        args.classifier_net, args.tokenizer_file = None, vae.source  # the tokenizer's bytes decide the images too
        return model, vae, process
    if args.model:
        image_size = args.image_size or ckpt.meta.get("image_size") or DEFAULT_IMAGE_SIZE
        if args.model in MODEL_NAMES:
            check_image_size(image_size, vae.downsample, int(args.model.rpartition("/")[2]))
        config = preset_config(args.model, input_size=vae.latent_size(image_size), in_channels=vae.latent_channels,
                               num_classes=args.num_classes or DEFAULT_NUM_CLASSES)
        model = instantiate(ckpt, config, device)
    channels, side = model.input_shape[-3], model.input_shape[-1]  # (C, H, W) or (F, C, H, W)
    if vae.latent_channels != channels:
        raise UserError(f"the VAE gives {vae.latent_channels}-channel inputs but the model takes {channels}; check --vae")
    if args.num_classes and args.num_classes != model.num_classes:
        raise UserError(f"--num-classes {args.num_classes} but the checkpoint has {model.num_classes} classes")
    if args.image_size and vae.latent_size(args.image_size) != side:
        raise UserError(f"--image-size {args.image_size} gives a {vae.latent_size(args.image_size)}-wide input, "
                        f"but the checkpoint was trained on {side}; pass --model to resize")
    args.classifier_net = None
    if args.video_in and ckpt.meta.get("video_masks") == "none":
        print(f"warning: {ckpt.source} was trained with --video-masks none (nothing ever given): it has not "
              "learned to complete clips from given frames", file=sys.stderr)
    if args.classifier:  # checked against the model before any sampling
        classifier, cls_ckpt = load_model(args.classifier, device=device)
        check_classifier(classifier, cls_ckpt.meta, model, ckpt.meta, process, args.classifier)
        args.classifier_form = resolve_form(args.classifier_form, args.sampler)  # recorded as the form used
        args.classifier_net = classifier.eval().requires_grad_(False)
    return model, vae, process


def check_token_space(model, vae, process, ckpt, args) -> None:
    """A network of token ids (VQ-Diffusion) with the tokenizer that decodes them: one K for tokenizer,
    network and process, the tokenizer's grid at the image size equal to the network's, and no flag
    made for continuous inputs."""
    name = args.vae or ckpt.meta.get("vae")
    if vae.kind != "tokens":
        raise UserError(f"{ckpt.source} models token ids ({ckpt.arch}, {process.key}), but --vae {name} is not a VQ "
                        "tokenizer: pass the tokenizer run it was trained with as --vae")
    if get_architecture(ckpt.arch).data_kind != "tokens" or getattr(process, "data_kind", None) != "tokens":
        raise UserError(f"--vae {name} is a VQ tokenizer (token ids), but {ckpt.source} holds a {ckpt.arch!r} network "
                        f"with the {process.key} process; pass its own VAE (or drop --vae)")
    sizes = {"the tokenizer": vae.codebook_size, "the network": model.config.codebook_size,
             "the process": getattr(process, "K", None)}
    if len(set(sizes.values())) > 1:
        raise UserError(f"codebook sizes disagree ({', '.join(f'{k} K = {v}' for k, v in sizes.items())}): --vae {name} "
                        "is not the tokenizer this checkpoint was trained with")
    image_size = args.image_size or ckpt.meta.get("image_size") or vae.image_size
    grid = tuple(vae.latent_shape(image_size))
    if grid != tuple(model.input_shape):
        raise UserError(f"the tokenizer {name} gives {'x'.join(map(str, grid))} ids at {image_size} px, but the "
                        f"network takes {'x'.join(map(str, model.input_shape))}; check --vae and --image-size")
    if args.num_classes and args.num_classes != model.num_classes:
        raise UserError(f"--num-classes {args.num_classes} but the checkpoint has {model.num_classes} classes")
    used = [flag for flag, v in (("--cfg-channels", args.cfg_channels), ("--guidance-interval", args.guidance_interval),
                                 ("--classifier", args.classifier), ("--video-in", args.video_in)) if v]
    if used:
        raise UserError(f"{used[0]} does not apply to token ids (the {process.key} process guides log-probabilities "
                        "of all positions at every step)")


SAMPLER_OPTIONS = ("eta", "shift", "atol", "rtol", "diffusion_form", "diffusion_norm", "last_step", "truncation")  # = keywords


def sampler_options(args) -> dict:
    """The sampler keywords the user set (unset ones keep the sampler's defaults)."""
    return {k: getattr(args, k) for k in SAMPLER_OPTIONS if getattr(args, k) is not None}


def generate(model, vae, process, indices, labels, args, device, stats=None, given=None) -> np.ndarray:
    """uint8 NHWC images (NFHWC clips) for global sample indices `indices` (seeds --seed + i) with class `labels`."""
    interval = tuple(args.guidance_interval) if args.guidance_interval else None
    shape = (args.frames, *model.input_shape[1:]) if args.frames and given is None else None
    return generate_images(model, vae, process, [args.seed + int(i) for i in indices], labels, args.sampler,
                           args.steps, args.cfg_scale, args.cfg_channels, interval, 0.0, args.precision, device,
                           options=sampler_options(args), stats=stats, given=given,
                           classifier=getattr(args, "classifier_net", None), classifier_scale=args.classifier_scale or 0.0,
                           classifier_form=args.classifier_form, shape=shape)


def is_video(model) -> bool:
    return len(model.input_shape) == 4  # (F, C, H, W): dit/layout.py


def save_grid(samples: np.ndarray, args) -> None:
    write_grid(samples, args.out, args.nrow or class_rows(args.classes if samples.ndim == 5 else None))


def class_rows(classes) -> int | None:
    """Clips per row of a GIF/MP4 grid: one row per class when --classes lists each class's clips
    together, as many of each (0 0 1 1 -> 2 a row); else None (near-square)."""
    if not classes:
        return None
    runs = [1]
    for a, b in zip(classes, classes[1:]):
        runs[-1:] = [runs[-1] + 1] if a == b else [runs[-1], 1]
    return runs[0] if len(set(runs)) == 1 and len(runs) == len(set(classes)) else None


def sample_video_in(model, vae, process, args, device, show):
    """Complete the clips of --video-in from their --given-frames (VDT's prediction, backward
    prediction, interpolation, animation) or around an --inpaint-box (in-painting): one model, the
    mask says which (dit/io/video_in.py). Clip i uses seed --seed + i and its own label (no labels:
    the null class, i.e. unconditional); the given pixels of the output are the input's, byte for byte."""
    from dit.data.video_masks import completion
    from dit.io.video import read_clip_npz, write_clip_npz
    from dit.io.video_in import check_clips, complete_clips

    clips, labels = read_clip_npz(args.video_in)
    max_frames, _, side, _ = model.input_shape
    check_clips(clips, args.video_in, max_frames, side, vae.downsample)
    n, frames, h = clips.shape[:3]
    spec = completion(args.given_frames, args.inpaint_box, frames, h, side, vae.downsample)
    if labels is None:
        labels = np.full(n, model.null_class)
        print(f"{args.video_in} has no labels (arr_1): completing unconditionally (the null class)")
    else:
        _check_labels(labels, model.num_classes)
    stats = {}
    out = complete_clips(clips, labels, spec.mask, spec.keep, vae,
                         lambda idx, y, given: generate(model, vae, process, idx, y, args, device, stats, given),
                         args.batch_size, device, show)
    report(stats, args)
    if args.npz:
        write_clip_npz(args.npz, out, labels)
        print(f"wrote {args.npz}: {n} clips of {frames} frames ({spec.what}), uint8 NFHWC under arr_0")
    if args.out:
        save_grid(out, args)
        print(f"wrote {args.out}")


def report(stats: dict, args) -> None:
    if stats.get("batches"):
        guided = " (2 network passes each with guidance)" if args.cfg_scale != 1 else ""
        print(f"{args.sampler}: {stats['nfe'] / stats['batches']:.1f} function evaluations per batch{guided}")


def _check_labels(labels, num_classes):
    bad = [int(c) for c in labels if not 0 <= c < num_classes]
    if bad:
        raise UserError(f"class labels {bad[:8]} are outside [0, {num_classes}); this model has {num_classes} classes")


def sample_grid(model, vae, process, args, device, show):
    _check_labels(args.classes, model.num_classes)
    n, bs, images, stats = len(args.classes), args.batch_size, [], {}
    for a in tqdm(range(0, n, bs), desc="sampling", disable=not show):
        idx = list(range(a, min(a + bs, n)))
        images.append(generate(model, vae, process, idx, [args.classes[i] for i in idx], args, device, stats))
    report(stats, args)
    images = np.concatenate(images)
    save_grid(images, args)
    if args.save_images:
        from dit.io.video import write_gif

        for i, img in enumerate(images):  # a clip as a GIF of its own, an image as a PNG
            if img.ndim == 4:
                write_gif(Path(args.save_images) / f"{i:06d}.gif", img[None])
            else:
                save_png(img, Path(args.save_images) / f"{i:06d}.png")
    print(f"wrote {args.out}" + (f" and {n} images in {args.save_images}" if args.save_images else ""))


def make_labels(n: int, num_classes: int, mode: str, seed: int) -> np.ndarray:
    """Evaluation labels: uniform draws (ADM/DiT protocol) or each class equally often, shuffled."""
    g = torch.Generator().manual_seed(seed)
    if mode == "uniform":
        return torch.randint(num_classes, (n,), generator=g).numpy()
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)].numpy()


# --- evaluation batches (--npz): shards that say what they hold, streamed into one .npz -----------

# Flags that change how samples are computed but not which samples (or only at float rounding, as
# the device does); everything else in the namespace, plus the checkpoint's hash, is what a shard holds.
# The classifier's settings enter only when --classifier is given (shard_settings), so shards written
# before classifier guidance existed still match.
_NOT_CONTENT = {"ckpt", "no_progress", "device", "out", "save_images", "nrow", "classes", "npz", "batch_size",
                "compile", "compile_best_effort", "classifier", "classifier_net", "classifier_scale", "classifier_form",
                "truncation", "frames", "tokenizer_file",
                "prompt"}  # prompt: always None here (--prompt has its own path)


def shard_settings(args) -> dict:
    """What decides the content of sample i: the checkpoint's bytes and every drawing flag (JSON-normalised)."""
    content = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_CONTENT}
    classifier = {"classifier_sha256": checkpoint_sha256(args.classifier), "classifier_scale": args.classifier_scale,
                  "classifier_form": args.classifier_form} if args.classifier else {}  # absent: older shards still match
    # Absent unless set: shards written before these existed still match.
    truncation = {} if args.truncation is None else {"truncation": args.truncation}
    frames = {} if args.frames is None else {"frames": args.frames}
    tokenizer = {"tokenizer_sha256": sha256_of(Path(args.tokenizer_file))} if getattr(args, "tokenizer_file", None) else {}
    return json.loads(json.dumps({"ckpt_sha256": checkpoint_sha256(args.ckpt), **classifier, **truncation, **frames,
                                  **tokenizer, **content}))


def sample_npz(model, vae, process, args, state, device):
    """Resumable mass sampling (dit/io/shards.py): one shard per batch, recorded with the settings
    that drew it (shard_settings), kept on a rerun only if it loads and its record matches."""
    labels = make_labels(args.num_samples, model.num_classes, args.labels, args.seed)
    stats = {}

    def draw(a: int, b: int) -> np.ndarray:
        return generate(model, vae, process, range(a, b), labels[a:b], args, device, stats)

    shape = sample_to_npz(Path(args.npz), labels, args.batch_size, shard_settings(args), draw, state,
                          show=state.is_main_process and not args.no_progress)
    if shape is not None:  # the main process
        report(stats, args)
        layout = "uint8 NFHWC clips" if len(shape) == 5 else "uint8 NHWC"
        print(f"wrote {args.npz}: {shape[0]} samples of {'x'.join(map(str, shape[1:-1]))}, {layout} under arr_0")


def main(argv=None):
    args = parse_args(argv)
    state = _state(args.device)
    if args.prompt:
        return sample_prompts(args, state, save_grid)
    device = state.device
    model, vae, process = build(args, device)
    if args.compile:
        compile_network(model, args.compile_best_effort, backward=False)
    show = state.is_main_process and not args.no_progress
    if args.video_in and not is_video(model):
        raise UserError(f"--video-in needs a video checkpoint; {args.ckpt} holds an image network")
    if args.frames and not (is_video(model) and args.frames <= model.input_shape[0]):
        raise UserError(f"--frames {args.frames}: " + (f"this checkpoint draws at most {model.input_shape[0]} frames"
                        if is_video(model) else f"{args.ckpt} holds an image network; drop --frames"))
    if args.frames == (model.input_shape[0] if is_video(model) else None):
        args.frames = None  # the checkpoint's own length: the same clips (and shards) as without the flag
    if args.out:
        check_grid_path(args.out, is_video(model))  # before any sampling
    try:
        if args.video_in:
            if state.is_main_process:
                sample_video_in(model, vae, process, args, device, show)
        elif args.npz:
            sample_npz(model, vae, process, args, state, device)
        elif state.is_main_process:
            sample_grid(model, vae, process, args, device, show)
    except OSError as e:
        raise UserError(f"could not write output: {e}") from None


if __name__ == "__main__":
    sys.exit(run_cli(main))
