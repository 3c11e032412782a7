"""The sampling flags: one parser for sample.py and for the generation half of evaluate.py.

`parser(description, cfg_default)` declares them, `parse(argv, description, cfg_default)` checks what can be checked before
anything is loaded (one line, exit 2), and `to_spec(args)` turns them into the `Source` and
`SamplingSpec` that decide every sample (dit/pipelines/spec.py). Defaults shown in --help are read
from where they live: the samplers' signatures, the processes, the guidance module.
"""

from __future__ import annotations

import argparse

from dit.cli import ArgumentParser, add_switch, image_hw, image_size_token, positive
from dit.errors import UserError
from dit.networks import ARCHITECTURES
from dit.networks.dit_config import MODEL_NAMES
from dit.pipelines.spec import LABEL_MODES, SAMPLER_OPTIONS, SamplingSpec, Source
from dit.precision import ALIASES, PRECISIONS, check_precision
from dit.processes import PROCESSES
from dit.sampling import sampler_names
from dit.sampling.classifier_guidance import FORMS, check_scale
from dit.sampling.flow import DIFFUSION_FORMS
from dit.sampling.catalog import option_help

DEFAULT_CFG = 4.0  # classifier-free guidance of sample.py's grids: DiT's (a text pipeline's: dit/pipelines/prompts.py)
# ... and of clip completion (--video-in): none. The given frames carry the class, and on the video-cpu preset
# (200 held-out clips, benchmarks/video_cpu/sweeps.jsonl) cfg 1 predicted as well as cfg 3 (direction agreement
# 0.435 against 0.450) with a lower centroid error (1.22 against 1.40 px), at half the network passes.
COMPLETION_CFG = 1.0


def _default_steps(key: str) -> str:
    """A process's default step count for --help: a number, or what a per-instance default is (its docstring)."""
    steps = PROCESSES.get(key).default_sampling_steps
    return str(steps) if isinstance(steps, int) else (steps.__doc__ or "its own").split(": ")[-1].rstrip(".")


def parser(description: str, cfg_default: float = DEFAULT_CFG, **kwargs) -> ArgumentParser:
    from dit.pipelines.prompts import TEXT_CFG

    p = ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)
    p.add_argument("--ckpt", required=True, help="checkpoint: .pt, .safetensors export, training/diffusers directory, or manifest name")
    p.add_argument("--arch", choices=ARCHITECTURES.keys(), help="architecture key; default: the checkpoint's (older ones: dit)")
    p.add_argument("--process", choices=PROCESSES.keys(), help="process key; default: the checkpoint's (older ones: gaussian)")
    p.add_argument("--model", help=f"architecture ({', '.join(MODEL_NAMES)}); default: the checkpoint's own")
    p.add_argument("--image-size", type=image_size_token, nargs="+", metavar="H[xW]",
                   help="image height x width (256, 256x384 or 256 384): another size than the checkpoint's where its "
                        "network allows (a position encoding computed from the grid); default: the checkpoint's, else 256")
    p.add_argument("--num-classes", type=positive(int), help="default: the checkpoint's, else 1000")
    p.add_argument("--vae", help="ema, mse, none (pixel space), hub id or directory; default: the checkpoint's, else ema")
    p.add_argument("--classes", type=int, nargs="+", help="class labels for a grid (one image each)")
    p.add_argument("--num-samples", type=positive(int), help="how many samples, labels drawn with --labels (an "
                   "unconditional model: none needed); with --npz an evaluation batch, else a grid")
    p.add_argument("--npz", help="write samples as uint8 NHWC under arr_0 (labels under arr_1), ADM evaluator format")
    p.add_argument("--labels", choices=LABEL_MODES, default="uniform", help="labels for --num-samples")
    p.add_argument("--prompt", action="append", help="text-to-image (a text-dit checkpoint or a VQ-Diffusion pipeline "
                   "as --ckpt): one image per --prompt, repeat the flag for more")
    p.add_argument("--prompts", metavar="FILE", help="a text file of prompts, one per line (blank lines skipped), "
                   "after any --prompt")
    p.add_argument("--cfg-scale", type=float, help=f"classifier-free guidance scale; 1 = none; default {cfg_default:g} "
                   f"({TEXT_CFG:g} with --prompt, the pipeline's; {COMPLETION_CFG:g} with --video-in)")
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
    p.add_argument("--sampler", help="a sampler of the process; default: the process's first (" + "; ".join(
        f"{key}: {', '.join(sampler_names(key))}" for key in PROCESSES.keys() if sampler_names(key)) + ")")
    p.add_argument("--steps", type=positive(int), help="sampler steps (heun: 2 evaluations each; dopri5: unused); "
                   "default: the checkpoint's (train.py --sampling-steps), else its process's (" + "; ".join(
                       f"{k}: {_default_steps(k)}" for k in PROCESSES.keys()) + ")")
    # The samplers' own options; given to a sampler without them, they are an error (check_sampler).
    for option, meta, what in (("eta", None, "DDIM stochasticity"), ("shift", None, "timestep shift s, t' = s t / (1 + (s-1) t)"),
                               ("atol", None, "absolute tolerance"), ("rtol", None, "relative tolerance"),
                               ("diffusion_form", None, f"w(t) of the SDE, one of {', '.join(DIFFUSION_FORMS)}"), ("diffusion_norm", None, "scale of w(t)"),
                               ("last_step", None, "size of the SDE's final noise-free step"),
                               ("truncation", "R", "keep the most likely ids of p(x0 | x_t) up to cumulative probability "
                                                   "R (the released truncation_rate; ImageNet 0.86)")):
        kind = str if option == "diffusion_form" else float
        p.add_argument(f"--{option.replace('_', '-')}", type=kind, metavar=meta, help=f"{what}; {option_help(option)}")
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
    p.set_defaults(cfg_default=cfg_default)
    return p


def parse(argv=None, description: str = "", cfg_default: float = DEFAULT_CFG) -> argparse.Namespace:
    """The sampling flags of `argv`, checked as far as they can be without the checkpoint."""
    args = parser(description, cfg_default).parse_args(argv)
    check(args)
    return args


def check(args) -> argparse.Namespace:
    from dit.pipelines.vq_text import is_vq_pipeline

    if args.classifier is None:
        if args.classifier_scale is not None or args.classifier_form != "auto":
            raise UserError("--classifier-scale / --classifier-form need --classifier RUN (a train_classifier.py run)")
    else:
        args.classifier_scale = check_scale(1.0 if args.classifier_scale is None else args.classifier_scale)
    if args.truncation is not None and not 0 < args.truncation <= 1:
        raise UserError(f"--truncation must be in (0, 1] (1: none), got {args.truncation}")
    if args.cfg_scale is not None and args.cfg_scale < 0:
        raise UserError(f"--cfg-scale must be >= 0, got {args.cfg_scale}")
    from dit.pipelines.prompts import check_prompt_args, check_text_args, read_prompts
    from dit.pipelines.vq_text import is_hub_id

    args.prompt = read_prompts(args.prompt, args.prompts)
    if is_vq_pipeline(args.ckpt) or (args.prompt and is_hub_id(args.ckpt)):
        return check_text_args(args)
    args.cfg_given = args.cfg_scale is not None  # an unconditional model refuses a given scale, drops the default
    if args.cfg_scale is None:
        args.cfg_scale = COMPLETION_CFG if args.video_in is not None else args.cfg_default
    if args.prompt:  # a text DiT's (the checkpoint is checked once it is read)
        return check_prompt_args(args)
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
    if args.npz is not None and args.num_samples is None:
        raise UserError("--npz needs --num-samples N: how many samples to write")
    if not args.classes and args.num_samples is None:
        raise UserError("nothing to sample: give --classes for a grid of those classes, or --num-samples N (a grid "
                        "with drawn labels, or the null label of an unconditional model; with --npz an evaluation batch)")
    if args.classes and args.num_samples is not None:
        raise UserError("--classes or --num-samples, not both: --classes lists the labels, --num-samples draws them "
                        "with --labels uniform|balanced")
    args.precision = check_precision(args.precision)
    return args


def to_spec(args) -> tuple[Source, SamplingSpec]:
    """The checked flags as what decides the samples (dit/pipelines/spec.py)."""
    h, w = image_hw(args.image_size) if args.image_size else (None, None)
    source = Source(args.ckpt, args.arch, args.process, args.model, h, args.num_classes, args.vae,
                    w if w != h else None)
    spec = SamplingSpec(
        sampler=args.sampler, steps=args.steps,
        options={k: getattr(args, k) for k in SAMPLER_OPTIONS if getattr(args, k) is not None},
        cfg_scale=args.cfg_scale, cfg_channels=args.cfg_channels,
        guidance_interval=tuple(args.guidance_interval) if args.guidance_interval else None,
        classifier=args.classifier, classifier_scale=args.classifier_scale, classifier_form=args.classifier_form,
        seed=args.seed, precision=args.precision, classes=tuple(args.classes) if args.classes else None,
        num_samples=args.num_samples, labels=args.labels, frames=args.frames, video_in=args.video_in,
        given_frames=args.given_frames, inpaint_box=args.inpaint_box,
        prompts=tuple(args.prompt) if args.prompt else None)
    return source, spec
