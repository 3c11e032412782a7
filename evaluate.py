"""Sample quality: FID / Inception Score / precision-recall (torch-fidelity), or the offline shapes metric.

    # samples already written (sample.py --npz, or any folder of images)
    python evaluate.py --samples DiT-XL-2-cfg1.5.npz --ref VIRTUAL_imagenet256_labeled.npz
    # generate, then evaluate (split over processes with accelerate launch; resumable like sample.py)
    accelerate launch evaluate.py --ckpt results/my-run --num-samples 50000 --ref ref.npz --cfg-scale 1.5
    # the built-in dataset, offline: Fréchet distance in a shapes classifier's features + class accuracy
    python evaluate.py --ckpt results/cpu-demo --num-samples 1000 --metric shapes --sampler ddim --steps 50
    # clips of the moving shapes, offline: per-frame class accuracy, coherent motion, clip Fréchet distance
    python evaluate.py --ckpt results/video-cpu --num-samples 400 --metric video-shapes --cfg-scale 3 --steps 50
    # prediction: complete real clips from frames 0-3, score direction agreement and centroid error
    python evaluate.py --ckpt results/video-cpu --num-samples 400 --metric video-shapes --ref real.npz --given-frames 0-3
    # FVD (StyleGAN-V's protocol) against real clips, with I3D weights from a local file
    python evaluate.py --samples clips.npz --metric fvd --ref real.npz --i3d-weights i3d_pretrained_400.pt

Prints one JSON object of metrics (and writes it with --out), with what produced them: the checkpoint
and its sha256 (of the weights file the loader reads), the VQ tokenizer that decoded token ids and its
sha256 (VQ-Diffusion; null otherwise), sampler, steps, cfg scale and the other drawing flags, the seed range ("seeds": [first, last]; sample i used seed first + i), the number of samples,
the reference and its sha256, and the code version (git commit, else the package version).

Generation is unguided unless asked: --cfg-scale defaults to 1 here (FID protocol), not sample.py's 4.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dit.registry import load_plugins
from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError

METRICS = ("inception", "shapes", "video-shapes", "fvd")


def parse_args(argv=None):
    load_plugins()  # architectures and processes registered outside the package ($DIT_PLUGINS)
    # No abbreviations: sample.py's flags pass through, and --classifier (guidance) must not read as --classifier-steps.
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                       allow_abbrev=False)
    src = p.add_argument_group("samples: --samples, or --ckpt with --num-samples (other flags as in sample.py, "
                              "but --cfg-scale defaults to 1: unguided)")
    src.add_argument("--samples", help=".npz (arr_0 uint8 NHWC [, arr_1 labels]) or a folder of images")
    src.add_argument("--ckpt", help="generate from this checkpoint (anything sample.py reads)")
    src.add_argument("--num-samples", type=int, help="how many to generate (labels balanced over classes)")
    src.add_argument("--arch", help="architecture key of --ckpt (default: the checkpoint's; older ones: dit)")
    src.add_argument("--process", help="process key of --ckpt (default: the checkpoint's; older ones: gaussian)")
    p.add_argument("--metric", choices=METRICS, default="inception")
    p.add_argument("--ref", help="inception: reference .npz (arr_0 images, or mu/sigma) or folder")
    p.add_argument("--no-fid", action="store_true")
    p.add_argument("--no-isc", action="store_true")
    p.add_argument("--no-prc", action="store_true", help="skip precision/recall")
    p.add_argument("--inception-weights", help="local Inception-v3 weights (default: models/weights/, downloaded)")
    p.add_argument("--i3d-weights", help="fvd: local Kinetics-400 I3D state dict (.pt read weights_only, or .safetensors)")
    p.add_argument("--i3d-sha256", help="fvd: the sha256 the I3D file must have (recorded either way)")
    p.add_argument("--fvd-clips", type=positive(), default=2048, help="fvd: clips of each side (StyleGAN-V: 2048)")
    p.add_argument("--fvd-frames", type=positive(), default=16, help="fvd: frames per clip (StyleGAN-V: 16)")
    p.add_argument("--fvd-subsample", type=positive(), default=1, help="fvd: every k-th frame, real and generated alike")
    p.add_argument("--fvd-real-split", default="train", help="fvd: which split --ref holds (recorded)")
    p.add_argument("--given-frames", metavar="0-G", help="video-shapes: score prediction instead of generation: "
                   "complete the first --num-samples clips of --ref (uint8 (N, F, H, W, 3) .npz, labels under arr_1) "
                   "from frames 0..G and score the rest (direction agreement with the given frames, centroid error)")
    p.add_argument("--cache-dir", default="results/eval-cache", help="classifier, reference statistics")
    p.add_argument("--classifier-steps", type=positive(), help="shapes metrics: training steps of the classifier (video-shapes: of both judges)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--out", help="also write the metrics to this JSON file")
    args, rest = p.parse_known_args(argv)
    if (args.samples is None) == (args.ckpt is None):
        raise UserError("give --samples (existing images) or --ckpt with --num-samples (generate them)")
    if args.ckpt and not args.num_samples:
        raise UserError("--ckpt needs --num-samples")
    if args.samples and (args.arch or args.process):
        raise UserError("--arch and --process describe --ckpt; existing --samples have none")
    if args.samples and rest:
        raise UserError(f"unrecognized arguments: {' '.join(rest)}")
    if args.metric == "fvd" and (args.ref is None or args.i3d_weights is None):
        raise UserError("--metric fvd needs --ref (real clips, .npz) and --i3d-weights (a local I3D file)")
    if args.given_frames is not None and (args.metric != "video-shapes" or not args.ckpt or not args.ref):
        raise UserError("--given-frames scores prediction: give --metric video-shapes, --ckpt and --ref (the real "
                        "clips to complete)")
    if args.metric == "inception" and args.ref is None and not (args.no_fid and args.no_prc):
        raise UserError("--metric inception needs --ref for FID and precision/recall (or pass --no-fid --no-prc)")
    return args, rest


DEFAULT_CFG_SCALE = 1.0  # FID is measured without guidance unless --cfg-scale asks for it


def sample_argv(args, rest, given_clips: Path | None = None) -> list[str]:
    """sample.py's flags for generating the evaluation batch (without --npz): balanced labels, or with
    --given-frames the completion of `given_clips`. --cfg-scale 1 comes before the user's own flags, so
    a --cfg-scale the user gives (in any spelling) wins."""
    keys = [f for flag in ("arch", "process") if getattr(args, flag) for f in (f"--{flag}", getattr(args, flag))]
    what = (["--video-in", str(given_clips), "--given-frames", args.given_frames] if given_clips is not None
            else ["--num-samples", str(args.num_samples), "--labels", "balanced"])
    return ["--ckpt", args.ckpt, *what, "--device", args.device, "--cfg-scale", str(DEFAULT_CFG_SCALE), *keys, *rest]


def prediction_inputs(args) -> tuple[Path, int]:
    """--given-frames: the first --num-samples clips of --ref, written for sample.py --video-in, and
    how many frames are given (a prefix 0..G, as the prediction metrics need). Checked before any work."""
    from dit.data.video_masks import parse_frames
    from dit.io.video import read_clip_npz, write_clip_npz

    clips, labels = read_clip_npz(args.ref)
    n, frames = args.num_samples, clips.shape[1]
    if len(clips) < n:
        raise UserError(f"--ref {args.ref} holds {len(clips)} clips; --num-samples {n} needs that many")
    given = parse_frames(args.given_frames, frames)
    if given != list(range(len(given))) or not 2 <= len(given) <= frames - 2:
        raise UserError(f"--given-frames {args.given_frames}: prediction is scored from the first frames, 0-G with "
                        f"2 to {frames - 2} of the {frames} frames given (e.g. 0-{frames // 2 - 1})")
    path = Path(args.cache_dir) / "samples" / f"given-{file_sha256(args.ref)[:12]}-{n}.npz"
    write_clip_npz(path, clips[:n], None if labels is None else labels[:n])
    return path, len(given)


def generate_npz(args, argv) -> Path:
    """sample.py's resumable, multi-process evaluation mode (balanced labels): returns the .npz path."""
    import hashlib

    import sample

    key = hashlib.sha256(json.dumps([str(Path(args.ckpt).resolve()), argv]).encode()).hexdigest()[:12]
    out = Path(args.cache_dir) / "samples" / f"{Path(args.ckpt).stem}-{args.num_samples}-{key}.npz"
    sample.main([*argv, "--npz", str(out)])
    return out


def code_version() -> str | None:
    """The git commit of this checkout, else the installed package's version (None if neither is known)."""
    import subprocess
    from importlib import metadata

    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=30)
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip()
    except (OSError, subprocess.SubprocessError):  # no git, not a checkout, a hung filesystem
        pass
    for dist in dict.fromkeys(metadata.packages_distributions().get("dit", [])):  # the distribution named for dit/
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return None


def file_sha256(path) -> str | None:
    from dit.io.zoo import sha256_of

    return sha256_of(Path(path)) if path and Path(path).is_file() else None


def provenance(args, argv, num_samples: int) -> dict:
    """What produced the numbers: checkpoint (and its sha256), the drawing flags, seeds, reference, code."""
    record = {"checkpoint": None, "checkpoint_sha256": None, "sampler": None, "sampler_options": None, "steps": None,
              "cfg_scale": None,
              "cfg_channels": None, "guidance_interval": None, "eta": None, "precision": None, "labels": None,
              "seeds": None, "classifier": None, "classifier_sha256": None, "classifier_scale": None,
              "classifier_form": None, "tokenizer": None, "tokenizer_sha256": None, "frames": None}
    if args.ckpt:
        import sample
        from dit.autoencoders.vq import tokenizer_file
        from dit.io.checkpoint import checkpoint_sha256, load_weights
        from dit.processes import process_from_meta
        from dit.sampling import default_sampler

        s = sample.parse_args([*argv, "--npz", "unused.npz"])
        ckpt = load_weights(args.ckpt)
        sample._keys(s, ckpt)  # --arch / --process as sample.py applied them
        process = process_from_meta(ckpt.meta)
        vae = s.vae or ckpt.meta.get("vae")
        tokenizer = tokenizer_file(vae) if vae else None  # None: a VAE or pixels decoded the samples
        record.update(checkpoint=args.ckpt, checkpoint_sha256=checkpoint_sha256(args.ckpt),
                      sampler=s.sampler or default_sampler(process.key), sampler_options=sample.sampler_options(s),
                      steps=s.steps or sample.default_steps(process),
                      tokenizer=None if tokenizer is None else str(tokenizer),
                      tokenizer_sha256=None if tokenizer is None else file_sha256(tokenizer),
                      cfg_scale=s.cfg_scale, cfg_channels=s.cfg_channels,
                      guidance_interval=s.guidance_interval, eta=s.eta, precision=s.precision,
                      labels=f"--ref's first {num_samples}" if s.video_in else s.labels, frames=s.frames,
                      seeds=[s.seed, s.seed + num_samples - 1])  # sample i used seed first + i
        if s.classifier:  # classifier guidance (ADM): which classifier, how strong, in which form
            from dit.sampling.classifier_guidance import resolve_form

            record.update(classifier=s.classifier, classifier_sha256=checkpoint_sha256(s.classifier),
                          classifier_scale=s.classifier_scale, classifier_form=resolve_form(s.classifier_form,
                                                                                            record["sampler"]))
    reference = {"shapes": "built-in shapes (dit/eval/metrics.py ShapesMetric)",
                 "video-shapes": "built-in moving shapes (dit/eval/video_metrics.py VideoShapesMetric)"}.get(args.metric, args.ref)
    referenced = args.metric in ("inception", "fvd") or args.given_frames is not None  # --ref decides the numbers
    return {**record, "num_samples": num_samples, "reference": args.ref if args.given_frames else reference,
            "reference_sha256": file_sha256(args.ref) if referenced else None,
            "code_version": code_version()}


def keys_of(args) -> dict:
    """The architecture and process that made the samples (None for existing --samples)."""
    if not args.ckpt:
        return {"arch": None, "process": None}
    from dit.io.checkpoint import load_weights

    ckpt = load_weights(args.ckpt)
    return {"arch": args.arch or ckpt.arch, "process": args.process or ckpt.process}


def check_fvd_inputs(args, rest: list[str]) -> None:
    """--metric fvd: the reference clips, the clip counts and frames (the reference's and, from --ckpt,
    the generated clips': sample.py's --frames or the checkpoint's F), and the I3D file (and its
    sha256) checked before any generation, which can take hours."""
    from dit.eval.fvd import EXPECTED_SHA256, load_i3d
    from dit.io.video import read_clip_npz

    real, _ = read_clip_npz(args.ref)
    need = (args.fvd_frames - 1) * args.fvd_subsample + 1
    if len(real) < args.fvd_clips:
        raise UserError(f"--ref {args.ref} holds {len(real)} clips; --fvd-clips {args.fvd_clips} needs that many")
    if real.shape[1] < need:
        raise UserError(f"--ref clips have {real.shape[1]} frames; --fvd-frames {args.fvd_frames} every "
                        f"--fvd-subsample {args.fvd_subsample} need {need}")
    if args.ckpt and args.num_samples < args.fvd_clips:
        raise UserError(f"--num-samples {args.num_samples} < --fvd-clips {args.fvd_clips}: generate at least as many")
    if args.ckpt:
        from dit.io.checkpoint import load_weights

        flag = argparse.ArgumentParser(add_help=False)
        flag.add_argument("--frames", type=int)
        frames = flag.parse_known_args(rest)[0].frames or getattr(load_weights(args.ckpt).config, "frames", None)
        if frames is not None and frames < need:
            raise UserError(f"--ckpt {args.ckpt} draws {frames}-frame clips; --fvd-frames {args.fvd_frames} every "
                            f"--fvd-subsample {args.fvd_subsample} need {need}: lower them")
    load_i3d(args.i3d_weights, args.i3d_sha256 or EXPECTED_SHA256, "cpu")


def clip_metrics(args, source, device, num_processes: int = 1, given: tuple[Path, int] | None = None):
    """The clip metrics of an .npz of uint8 clips (N, F, H, W, 3): the moving-shapes metric, or FVD."""
    from dit.io.video import read_clip_npz

    if Path(str(source)).suffix != ".npz":
        raise UserError(f"--metric {args.metric} reads clips from an .npz (arr_0 uint8 (N, F, H, W, 3)), not {source}")
    clips, labels = read_clip_npz(source)
    if args.metric == "video-shapes":
        from dit.eval.video_metrics import VideoShapesMetric

        steps = args.classifier_steps  # both judges' training steps (None: their defaults)
        metric = VideoShapesMetric(clips.shape[2], clips.shape[1], args.cache_dir, device=device,
                                   frame_judge_steps=steps, motion_steps=steps)
        if given is not None:  # prediction: the completions against the real clips they continue
            real, _ = read_clip_npz(given[0])
            result = {"given_frames": args.given_frames, **metric.prediction_metrics(clips, real, given[1])}
        else:
            result = metric.compute(clips, labels)
        result.pop("per_sample")
        return result, len(clips)
    from dit.eval.fvd import EXPECTED_SHA256, FVDSettings, fvd, load_i3d

    real, _ = read_clip_npz(args.ref)
    settings = FVDSettings(num_frames=args.fvd_frames, clip_count=args.fvd_clips, subsample_factor=args.fvd_subsample,
                           real_split=args.fvd_real_split, num_processes=num_processes)
    net = load_i3d(args.i3d_weights, args.i3d_sha256 or EXPECTED_SHA256, device)
    return fvd(real, clips, net, settings), len(clips)


def main(argv=None):
    args, rest = parse_args(argv)
    import torch
    from accelerate import PartialState

    from dit.dist import check_world, force_cpu
    from dit.io.atomic import write_json
    from dit.eval.metrics import InceptionFeatures, ShapesMetric, inception_metrics, load_images

    if args.metric == "fvd":
        check_fvd_inputs(args, rest)
    given = prediction_inputs(args) if args.given_frames is not None else None
    argv = sample_argv(args, rest, given and given[0]) if args.ckpt else None
    source = generate_npz(args, argv) if args.ckpt else args.samples
    state = PartialState(cpu=force_cpu(args.device == "cpu"))
    check_world(state)
    if not state.is_main_process:
        return
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    if args.metric in ("video-shapes", "fvd"):
        result, n = clip_metrics(args, source, device, state.num_processes, given)
        result = {"samples": str(source), "metric": args.metric, **keys_of(args), **provenance(args, argv, n), **result}
        print(json.dumps(result))
        if args.out:
            write_json(args.out, result)
        return
    images, labels = load_images(source)
    if args.metric == "shapes":
        result = ShapesMetric(images.shape[1], args.cache_dir, device=device,
                              classifier_steps=args.classifier_steps)(images, labels)
    else:
        extractor = InceptionFeatures(args.inception_weights, device)
        result = inception_metrics(images, extractor, args.ref, fid=not args.no_fid, isc=not args.no_isc,
                                   prc=not args.no_prc, cache_dir=args.cache_dir)
    result = {"samples": str(source), "metric": args.metric, **keys_of(args), **provenance(args, argv, len(images)),
              **result}
    print(json.dumps(result))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    sys.exit(run_cli(main))
