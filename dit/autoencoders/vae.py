"""The autoencoder between pixels and the latents DiT models: the one place its constants live.

Conventions (DiT §4, following LDM): images are float tensors in [-1, 1], NCHW, RGB.
Latents are `(vae.encode(x).latent_dist.sample() - shift) * scale` with scale 0.18215 and shift 0
for the Stable Diffusion VAEs (sd-vae-ft-ema / -mse), 4 channels, 8x smaller per side; decoding
inverts it first. Both come from the VAE's own config (`scaling_factor`, `shift_factor`: later VAEs
such as SD3's set a shift), LDM's 0.18215 where an older config records none. `none` keeps pixel
space (3 channels, identity), as in the paper's pixel-space ablations.

A trained VQ tokenizer (train_vq.py) loads through `Autoencoder.load` too, as a TokenAutoencoder
(dit/autoencoders/vq.py) between pixels and token ids; its interface is written down there.

Optionally (`ChannelNorm`, LightningDiT / EDM2) the scaled latents are further normalised per
channel, z' = (z - mean_c) / std_c, with statistics measured over a latent cache: one scalar leaves
the SD VAE's channels at different offsets and spreads. Encoding applies it, decoding inverts it
before the VAE; checkpoints record it (`NORM_KEYS`) so sampling rebuilds the same latent space.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path

import torch

from dit.errors import UserError
from dit.layout import CLIP_DIMS

LATENT_SCALE = 0.18215  # LDM's scale for the SD VAE: makes latents roughly unit variance
VAE_SOURCES = {
    "ema": "stabilityai/sd-vae-ft-ema",  # DiT's headline results (Table 2)
    "mse": "stabilityai/sd-vae-ft-mse",  # DiT's scaling study (Table 4)
}
PIXEL = "none"
DEFAULT_VAE = "ema"
LATENT_NORMS = ("scalar", "channel")  # TrainConfig.latent_norm: the scale alone, or ChannelNorm on top of it
NORM_KEYS = ("channel_mean", "channel_std")  # how a checkpoint (and a cache's statistics) record a ChannelNorm


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


class ChannelNorm:
    """z' = (z - mean_c) / std_c over channel c of (already scaled) latents shaped (..., C, H, W).

    Holds plain floats and two small tensors, so data-loader workers can carry it cheaply."""

    def __init__(self, mean, std):
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        if not self.mean or len(self.mean) != len(self.std) or not all(map(math.isfinite, self.mean + self.std)) \
                or min(self.std) <= 0:
            raise UserError(f"bad per-channel latent statistics (mean {self.mean}, std {self.std}): one finite mean "
                            "and one positive std per channel are needed")
        self._mean = torch.tensor(self.mean).view(-1, 1, 1)
        self._std = torch.tensor(self.std).view(-1, 1, 1)

    @classmethod
    def from_meta(cls, meta: dict) -> "ChannelNorm | None":
        """The normalisation recorded in `meta`; None where there is none (scalar runs, older files)."""
        if meta.get(NORM_KEYS[0]) is None:
            return None
        return cls(*(meta[k] for k in NORM_KEYS))

    def describe(self) -> dict:
        return dict(zip(NORM_KEYS, (self.mean, self.std)))

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self._mean.to(z)) / self._std.to(z)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self._std.to(z) + self._mean.to(z)

    def moments(self, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior after the map: an affine map shifts the mean and divides the spread."""
        return self.normalize(mean), std / self._std.to(std)


class Autoencoder:
    """Encode images to DiT latents and decode them back (or the identity in pixel space)."""

    kind = "latents"  # continuous latents (C, h, w); a VQ tokenizer's is "tokens" (dit/autoencoders/vq.py)

    def __init__(self, vae=None, scale: float = LATENT_SCALE, name: str = PIXEL, shift: float = 0.0,
                 channel_norm: ChannelNorm | None = None):
        self.vae = vae
        self.scale = scale
        self.shift = shift
        self.name = name
        self.channel_norm = channel_norm

    @classmethod
    def load(cls, name: str = DEFAULT_VAE, device="cpu", dtype=torch.float32) -> "Autoencoder":
        """`name`: "ema", "mse", "none", a Hugging Face hub id, or a local diffusers directory; or a
        train_vq.py run, checkpoint or export, which gives a TokenAutoencoder (dit/autoencoders/vq.py:
        kind "tokens", encode -> ids, decode <- ids)."""
        if name == PIXEL:
            return cls(None, 1.0, PIXEL)
        if name not in VAE_SOURCES:
            from dit.autoencoders.vq import TokenAutoencoder, tokenizer_file

            if tokenizer_file(name) is not None:
                return TokenAutoencoder.load(name, device, dtype)
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
        """What a latent depends on: the VAE (name as given, and where it came from), scale and shift,
        and the per-channel normalisation when there is one."""
        return {"vae": self.name, "vae_source": VAE_SOURCES.get(self.name, self.name), "scale": self.scale,
                "shift": self.shift, **self.norm_meta()}

    def norm_meta(self) -> dict:
        """What a checkpoint records beside the VAE's name so that sampling decodes the same latents."""
        return {} if self.channel_norm is None else self.channel_norm.describe()

    def with_norm(self, channel_norm: ChannelNorm | None) -> "Autoencoder":
        """This autoencoder with `channel_norm` applied on encode and inverted on decode (None: none)."""
        if channel_norm is not None and len(channel_norm.mean) != self.latent_channels:
            raise UserError(f"the per-channel latent statistics have {len(channel_norm.mean)} channels but the VAE "
                            f"{self.name} gives {self.latent_channels}; use the VAE they were measured with")
        self.channel_norm = channel_norm
        return self

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

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """One image's latent (C, h, w) (a tokenizer's: its (h, w) grid of ids)."""
        side = self.latent_size(image_size)
        return (self.latent_channels, side, side)

    def _vae_dtype(self):
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode_moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled (and channel-normalised) mean and std of q(z|x), so a cache can draw a fresh latent every
        epoch. Clips (B, F, C, H, W) are encoded frame by frame (Latte's per-frame latents)."""
        if images.dim() == CLIP_DIMS:
            mean, std = self.encode_moments(images.flatten(0, 1))
            return mean.unflatten(0, images.shape[:2]), std.unflatten(0, images.shape[:2])
        if self.vae is None:
            mean, std = images, torch.zeros_like(images)
        else:
            dist = self.vae.encode(images.to(self._vae_dtype())).latent_dist
            mean, std = (dist.mean.float() - self.shift) * self.scale, dist.std.float() * self.scale
        return (mean, std) if self.channel_norm is None else self.channel_norm.moments(mean, std)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        mean, std = self.encode_moments(images)
        if self.vae is None:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() == CLIP_DIMS:  # frame by frame
            return self.decode(latents.flatten(0, 1)).unflatten(0, latents.shape[:2])
        if self.channel_norm is not None:
            latents = self.channel_norm.denormalize(latents)
        if self.vae is None:
            return latents.float()
        return self.vae.decode((latents / self.scale + self.shift).to(self._vae_dtype())).sample.float()
