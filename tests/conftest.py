"""Shared tiny artifacts: a random AutoencoderKL saved with save_pretrained, tiny DiT exports."""

import sys
from pathlib import Path

import pytest
import torch
from dit.networks.dit import DiT

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the scripts (sample.py, train.py) are imported by the tests

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)


def randomize(model, seed=0, std=0.05):
    """Give every parameter (adaLN-Zero starts at exactly 0 output) a random value, pos_embed excepted."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory):
    """A 2x-downsampling AutoencoderKL with 4 latent channels: 16px images <-> 8x8x4 latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=16,
    )
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_vae_dir):
    """A tiny trained-looking DiT exported as safetensors with its config, for 16px images."""
    from dit.io.checkpoint import save_export
    from dit.networks.dit_config import ModelConfig

    model = randomize(DiT.from_config(ModelConfig(**TINY)))
    path = tmp_path_factory.mktemp("export") / "tiny.safetensors"
    save_export(path, model, image_size=16, vae=str(tiny_vae_dir))
    return path
