"""The autoencoder between pixels and the latents DiT models: the one place its constants live.

Conventions (DiT §4, following LDM): images are float tensors in [-1, 1], NCHW, RGB.
Latents are `(vae.encode(x).latent_dist.sample() - shift) * scale` with scale 0.18215 and shift 0
for the Stable Diffusion VAEs (sd-vae-ft-ema / -mse), 4 channels, 8x smaller per side; decoding
inverts it first. Both come from the VAE's own config (`scaling_factor`, `shift_factor`: later VAEs
such as SD3's set a shift), LDM's 0.18215 where an older config records none. `none` keeps pixel
space (3 channels, identity), as in the paper's pixel-space ablations.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch

from dit.errors import UserError

LATENT_SCALE = 0.18215  # LDM's scale for the SD VAE: makes latents roughly unit variance
VAE_SOURCES = {
    "ema": "stabilityai/sd-vae-ft-ema",  # DiT's headline results (Table 2)
    "mse": "stabilityai/sd-vae-ft-mse",  # DiT's scaling study (Table 4)
}
PIXEL = "none"
DEFAULT_VAE = "ema"


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


class Autoencoder:
    """Encode images to DiT latents and decode them back (or the identity in pixel space)."""

    def __init__(self, vae=None, scale: float = LATENT_SCALE, name: str = PIXEL, shift: float = 0.0):
        self.vae = vae
        self.scale = scale
        self.shift = shift
        self.name = name

    @classmethod
    def load(cls, name: str = DEFAULT_VAE, device="cpu", dtype=torch.float32) -> "Autoencoder":
        """`name`: "ema", "mse", "none", a Hugging Face hub id, or a local diffusers directory."""
        if name == PIXEL:
            return cls(None, 1.0, PIXEL)
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
        return cls(vae, scale, name, shift)

    def describe(self) -> dict:
        """What a latent depends on: the VAE (name as given, and where it came from), scale and shift."""
        return {"vae": self.name, "vae_source": VAE_SOURCES.get(self.name, self.name), "scale": self.scale,
                "shift": self.shift}

    @property
    def latent_channels(self) -> int:
        return 3 if self.vae is None else int(self.vae.config.latent_channels)

    @property
    def downsample(self) -> int:
        return 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_size(self, image_size: int) -> int:
        if image_size <= 0 or image_size % self.downsample:
            raise UserError(
                f"image size {image_size} is not a positive multiple of the VAE's downsampling factor "
                f"{self.downsample}; use e.g. 256 or 512"
            )
        return image_size // self.downsample

    def _vae_dtype(self):
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode_moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled mean and std of q(z|x), so a cache can draw a fresh latent every epoch."""
        if self.vae is None:
            return images, torch.zeros_like(images)
        dist = self.vae.encode(images.to(self._vae_dtype())).latent_dist
        return (dist.mean.float() - self.shift) * self.scale, dist.std.float() * self.scale

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        mean, std = self.encode_moments(images)
        if self.vae is None:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return latents.float()
        return self.vae.decode((latents / self.scale + self.shift).to(self._vae_dtype())).sample.float()
