"""Autoencoders between pixels and what the network models.

    base.py       the Autoencoder contract every caller reads (and ChannelNorm, the optional per-channel map)
    catalog.py    the kinds: how each recognises a name and loads it; load_autoencoder(name, device, dtype)
    pixels.py     the pixel convention ([-1, 1] float NCHW inside, uint8 NHWC outside); pixel space ("none")
    vae.py        the Stable Diffusion VAE (diffusers AutoencoderKL, scale 0.18215)
    vq.py         a trained VQ tokenizer (train_vq.py) between pixels and token ids

Importing this package registers the built-in kinds.
"""

from dit.autoencoders.base import Autoencoder, ChannelNorm, ContinuousAutoencoder
from dit.autoencoders.catalog import (AUTOENCODERS, DEFAULT_VAE, AutoencoderKind, autoencoder_kind, load_autoencoder,
                                       peek_autoencoder, register_autoencoder)

from dit.autoencoders.pixels import KIND as _PIXELS
from dit.autoencoders.vae import KIND as _DIFFUSERS_VAE, NAMED_KIND as _SD_VAE
from dit.autoencoders.vq import KIND as _VQ_TOKENIZER

register_autoencoder(_PIXELS)
register_autoencoder(_SD_VAE)
register_autoencoder(_VQ_TOKENIZER)
register_autoencoder(_DIFFUSERS_VAE)

__all__ = ["AUTOENCODERS", "DEFAULT_VAE", "Autoencoder", "AutoencoderKind", "ChannelNorm", "ContinuousAutoencoder",
           "autoencoder_kind", "load_autoencoder", "peek_autoencoder", "register_autoencoder"]
