"""How far stock diffusers' DiTPipeline is from our samples of the same exported model (PSNR).

    python benchmarks/diffusers_export/diffusers_export.py --make-vae benchmarks/diffusers_export/runs/tiny-vae
    python train.py cpu-demo --vae benchmarks/diffusers_export/runs/tiny-vae --max-steps 3000 --run-name latent \
        --results-dir benchmarks/diffusers_export/runs
    python benchmarks/diffusers_export/diffusers_export.py --ckpt benchmarks/diffusers_export/runs/latent \
        --out benchmarks/diffusers_export/runs/latent-diffusers

The first writes a tiny random VAE (seed 0); the second trains a latent DiT on it. The third exports
--ckpt with export_diffusers.py, then draws the same seeds and labels three ways: our
`--sampler diffusers-ddim`, stock DiTPipeline, and stock DiTPipeline with its timestep frequencies
patched to DiT's convention (downscale_freq_shift 0): the one difference an export carries
(dit/io/diffusers_transformer.py). Each (steps, cfg) is one row of benchmarks/diffusers_export/results.jsonl
(dit/eval/records.py; --results names another file): PSNR in dB and mean / max absolute difference in
0..255 levels, both uint8 with our rounding, and the max absolute difference of the float images before
quantisation (both clamped to [-1, 1] as the pipeline clamps, in 0..255 levels). When --ckpt is a
train.py run, one row of kind "train" records its command, steps and time in the training loop.
A (steps, cfg, samples) already recorded for the same --ckpt is not measured again.
`tables.py` renders RESULTS.md's table from these rows.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError
from dit.eval.records import REPO, ResultsLog

HERE = Path(__file__).resolve().parent
SEED0 = 100  # sample i from seed 100 + i, class i mod num_classes


def make_vae(path: Path) -> None:
    """The 2x-downsampling, 4-channel AutoencoderKL (random, seed 0) the measurement in RESULTS.md used."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), layers_per_block=1,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  norm_num_groups=4, sample_size=16).save_pretrained(path)
    print(f"wrote {path}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


class FloatCapture:
    """The autoencoder generate_images decodes with, keeping the float images it quantises."""

    def __init__(self, autoencoder):
        self.autoencoder, self.images = autoencoder, None

    def decode(self, latents):
        self.images = self.autoencoder.decode(latents)
        return self.images


def ours(model, vae, process, seeds, labels, steps, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Our `--sampler diffusers-ddim` samples: uint8 NHWC, and the float NCHW images before rounding."""
    from dit.sampling.generate import generate_images

    capture = FloatCapture(vae)
    with torch.no_grad():
        images = generate_images(model, capture, process, seeds, labels, "diffusers-ddim", steps, cfg)
    return images, capture.images.float().cpu().numpy()


def stock(pipe, labels, seeds, steps, cfg) -> tuple[np.ndarray, np.ndarray]:
    """DiTPipeline's samples: uint8 NHWC with our rounding, and its float images (clamped to [0, 1] by the
    pipeline) mapped to [-1, 1], NCHW."""
    from dit.autoencoders.pixels import to_uint8

    generators = [torch.Generator().manual_seed(s) for s in seeds]  # sample i from seed i, as ours
    images = pipe(labels, generator=generators, num_inference_steps=steps, guidance_scale=cfg, output_type="np").images
    floats = torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1
    return to_uint8(floats), floats.numpy()


def compare(mine: tuple[np.ndarray, np.ndarray], theirs: tuple[np.ndarray, np.ndarray]) -> dict:
    """uint8 PSNR (None when identical) and mean / max abs. difference in levels; float max abs. difference
    in 0..255 levels (127.5 per unit of [-1, 1]) with ours clamped to [-1, 1] as the pipeline clamps."""
    diff = np.abs(theirs[0].astype(int) - mine[0].astype(int))
    value = psnr(theirs[0], mine[0])
    floats = np.abs(theirs[1].astype(np.float64) - np.clip(mine[1].astype(np.float64), -1, 1)) * 127.5
    return {"psnr": None if math.isinf(value) else round(value, 2), "identical": bool(diff.max() == 0),
            "mean_abs": round(float(diff.mean()), 3), "max_abs": int(diff.max()),
            "float_max_abs": float(floats.max()), "float_mean_abs": float(floats.mean())}


def export(ckpt: str, out: str) -> None:
    """export_diffusers.py --ckpt --out, as its own command (it is a script at the repository's root)."""
    cmd = [sys.executable, str(REPO / "export_diffusers.py"), "--ckpt", ckpt, "--out", out]
    if subprocess.run(cmd).returncode != 0:
        raise UserError(f"could not export {ckpt} (see the line above)")


def train_row(run: Path) -> dict | None:
    """The train.py run behind --ckpt, when it is one: the command that reproduces its config (checked by
    parsing it with train.py's own flags), its steps and the seconds of its logged training windows."""
    config_file, metrics_file = run / "config.json", run / "metrics.jsonl"
    if not (run.is_dir() and config_file.is_file() and metrics_file.is_file()):
        return None
    import importlib.util

    config = json.loads(config_file.read_text())
    argv = ["cpu-demo", "--vae", config["vae"], "--max-steps", str(config["max_steps"]), "--run-name",
            config["run_name"], "--results-dir", config["results_dir"]]
    spec = importlib.util.spec_from_file_location("dit_train_script", REPO / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    parsed = json.loads(json.dumps(train.parse_args(argv)[0].to_dict()))
    differences = sorted(k for k in set(parsed) | set(config) if parsed.get(k) != config.get(k))
    logged = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    windows = [m["steps_per_s"] for m in logged]
    from dit.training.state import list_checkpoints

    done = list_checkpoints(run)
    return {"kind": "train", "run": str(run), "command": "python " + shlex.join(["train.py", *argv]),
            "command_reproduces_config": not differences, "config_differences": differences,
            "max_steps": config["max_steps"], "steps_done": done[-1][0] if done else None,
            "global_batch_size": config["global_batch_size"],
            "train_loop_seconds": round(sum(config["log_every"] / w for w in windows), 1), "windows": windows,
            "final_loss_mean_last5": float(np.mean([m["loss"] for m in logged[-5:]]))}


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--make-vae", metavar="DIR", help="only write the tiny random VAE of the recorded measurement")
    p.add_argument("--ckpt", help="a latent-space DiT run or export (anything sample.py reads)")
    p.add_argument("--out", help="new directory for the exported pipeline")
    p.add_argument("--samples", type=positive(), default=32)
    p.add_argument("--steps", type=positive(), nargs="+", default=[25, 50])
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 4.0])
    p.add_argument("--results", default=str(HERE / "results.jsonl"),
                   help="results log the rows are appended to (default: RESULTS.md's, beside this script)")
    args = p.parse_args(argv)
    if args.make_vae:
        return make_vae(Path(args.make_vae))
    if not (args.ckpt and args.out):
        raise UserError("give --ckpt and --out (or --make-vae DIR)")
    from diffusers import DiTPipeline

    from dit.autoencoders import load_autoencoder
    from dit.io.checkpoint import load_model
    from dit.processes import process_from_meta

    export(args.ckpt, args.out)
    log = ResultsLog(Path(args.results))
    train = train_row(Path(args.ckpt))
    if train is not None and not log.find(kind="train", run=train["run"], max_steps=train["max_steps"]):
        log.add(**train)
    model, ckpt = load_model(args.ckpt)
    process, vae = process_from_meta(ckpt.meta), load_autoencoder(ckpt.meta["vae"])
    seeds = list(range(SEED0, SEED0 + args.samples))
    labels = [i % model.num_classes for i in range(args.samples)]
    pipe, patched = DiTPipeline.from_pretrained(args.out), DiTPipeline.from_pretrained(args.out)
    for block in patched.transformer.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0  # DiT's convention
    for p_ in (pipe, patched):
        p_.set_progress_bar_config(disable=True)
    for steps in args.steps:
        for cfg in args.cfg:
            unit = {"kind": "psnr", "ckpt": args.ckpt, "steps": steps, "cfg": cfg, "samples": args.samples}
            if log.find(**unit):
                print(f"already recorded: {json.dumps(unit)}")
                continue
            mine = ours(model, vae, process, seeds, labels, steps, cfg)
            s, f = compare(mine, stock(pipe, labels, seeds, steps, cfg)), compare(mine, stock(patched, labels, seeds, steps, cfg))
            log.add(**unit, seeds=seeds, labels=f"i mod {model.num_classes}", export=args.out,
                    image_size=int(mine[0].shape[1]), latent_shape=list(model.input_shape),
                    params=sum(q.numel() for q in model.parameters()),
                    saturated_share_ours=float(np.mean(np.abs(mine[1]) >= 1)),
                    psnr_stock=s["psnr"], mean_abs_stock=s["mean_abs"], max_abs_stock=s["max_abs"],
                    float_max_abs_stock=s["float_max_abs"], float_mean_abs_stock=s["float_mean_abs"],
                    psnr_patched=f["psnr"], identical_patched=f["identical"], mean_abs_patched=f["mean_abs"],
                    max_abs_patched=f["max_abs"], float_max_abs_patched=f["float_max_abs"],
                    float_mean_abs_patched=f["float_mean_abs"])


if __name__ == "__main__":
    sys.exit(run_cli(main))
