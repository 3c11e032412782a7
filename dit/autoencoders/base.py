"""The autoencoder contract: what every caller may read of the map between pixels and what the
network models, so that no caller asks which autoencoder it holds.

Images are float NCHW RGB in [-1, 1] (dit/autoencoders/pixels.py); clips (B, F, C, H, W) are
encoded and decoded frame by frame. An autoencoder declares:

    name                 as given to load_autoencoder: what checkpoints and caches record under "vae"
    source               where it came from (a hub id, a directory, a file); a cache records it too
    data_kind            CONTINUOUS float latents (C, h, w), or TOKENS integer ids (h, w) (dit/layout.py)
    identity             encode is the identity (pixel space): nothing to cache, nothing to encode in training
    stochastic           encode draws z ~ N(mean, std^2) of encode_moments; training draws that noise from
                         the data stream (per-sample seeds) instead of encode's generator
    has_moments          encode_moments gives the (mean, std) a latent cache stores; False: a cache stores
                         the ids of encode (a tokenizer: its codes have no posterior)
    codebook_size        K of a TOKENS kind (ids 0..K-1), None for continuous latents
    image_size           the size it was trained at, where it records one (else None)
    weights_file         a local file whose bytes decide what decode gives, recorded (sha256) beside samples;
                         None where the name alone decides (pixels, the SD VAEs)
    diffusers_vae        the diffusers AutoencoderKL a DiTPipeline export can carry, or None (not exportable)
    scale, shift         z = (raw - shift) * scale, recorded by a cache (1 and 0 where there is no such map)
    latent_channels      C of continuous latents, None for ids
    downsample           f: one latent (or id) per f x f pixels
    latent_size(size), latent_shape(size)   size / f (a UserError where f does not divide it) and one sample's
                         shape, what a process draws in: (C, size / f, size / f), or (size / f, size / f) ids
    encode(images, generator=None), decode(latents)
    encode_moments(images) -> (mean, std)   where has_moments; a UserError otherwise
    describe()           what a cached latent depends on (a latent cache's settings)
    norm_meta(), with_norm(channel_norm)    the optional per-channel normalisation (ChannelNorm, below) a
                         checkpoint records and sampling re-applies; a tokenizer refuses one

A new kind subclasses Autoencoder (token ids) or ContinuousAutoencoder (float latents: it implements
encode_image_moments and decode_image, the base does clips and the normalisation), and registers how
it recognises a name and loads it (dit/autoencoders/catalog.py).

ChannelNorm (LightningDiT / EDM2): z' = (z - mean_c) / std_c over the channels of already scaled
latents; one scalar leaves the SD VAE's channels at different offsets and spreads. Encoding applies
it, decoding inverts it first; checkpoints record it (`NORM_KEYS`), its statistics are measured
over a latent cache.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from dit.errors import UserError
from dit.layout import CLIP_DIMS, CONTINUOUS, TOKENS

LATENT_NORMS = ("scalar", "channel")  # TrainConfig.latent_norm: the scale alone, or ChannelNorm on top of it
NORM_KEYS = ("channel_mean", "channel_std")  # how a checkpoint (and a cache's statistics) record a ChannelNorm


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


class Autoencoder(ABC):
    """Pixels <-> what the network models (the module docstring lists the contract)."""

    data_kind: str = CONTINUOUS
    identity = False
    stochastic = False
    has_moments = True
    codebook_size: int | None = None
    image_size: int | None = None
    scale, shift = 1.0, 0.0
    channel_norm: ChannelNorm | None = None
    # How latent_size's error names it, and what it suggests.
    noun, size_hint = "the VAE", "; use e.g. 256 or 512"

    def __init__(self, name: str, source: str | None = None):
        self.name = name
        self.source = name if source is None else source

    @classmethod
    def load(cls, name: str | None = None, device="cpu", dtype=torch.float32) -> "Autoencoder":
        """An alias of dit.autoencoders.load_autoencoder (`name` None: the default VAE), for older callers."""
        from dit.autoencoders.catalog import DEFAULT_VAE, load_autoencoder

        return load_autoencoder(DEFAULT_VAE if name is None else name, device, dtype)

    @property
    def kind(self) -> str:
        """Older callers' word for data_kind: "tokens" or "latents". New code reads data_kind."""
        return "tokens" if self.data_kind == TOKENS else "latents"

    @property
    def weights_file(self) -> Path | None:
        return None

    @property
    def diffusers_vae(self):
        return None

    @property
    @abstractmethod
    def latent_channels(self) -> int | None: ...

    @property
    @abstractmethod
    def downsample(self) -> int: ...

    def latent_size(self, image_size: int) -> int:
        if image_size <= 0 or image_size % self.downsample:
            raise UserError(f"image size {image_size} is not a positive multiple of {self.noun}'s downsampling "
                            f"factor {self.downsample}{self.size_hint}")
        return image_size // self.downsample

    @abstractmethod
    def latent_shape(self, image_size: int, width: int | None = None) -> tuple[int, ...]:
        """One encoded sample of an image_size x width image (width None: square)."""

    @abstractmethod
    def encode(self, images: torch.Tensor, generator=None) -> torch.Tensor: ...

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def encode_moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise UserError(f"{self.name} gives no posterior moments to cache; store what encode() gives")

    def describe(self) -> dict:
        return {"vae": self.name, "vae_source": self.source, "scale": self.scale, "shift": self.shift,
                **self.norm_meta()}

    def norm_meta(self) -> dict:
        """What a checkpoint records beside the name so that sampling decodes the same latents."""
        return {} if self.channel_norm is None else self.channel_norm.describe()

    def with_norm(self, channel_norm: ChannelNorm | None) -> "Autoencoder":
        """This autoencoder with `channel_norm` applied on encode and inverted on decode (None: none)."""
        if channel_norm is not None:
            raise UserError(f"{self.name} gives {self.data_kind} data, which take no per-channel normalisation "
                            "(--latent-norm scalar)")
        return self


class ContinuousAutoencoder(Autoencoder):
    """Float latents (C, h, w): a subclass maps one batch of images to its posterior moments and
    latents back to images; clips and the channel normalisation are done here."""

    @abstractmethod
    def encode_image_moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> scaled mean and std (B, C, h, w) of q(z|x) (std 0 where encode is deterministic)."""

    @abstractmethod
    def decode_image(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, h, w) -> float images (B, 3, H, W)."""

    def latent_shape(self, image_size: int, width: int | None = None) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size(image_size), self.latent_size(width or image_size))

    def with_norm(self, channel_norm: ChannelNorm | None) -> "ContinuousAutoencoder":
        if channel_norm is not None and len(channel_norm.mean) != self.latent_channels:
            raise UserError(f"the per-channel latent statistics have {len(channel_norm.mean)} channels but the VAE "
                            f"{self.name} gives {self.latent_channels}; use the VAE they were measured with")
        self.channel_norm = channel_norm
        return self

    @torch.no_grad()
    def encode_moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled (and channel-normalised) mean and std of q(z|x), so a cache can draw a fresh latent every
        epoch. Clips (B, F, C, H, W) are encoded frame by frame (Latte's per-frame latents)."""
        if images.dim() == CLIP_DIMS:
            mean, std = self.encode_moments(images.flatten(0, 1))
            return mean.unflatten(0, images.shape[:2]), std.unflatten(0, images.shape[:2])
        mean, std = self.encode_image_moments(images)
        return (mean, std) if self.channel_norm is None else self.channel_norm.moments(mean, std)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        mean, std = self.encode_moments(images)
        if not self.stochastic:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() == CLIP_DIMS:  # frame by frame
            return self.decode(latents.flatten(0, 1)).unflatten(0, latents.shape[:2])
        if self.channel_norm is not None:
            latents = self.channel_norm.denormalize(latents)
        return self.decode_image(latents)
