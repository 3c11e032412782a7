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
    # text-to-image on the captioned scenes: shape, colour, position and joint accuracy of each prompt's samples
    python evaluate.py --ckpt results/text-run --metric scenes --prompts prompts.txt --per-prompt 4 --cfg-scale 3
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

from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError
from dit.pipelines.evaluation import METRICS
from dit.registry import load_plugins


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
    src.add_argument("--prompts", metavar="FILE", help="scenes: canonical scene prompts, one per line (a text-to-image "
                     "--ckpt draws each --per-prompt times)")
    src.add_argument("--per-prompt", type=positive(), default=1, help="scenes: samples of each prompt")
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
    p.add_argument("--classifier-steps", type=positive(), help="shapes metrics: training steps of the classifier (video-shapes: of both judges; scenes: of the shape reader)")
    p.add_argument("--shapes-speed", type=positive(float),
                   help="video-shapes: the clips' speed (train.py --shapes-speed): the motion judge and the reference "
                        "move at it; default: --ckpt's recorded speed, else 1")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--out", help="also write the metrics to this JSON file")
    args, rest = p.parse_known_args(argv)
    if (args.samples is None) == (args.ckpt is None):
        raise UserError("give --samples (existing images) or --ckpt with --num-samples (generate them)")
    if args.metric == "scenes" or args.prompts:
        from dit.pipelines.evaluation import check_prompts

        if args.ckpt:
            check_prompts(args)  # sets --num-samples: each prompt --per-prompt times
        elif args.prompts:
            raise UserError("--prompts goes with --ckpt (generate them); --samples brings its own prompts")
    if args.ckpt and not args.num_samples:
        raise UserError("--ckpt needs --num-samples")
    if args.shapes_speed not in (None, 1) and args.metric != "video-shapes":
        raise UserError(f"--shapes-speed is the moving shapes' speed, for --metric video-shapes (not {args.metric})")
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


def prepare(args, rest, state, given):
    """The pipeline of --ckpt and the drawing settings of the batch to score, checked; where it is cached."""
    from dit.pipelines import cli, load
    from dit.pipelines.evaluation import batch_path, sample_argv

    argv = sample_argv(args, rest, given and given[0])
    out = batch_path(args, argv)
    flags = cli.parse([*argv, "--npz", str(out)], "the generation flags of evaluate.py")
    pipe, spec = load(*cli.to_spec(flags), state.device, flags.cfg_given)
    return out, pipe, spec, flags


def generate(out, pipe, spec, flags, state) -> None:
    """Draw the batch into `out` (resumable), or with --given-frames complete the clips on the main process."""
    from dit.io.video import write_clip_npz
    from dit.networks.compile import compile_network
    from dit.pipelines import clips, images

    show = state.is_main_process and not flags.no_progress
    if flags.compile:
        compile_network(pipe.network, flags.compile_best_effort, backward=False)
    if spec.prompts:  # a text model: one sample per line of the (repeated) prompt file, on the main process
        if state.is_main_process:
            from dit.pipelines.prompts import write_prompt_npz

            write_prompt_npz(out, images.sample_prompts(pipe, spec, flags.batch_size, state.device, show), spec.prompts)
    elif not spec.video_in:
        images.sample_npz(pipe, spec, out, flags.batch_size, state, show)
    elif state.is_main_process:
        done, labels, what = clips.complete(pipe, spec, flags.batch_size, state.device, show)
        write_clip_npz(out, done, labels)
        print(f"wrote {out}: {len(done)} clips of {done.shape[1]} frames ({what}), uint8 NFHWC under arr_0")


def main(argv=None):
    args, rest = parse_args(argv)
    import torch

    from dit.dist import accelerate_state
    from dit.io.atomic import write_json
    from dit.networks.conditioning import is_unconditional
    from dit.pipelines import evaluation
    from dit.pipelines.spec import EMPTY_PROVENANCE

    if args.metric == "fvd":
        evaluation.check_fvd_inputs(args)
    given = evaluation.prediction_inputs(args) if args.given_frames is not None else None
    state = accelerate_state(args.device)
    out, pipe, spec, flags = prepare(args, rest, state, given) if args.ckpt else (args.samples, None, None, None)
    if args.metric == "fvd":
        evaluation.check_fvd_frames(args, pipe and (spec.frames or pipe.max_frames))
    if args.shapes_speed is None:  # the speed the checkpoint's clips moved at (train.py --shapes-speed), else 1
        args.shapes_speed = float(pipe.checkpoint.meta.get("shapes_speed", 1.0)) if pipe is not None else 1.0
    if pipe is not None:
        generate(out, pipe, spec, flags, state)
    if not state.is_main_process:
        return
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    if args.metric in ("video-shapes", "fvd"):
        result, n = evaluation.clip_metrics(args, out, device, state.num_processes, given)
    elif args.metric == "scenes":
        result, n = evaluation.scene_metrics(args, out, device)
    else:
        result, n = evaluation.image_metrics(args, out, device, pipe is not None and is_unconditional(pipe.network.num_classes))
    if pipe is not None and not spec.video_in:
        pipe.count_nfe(spec, state.device)  # every batch came from the cache: one sample counts it
    made = ({"arch": pipe.checkpoint.arch, "process": pipe.checkpoint.process, **pipe.provenance(spec, n)} if pipe
            else {"arch": None, "process": None, **EMPTY_PROVENANCE})
    result = {"samples": str(out), "metric": args.metric, **made, **evaluation.reference_record(args, n), **result}
    print(json.dumps(result))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    sys.exit(run_cli(main))
