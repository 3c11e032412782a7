"""evaluate.py's pieces: generating the batch to score through a pipeline, the metrics, and the record.

Generation is the sampling flags' (dit/pipelines/cli.py) with --cfg-scale 1 first (FID is measured
unguided unless asked), balanced labels, and the batch cached under --cache-dir by what was asked, so a
rerun resumes its shards (dit/pipelines/images.py). The record says what produced the numbers: the
pipeline's provenance (dit/pipelines/spec.py), the reference and its sha256, and the code version.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from dit.errors import UserError

METRICS = ("inception", "shapes", "video-shapes", "fvd", "scenes")
DEFAULT_CFG_SCALE = 1.0  # FID is measured without guidance unless --cfg-scale asks for it
REFERENCES = {"shapes": "built-in shapes (dit/eval/metrics.py ShapesMetric)",
              "video-shapes": "built-in moving shapes (dit/eval/video_metrics.py VideoShapesMetric)",
              "scenes": "the prompts' scenes (dit/eval/scene_judge.py)"}


def sample_argv(args, rest, given_clips: Path | None = None) -> list[str]:
    """The sampling flags of the evaluation batch (without --npz): balanced labels, or with --given-frames
    the completion of `given_clips`. --cfg-scale 1 comes before the user's own flags, so a --cfg-scale the
    user gives (in any spelling) wins."""
    keys = [f for flag in ("arch", "process") if getattr(args, flag) for f in (f"--{flag}", getattr(args, flag))]
    what = (["--video-in", str(given_clips), "--given-frames", args.given_frames] if given_clips is not None
            else ["--prompts", str(prompt_file(args))] if args.prompts
            else ["--num-samples", str(args.num_samples), "--labels", "balanced"])
    return ["--ckpt", args.ckpt, *what, "--device", args.device, "--cfg-scale", str(DEFAULT_CFG_SCALE), *keys, *rest]


def check_prompts(args) -> list[str]:
    """--prompts FILE of --metric scenes: canonical prompts of the captioned scenes, read and parsed before any
    work; each is drawn --per-prompt times (the prompt file repeated), so --num-samples follows."""
    from dit.data.shapes_captions import parse_canonical
    from dit.pipelines.prompts import read_prompts

    if args.metric != "scenes" or (args.samples is None) == (args.prompts is None):
        raise UserError("--prompts FILE goes with --metric scenes and --ckpt (generate them); --samples with --metric "
                        "scenes reads the prompts sample.py --prompts --npz stored beside the images")
    prompts = read_prompts(None, args.prompts)
    for p in prompts:
        try:
            parse_canonical(p)
        except ValueError:
            raise UserError(f"--prompts {args.prompts}: {p!r} is not a scene prompt the judge reads (\"a [small|large] "
                            "COLOUR SHAPE at the CELL\" or \"a COLOUR SHAPE left of a COLOUR SHAPE\"; "
                            "benchmarks/text_to_image/prompts-seen.txt)") from None
    args.num_samples = len(prompts) * args.per_prompt
    return prompts


def prompt_file(args) -> Path:
    """The prompt file sample.py draws: each of --prompts' prompts --per-prompt times, in the cache."""
    prompts = [p for p in check_prompts(args) for _ in range(args.per_prompt)]
    text = "\n".join(prompts) + "\n"
    path = Path(args.cache_dir) / "prompts" / f"{hashlib.sha256(text.encode()).hexdigest()[:12]}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def scene_metrics(args, source, device):
    """--metric scenes: the compositional judge's shape, colour, position and joint accuracy (Wilson 95%
    intervals) and the share with exactly the objects asked for, over an .npz of samples and their prompts."""
    from dit.data.shapes_captions import parse_canonical
    from dit.eval.intervals import wilson
    from dit.eval.scene_judge import judge, load_reader, read_images

    with np.load(source) as data:
        if "prompts" not in data:
            raise UserError(f"{source} has no prompts beside its images: write it with sample.py --prompts FILE --npz")
        images, prompts = data["arr_0"], [str(p) for p in data["prompts"]]
    from dit.eval.scene_judge import TRAIN_STEPS

    reader = load_reader(args.cache_dir, images.shape[1], steps=args.classifier_steps or TRAIN_STEPS, device=device)
    marks = [judge(parse_canonical(p), f) for p, f in zip(prompts, read_images(images, reader))]
    result = {}
    for k in ("shape", "colour", "position", "joint", "count"):
        hits = sum(m[k] for m in marks)
        result[k] = hits / len(marks)
        result[k + "_ci"] = wilson(hits, len(marks))
    return {**result, "prompts": len(set(prompts)), "reader_accuracy": reader.heldout_accuracy}, len(images)


def batch_path(args, argv: list[str]) -> Path:
    """Where the batch for `argv` is cached: the same request, the same file (and its shards resume)."""
    key = hashlib.sha256(json.dumps([str(Path(args.ckpt).resolve()), argv]).encode()).hexdigest()[:12]
    return Path(args.cache_dir) / "samples" / f"{Path(args.ckpt).stem}-{args.num_samples}-{key}.npz"


def file_sha256(path) -> str | None:
    from dit.io.zoo import sha256_of

    return sha256_of(Path(path)) if path and Path(path).is_file() else None


def prediction_inputs(args) -> tuple[Path, int]:
    """--given-frames: the first --num-samples clips of --ref, written for completion, and how many frames
    are given (a prefix 0..G, as the prediction metrics need). Checked before any work."""
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


def check_fvd_inputs(args) -> None:
    """--metric fvd: the reference clips and the clip counts, checked before anything is loaded."""
    from dit.io.video import read_clip_npz

    real, _ = read_clip_npz(args.ref)
    if len(real) < args.fvd_clips:
        raise UserError(f"--ref {args.ref} holds {len(real)} clips; --fvd-clips {args.fvd_clips} needs that many")
    if real.shape[1] < fvd_frames_needed(args):
        raise UserError(f"--ref clips have {real.shape[1]} frames; --fvd-frames {args.fvd_frames} every "
                        f"--fvd-subsample {args.fvd_subsample} need {fvd_frames_needed(args)}")
    if args.ckpt and args.num_samples < args.fvd_clips:
        raise UserError(f"--num-samples {args.num_samples} < --fvd-clips {args.fvd_clips}: generate at least as many")


def fvd_frames_needed(args) -> int:
    return (args.fvd_frames - 1) * args.fvd_subsample + 1


def check_fvd_frames(args, frames: int | None) -> None:
    """--metric fvd: the clips --ckpt draws (`frames`: --frames or the checkpoint's F; None for --samples)
    are long enough, and the I3D file (and its sha256) is there: checked before any generation."""
    from dit.eval.fvd import EXPECTED_SHA256, load_i3d

    if frames is not None and frames < fvd_frames_needed(args):
        raise UserError(f"--ckpt {args.ckpt} draws {frames}-frame clips; --fvd-frames {args.fvd_frames} every "
                        f"--fvd-subsample {args.fvd_subsample} need {fvd_frames_needed(args)}: lower them")
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
                                   frame_judge_steps=steps, motion_steps=steps, speed=args.shapes_speed)
        if given is not None:  # prediction: the completions against the real clips they continue
            real, _ = read_clip_npz(given[0])
            result = {"given_frames": args.given_frames, **metric.prediction_metrics(clips, real, given[1])}
        else:
            result = metric.compute(clips, labels)
        result.pop("per_sample")
        result["shapes_speed"] = args.shapes_speed  # the judges' and the reference's
        return result, len(clips)
    from dit.eval.fvd import EXPECTED_SHA256, FVDSettings, fvd, load_i3d

    real, _ = read_clip_npz(args.ref)
    settings = FVDSettings(num_frames=args.fvd_frames, clip_count=args.fvd_clips, subsample_factor=args.fvd_subsample,
                           real_split=args.fvd_real_split, num_processes=num_processes)
    net = load_i3d(args.i3d_weights, args.i3d_sha256 or EXPECTED_SHA256, device)
    return fvd(real, clips, net, settings), len(clips)


def image_metrics(args, source, device, unlabelled: bool = False):
    """The metrics of an .npz or folder of uint8 images: the shapes metric, or Inception's (FID, IS, P/R).
    `unlabelled`: samples of an unconditional model, whose recorded null labels name no class (no class
    accuracy, no class counts)."""
    from dit.eval.metrics import InceptionFeatures, ShapesMetric, inception_metrics, load_images

    images, labels = load_images(source)
    labels = None if unlabelled else labels
    # The class balance the numbers were measured on (FID moves with it: 50 per class is not uniform draws).
    counts = {"class_counts": None if labels is None else np.bincount(np.asarray(labels).astype(np.int64)).tolist()}
    if args.metric == "shapes":
        return {**ShapesMetric(images.shape[1], args.cache_dir, device=device,
                               classifier_steps=args.classifier_steps)(images, labels), **counts}, len(images)
    extractor = InceptionFeatures(args.inception_weights, device)
    return {**inception_metrics(images, extractor, args.ref, fid=not args.no_fid, isc=not args.no_isc,
                                prc=not args.no_prc, cache_dir=args.cache_dir), **counts}, len(images)


def code_version() -> str | None:
    """The git commit of this checkout, else the installed package's version (None if neither is known)."""
    import subprocess
    from importlib import metadata

    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[2], capture_output=True,
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


def reference_record(args, num_samples: int) -> dict:
    """The reference the numbers are measured against, its sha256 where a file decides them, the code."""
    referenced = args.metric in ("inception", "fvd") or args.given_frames is not None  # --ref decides the numbers
    return {"num_samples": num_samples,
            "reference": args.ref if args.given_frames else REFERENCES.get(args.metric, args.ref),
            "reference_sha256": file_sha256(args.ref) if referenced else None, "code_version": code_version()}
