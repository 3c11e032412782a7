"""diffusers' DiTPipeline directories: what one says about how to sample its transformer.

A pipeline directory holds transformer/ (dit/io/diffusers_transformer.py converts it), scheduler/, vae/ and
model_index.json. dit/pipelines/export.py writes one; reading it back gives the same weights, betas and
VAE, so `sample.py --ckpt PIPELINE` draws the images of the checkpoint it was exported from.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dit.errors import UserError
from dit.networks.dit_config import ModelConfig


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
