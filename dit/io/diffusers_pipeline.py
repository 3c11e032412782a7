"""diffusers' DiTPipeline directories: write one from our model, and read back what one says.

A pipeline directory holds transformer/ (dit/io/diffusers.py converts it), scheduler/, vae/ and
model_index.json. Exporting and reading back are inverse: the same weights (diffusers.RECORD keeps
what diffusers' config cannot say), the same betas, the same VAE, so `sample.py --ckpt PIPELINE`
draws the images of the checkpoint it was exported from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from dit.errors import UserError
from dit.io.atomic import atomic_path
from dit.io.diffusers import check_exportable, config_to_diffusers, to_diffusers
from dit.networks.conditioning import IMAGENET_CLASSES
from dit.networks.dit_config import ModelConfig
from dit.sampling.schedulers import make_scheduler

# DiTPipeline.__call__ guides with `class_null = [1000] * batch` whatever the model: the exported
# label table always has 1001 rows, row 1000 being the model's null class.
PIPELINE_NULL_LABEL = IMAGENET_CLASSES


def save_diffusers_pipeline(model, vae, diffusion, out, class_names: list[str] | None = None) -> None:
    """Write a diffusers `DiTPipeline` directory: DiTTransformer2DModel + DDIM scheduler + the VAE.

    model: our DiT (check_exportable); vae: dit.autoencoders.vae.Autoencoder with a VAE (its
    AutoencoderKL is saved as the pipeline's `vae`, scaling_factor included); diffusion: the full
    T-step process, whose betas the scheduler reproduces. The scheduler is our `diffusers-ddim`
    sampler's (trailing spacing: the first step is t = T-1, as in all our samplers), so stock
    DiTPipeline with the same seeds and steps draws our `--sampler diffusers-ddim` samples, up to
    diffusers' timestep frequencies (dit/io/diffusers.py). Written to a temporary directory and
    renamed: `out` is either complete or absent.
    """
    from diffusers import DiTPipeline, DiTTransformer2DModel

    cfg = model.config
    check_exportable(cfg, pixel_space=vae.vae is None)
    transformer = DiTTransformer2DModel(**config_to_diffusers(cfg, table_classes=PIPELINE_NULL_LABEL))
    sd = to_diffusers(model.state_dict(), cfg.depth, cfg.conditioning, table_classes=PIPELINE_NULL_LABEL)
    transformer.load_state_dict(sd, strict=True)
    scheduler = make_scheduler("diffusers-ddim", diffusion)
    id2label = {i: name for i, name in enumerate(class_names)} if class_names else None
    vae.vae.register_to_config(scaling_factor=vae.scale)
    pipe = DiTPipeline(transformer=transformer.eval(), vae=vae.vae, scheduler=scheduler, id2label=id2label)
    if id2label:  # DiTPipeline does not record it itself; from_pretrained passes it back from model_index.json
        pipe.register_to_config(id2label={str(k): v for k, v in id2label.items()})
    with atomic_path(out) as tmp:
        try:
            pipe.save_pretrained(str(tmp), safe_serialization=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # atomic_path only removes files
            raise


def scheduler_betas(cfg: dict) -> list[float]:
    """The betas of a diffusers scheduler_config.json, as the process config {"betas": ...} takes them."""
    if cfg.get("prediction_type", "epsilon") != "epsilon":
        raise UserError(f"this pipeline's scheduler predicts {cfg['prediction_type']!r}; only epsilon-predicting "
                        "DiTs (DiT's Gaussian diffusion) can be read")
    if cfg.get("trained_betas") is not None:  # ours: float64 values, kept exactly
        return [float(b) for b in cfg["trained_betas"]]
    from diffusers import DDIMScheduler

    # A named schedule: the betas the pipeline's own scheduler computes from it (every diffusers
    # scheduler shares this computation, in float32).
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")
    return DDIMScheduler(**{k: cfg[k] for k in keys if k in cfg}).betas.to(torch.float64).tolist()


def pipeline_meta(root: Path, config: ModelConfig) -> dict:
    """Checkpoint meta for the DiTPipeline directory `root` whose transformer has `config`: its
    process (betas from scheduler/), VAE (vae/), image size and class names, as sample.py reads them."""
    meta = {"format": "diffusers"}
    sched = root / "scheduler" / "scheduler_config.json"
    if sched.is_file():
        meta.update(process="gaussian", process_config={"betas": scheduler_betas(json.loads(sched.read_text()))})
    vae_config = root / "vae" / "config.json"
    if vae_config.is_file():
        meta["vae"] = str((root / "vae").resolve())
        levels = len(json.loads(vae_config.read_text()).get("block_out_channels", [0]))
        meta["image_size"] = config.input_size * 2 ** (levels - 1)  # the VAE's factor, as Autoencoder.downsample
    names = json.loads((root / "model_index.json").read_text()).get("id2label") or {}
    if all(str(i) in names for i in range(config.num_classes)):
        meta["class_names"] = [names[str(i)] for i in range(config.num_classes)]
    return meta
