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
Text-to-image from a text-conditioned DiT (train.py --arch text-dit): one image per prompt:
    python sample.py --ckpt results/cpu-demo --prompt "a red square at the top left" --prompt "a blue circle in the center"
    python sample.py --ckpt results/cpu-demo --prompts prompts.txt --cfg-scale 3 --out grid.png --npz samples.npz
Text-to-image from a diffusers VQ-Diffusion pipeline (a VQDiffusionPipeline directory, or a hub id such
as microsoft/vq-diffusion-ithq), sampled with our vq-diffusion process (dit/pipelines/vq_text.py):
    python sample.py --ckpt vq-diffusion-ithq --prompt "teddy bear playing in the pool" --prompt "a red car" \
        --cfg-scale 5 --truncation 0.86 --out grid.png
Sample i is always drawn from seed (--seed + i): the same image whatever the batch size or
number of processes. `--arch` / `--process` default to the checkpoint's own (older checkpoints:
dit, gaussian); `--sampler` names a sampler registered for the process.
"""

from __future__ import annotations

import sys

from dit.cli import run_cli
from dit.dist import accelerate_state
from dit.errors import UserError
from dit.io.video import check_grid_path, write_clip_npz
from dit.networks.compile import compile_network
from dit.pipelines import cli, clips, images, load
from dit.pipelines.prompts import sample_prompts, write_prompt_npz
from dit.pipelines.vq_text import is_hub_id, is_vq_pipeline
from dit.registry import load_plugins


def parse_args(argv=None):
    load_plugins()  # modules in $DIT_PLUGINS register their architectures, processes and samplers first
    return cli.parse(argv, __doc__.split("\n")[0])


def write(samples, args, classes=None) -> None:
    """The grid (--out), one file per sample (--save-images)."""
    if args.out:
        images.save_grid(samples, args.out, args.nrow, classes)
    if args.save_images:
        images.save_each(samples, args.save_images)
    if args.out:
        print(f"wrote {args.out}" + (f" and {len(samples)} images in {args.save_images}" if args.save_images else ""))


def main(argv=None):
    args = parse_args(argv)
    state = accelerate_state(args.device)
    source, spec = cli.to_spec(args)
    show = state.is_main_process and not args.no_progress
    if spec.prompts and (is_vq_pipeline(source.ckpt) or is_hub_id(source.ckpt)):  # its own reader (vq_text.py)
        if state.is_main_process:
            samples = sample_prompts(source.ckpt, spec, args.batch_size, state.device, show)
            with _writing():
                write(samples, args)
                if args.npz:
                    write_prompt_npz(args.npz, samples, spec.prompts)
        return
    pipe, spec = load(source, spec, state.device, args.cfg_given)
    if args.compile:
        compile_network(pipe.network, args.compile_best_effort, backward=False)
    if args.out:
        check_grid_path(args.out, pipe.is_video)  # before any sampling
    with _writing():
        if spec.prompts:  # a text DiT: one sample per prompt
            if state.is_main_process:
                samples = images.sample_prompts(pipe, spec, args.batch_size, state.device, show)
                write(samples, args)
                if args.npz:
                    write_prompt_npz(args.npz, samples, spec.prompts)
        elif spec.video_in:
            if state.is_main_process:
                done, labels, what = clips.complete(pipe, spec, args.batch_size, state.device, show)
                if args.npz:
                    write_clip_npz(args.npz, done, labels)
                    print(f"wrote {args.npz}: {len(done)} clips of {done.shape[1]} frames ({what}), uint8 NFHWC under arr_0")
                if args.out:
                    images.save_grid(done, args.out, args.nrow)
                    print(f"wrote {args.out}")
        elif args.npz:
            images.sample_npz(pipe, spec, args.npz, args.batch_size, state, show)
        elif state.is_main_process:
            write(images.sample_grid(pipe, spec, args.batch_size, state.device, show), args, spec.classes)


class _writing:
    """An OSError while writing outputs is the user's to fix (a full disk, a read-only folder): one line."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if kind is not None and issubclass(kind, OSError):
            raise UserError(f"could not write output: {error}") from None
        return False


if __name__ == "__main__":
    sys.exit(run_cli(main))
