"""A trained VQ tokenizer as the autoencoder between pixels and token ids (VQ-Diffusion's space).

`load_autoencoder(name)` (dit/autoencoders/catalog.py) returns a `TokenAutoencoder` when `name` is a
train_vq.py run directory, one of its checkpoints (`checkpoints/step_*`, read through its
`ema.safetensors`) or an export (`export.safetensors`): a safetensors file whose header says
`"arch": "vq-tokenizer"`. Never a pickle.

What it answers of the contract (dit/autoencoders/base.py):
    data_kind = TOKENS                 ids, not float latents; has_moments False, stochastic False, identity False
    codebook_size                      K: ids are 0..K-1 (K itself is vq-diffusion's [MASK], never decoded)
    downsample, latent_size(size)      the factor f and the grid side size / f (a size f does not divide is a UserError)
    latent_shape(size)                 (size / f, size / f): one sample's ids, what a process draws in
    latent_channels                    None: ids have no channel axis
    image_size                         the size it was trained at
    weights_file                       the tokenizer's file: its bytes decide the images, recorded beside samples
    encode(images) -> ids              (B, 3, H, W) in [-1, 1] -> (B, h, w) long; clips (B, F, ...) frame
                                       by frame; deterministic (the nearest code), `generator` is ignored
    decode(ids) -> images              (B, h, w) integer ids -> (B, 3, H, W) float, about [-1, 1]
    scale = 1, shift = 0, channel_norm = None, norm_meta() = {}: nothing to record beside the name
    with_norm(None) is a no-op; a ChannelNorm is refused (ids are not normalised)
    encode_moments                     refused: ids have no posterior to cache; a cache stores the ids of `encode`
    describe()                         what a cache of ids depends on: name, file, K, f
    network (and `vae`, its older name) the tokenizer network; name: as given
"""

from __future__ import annotations

from pathlib import Path

import torch

from dit.autoencoders.base import Autoencoder
from dit.autoencoders.catalog import AutoencoderKind
from dit.errors import UserError
from dit.io.checkpoint import read_export_header as _header
from dit.layout import CLIP_DIMS, TOKENS
from dit.networks.vq_tokenizer import KEY as ARCH  # the tokenizer architecture's registry key

RUN_FILES = ("export.safetensors", "ema.safetensors")  # a run directory's export, a checkpoint's EMA


def tokenizer_file(name: str) -> Path | None:
    """The safetensors file of the tokenizer `name` names (a run directory, a checkpoint directory or an
    export), or None if `name` is not a tokenizer (then it may still be a VAE)."""
    path = Path(str(name)).expanduser()
    if path.is_dir():
        files = [path / n for n in RUN_FILES if (path / n).is_file()]
    elif path.is_file() and path.suffix == ".safetensors":
        files = [path]
    else:
        return None
    for f in files:
        meta = _header(f)
        if meta is not None and meta.get("arch") == ARCH:
            return f
    return None


def tokenizer_codebook_size(name: str) -> int | None:
    """K of the tokenizer `name` names, read from its file's header (no network is built); None if
    `name` is not a tokenizer. train.py fills --codebook-size from it before its config is checked."""
    path = tokenizer_file(name)
    if path is None:
        return None
    try:
        return int(_header(path)["model"]["codebook_size"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} records no tokenizer config; re-export it with train_vq.py") from None


class TokenAutoencoder(Autoencoder):
    """Images <-> token ids through a trained VQ tokenizer (see the module docstring)."""

    data_kind = TOKENS
    has_moments = False
    noun, size_hint = "the tokenizer", ""

    def __init__(self, network, name: str, source: str, meta: dict | None = None):
        super().__init__(name, source)
        self.network = network.eval().requires_grad_(False)
        self.meta = dict(meta or {})

    @classmethod
    def load(cls, name: str, device="cpu", dtype=torch.float32) -> "TokenAutoencoder":
        from safetensors.torch import load_file

        from dit.networks.vq_tokenizer import VQConfig, VQTokenizer

        path = tokenizer_file(name)
        if path is None:
            raise UserError(f"{name} is not a VQ tokenizer (a train_vq.py run directory, checkpoint or export)")
        meta = _header(path)
        try:
            config = VQConfig.from_dict(meta["model"])
        except (KeyError, TypeError):
            raise UserError(f"{path} records no tokenizer config; re-export it with train_vq.py") from None
        network = VQTokenizer(config)
        try:
            state = load_file(str(path))
            network.load_state_dict(state, strict=True)
        except Exception as e:  # noqa: BLE001 - a truncated file or other tensors: one line either way
            raise UserError(f"could not load the tokenizer {path} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
                from None
        return cls(network.to(device, dtype), str(name), str(path), meta)

    # --- what a latent space says about itself ---

    @property
    def codebook_size(self) -> int:
        return self.network.config.codebook_size

    @property
    def downsample(self) -> int:
        return self.network.config.downsample

    @property
    def latent_channels(self):
        return None

    @property
    def image_size(self) -> int:
        """The size the tokenizer was trained at (other multiples of `downsample` also encode)."""
        return self.network.config.image_size

    @property
    def weights_file(self) -> Path:
        return Path(self.source)

    def latent_shape(self, image_size: int, width: int | None = None) -> tuple[int, int]:
        return (self.latent_size(image_size), self.latent_size(width or image_size))

    def describe(self) -> dict:
        return {"vae": self.name, "vae_source": self.source, "scale": self.scale, "shift": self.shift,
                "codebook_size": self.codebook_size, "downsample": self.downsample}

    def with_norm(self, channel_norm) -> "TokenAutoencoder":
        if channel_norm is not None:
            raise UserError(f"{self.name} is a tokenizer: token ids take no per-channel normalisation "
                            "(--latent-norm scalar)")
        return self

    # --- pixels <-> ids ---

    def _dtype(self):
        return next(self.network.parameters()).dtype

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        if images.dim() == CLIP_DIMS:  # frame by frame
            return self.encode(images.flatten(0, 1)).unflatten(0, images.shape[:2])
        return self.network.encode(images.to(self._dtype()))

    def encode_moments(self, images: torch.Tensor):
        raise UserError(f"{self.name} is a tokenizer: its codes are the nearest codebook entries, with no posterior "
                        "moments to cache; store the ids of encode()")

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() == 4:  # clips (B, F, h, w), frame by frame
            return self.decode(ids.flatten(0, 1)).unflatten(0, ids.shape[:2])
        return self.network.decode(ids).float()


def _peek(name: str) -> dict:
    return {"data_kind": TOKENS, "codebook_size": tokenizer_codebook_size(name), "weights_file": tokenizer_file(name)}


KIND = AutoencoderKind("vq-tokenizer", lambda name: tokenizer_file(name) is not None,
                       lambda name, device, dtype: TokenAutoencoder.load(name, device, dtype), order=20, peek=_peek)
