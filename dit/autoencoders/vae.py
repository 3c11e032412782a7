"""The Stable Diffusion VAE between pixels and the latents DiT models: the one place its constants live.

Conventions (DiT §4, following LDM): images are float tensors in [-1, 1], NCHW, RGB.
Latents are `(vae.encode(x).latent_dist.sample() - shift) * scale` with scale 0.18215 and shift 0
for the Stable Diffusion VAEs (sd-vae-ft-ema / -mse), 4 channels, 8x smaller per side; decoding
inverts it first. Both come from the VAE's own config (`scaling_factor`, `shift_factor`: later VAEs
such as SD3's set a shift), LDM's 0.18215 where an older config records none. Optionally a
ChannelNorm (dit/autoencoders/base.py) normalises the scaled latents per channel.

Two registered kinds load it (dit/autoencoders/catalog.py): the names "ema" and "mse" early, and
last of all any other name as a hub id (org/name) or a local diffusers directory, so that a name
no kind recognises ends here with the reason it does not load.

The names callers imported from here before the contract moved to base.py (Autoencoder,
ChannelNorm, NORM_KEYS, LATENT_NORMS, PIXEL, DEFAULT_VAE) are still importable from here.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch

from dit.autoencoders.base import LATENT_NORMS, NORM_KEYS, Autoencoder, ChannelNorm, ContinuousAutoencoder
from dit.autoencoders.pixels import PIXEL
from dit.autoencoders.catalog import DEFAULT_VAE, AutoencoderKind
from dit.errors import UserError
from dit.layout import CONTINUOUS

__all__ = ["DEFAULT_VAE", "LATENT_NORMS", "LATENT_SCALE", "NORM_KEYS", "PIXEL", "VAE_SOURCES", "Autoencoder",
           "ChannelNorm", "DiffusersVAE", "load_vae"]

LATENT_SCALE = 0.18215  # LDM's scale for the SD VAE: makes latents roughly unit variance
VAE_SOURCES = {
    "ema": "stabilityai/sd-vae-ft-ema",  # DiT's headline results (Table 2)
    "mse": "stabilityai/sd-vae-ft-mse",  # DiT's scaling study (Table 4)
}


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the hub endpoint be opened? Checked before a download so that an
    offline machine fails at once instead of after the hub client's half-minute of retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def load_vae(name: str, device="cpu", dtype=torch.float32) -> "DiffusersVAE":
    """`name`: "ema", "mse", a Hugging Face hub id, or a local diffusers AutoencoderKL directory."""
    source = VAE_SOURCES.get(name, name)
    from diffusers import AutoencoderKL

    path = Path(source).expanduser()
    if path.exists() or not _is_hub_id(source):
        if not (path / "config.json").is_file():
            raise UserError(
                f"VAE '{name}' is not 'ema', 'mse', 'none', a hub id (org/name) or a directory holding a "
                f"diffusers AutoencoderKL (config.json + weights); check the name or path"
            )
        source = str(path)
    help_ = (f"On a machine with a network run `huggingface-cli download {source}` and copy the Hugging Face "
             f"cache (~/.cache/huggingface, or $HF_HOME) here, or pass --vae with a local diffusers "
             f"AutoencoderKL directory (config.json + weights)")
    try:
        try:  # the local cache first: offline, the hub client would retry for half a minute
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vae = AutoencoderKL.from_pretrained(source, torch_dtype=dtype, local_files_only=True)
        except OSError:
            if path.exists():
                raise
            if os.environ.get("HF_HUB_OFFLINE") or not _hub_reachable():
                raise UserError(f"the VAE '{source}' is not in the local Hugging Face cache and the hub "
                                f"cannot be reached. {help_}") from None
            print(f"downloading the VAE {source} from the Hugging Face hub", file=sys.stderr)
            vae = AutoencoderKL.from_pretrained(source, torch_dtype=dtype)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load the VAE '{source}' ({type(e).__name__}: the files are missing or "
                        f"broken). {help_}") from None
    vae.eval().requires_grad_(False).to(device)
    # Decode (and encode) one image at a time: a 512 px batch decoded at once needs gigabytes of
    # activations; slicing gives the same images (tests/test_hardening.py) at a fraction of the memory.
    vae.enable_slicing()
    # Older SD VAE configs carry no scaling_factor; diffusers then defaults to LDM's 0.18215.
    scale = float(getattr(vae.config, "scaling_factor", None) or LATENT_SCALE)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    return DiffusersVAE(vae, scale, name, shift)


class DiffusersVAE(ContinuousAutoencoder):
    """Images <-> (mean + std * eps - shift) * scale through a diffusers AutoencoderKL (the module docstring)."""

    stochastic = True  # z ~ q(z|x): training draws a fresh latent at every step (DiT §4)

    def __init__(self, vae, scale: float = LATENT_SCALE, name: str = DEFAULT_VAE, shift: float = 0.0,
                 channel_norm: ChannelNorm | None = None):
        super().__init__(name, VAE_SOURCES.get(name, name))
        self.vae = vae  # the AutoencoderKL
        self.scale, self.shift = scale, shift
        self.with_norm(channel_norm)

    @property
    def diffusers_vae(self):
        return self.vae

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _vae_dtype(self):
        return next(self.vae.parameters()).dtype

    def encode_image_moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(images.to(self._vae_dtype())).latent_dist
        return (dist.mean.float() - self.shift) * self.scale, dist.std.float() * self.scale

    def decode_image(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode((latents / self.scale + self.shift).to(self._vae_dtype())).sample.float()


def _continuous(name: str) -> dict:
    return {"data_kind": CONTINUOUS}


# The named SD VAEs before anything else looks at the name (a directory called "ema" stays the VAE);
# every other name last: a hub id or a diffusers directory, or the error that says what a name may be.
NAMED_KIND = AutoencoderKind("sd-vae", lambda name: name in VAE_SOURCES, load_vae, order=10, peek=_continuous)
KIND = AutoencoderKind("diffusers-vae", lambda name: True, load_vae, order=100, peek=_continuous)
