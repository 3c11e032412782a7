"""A VQ tokenizer (`--arch vq-tokenizer`, trained by train_vq.py): images <-> grids of codebook ids.

The network is diffusers' `VQModel` (its Encoder, quant_conv, codebook table, post_quant_conv and
Decoder; the state dict keeps diffusers' key layout under `vq.`), but the quantisation step is ours:
diffusers' `VQModel.forward` returns its `VectorQuantizer`'s loss, built with `legacy=True`, which
puts beta on the wrong term (diffusers/models/autoencoders/vae.py, VectorQuantizer.forward):

    legacy:   mean((sg[z_q] - z)^2) + beta mean((z_q - sg[z])^2)   encoder pulled with weight 1, codebook with beta
    VQ-VAE:   mean((sg[z] - z_q)^2) + beta mean((z - sg[z_q])^2)   codebook weight 1, commitment beta

(van den Oord et al. 2017, eq. 3; `VQModel.__init__` hard-codes `VectorQuantizer(..., beta=0.25)`, so
legacy=False cannot be asked for). Here the network only quantises; the loss, with the commitment
term on the encoder, is the training objective's (dit/training/vq_objective.py).

    z_e = quant_conv(encoder(x))          (B, D, h, w), h = H / f
    ids = argmin_k ||z_e - e_k||^2        (B, h, w) in 0..K-1, computed in float32 without gradient
    z_q = e[ids]                          (B, D, h, w), the gradient reaches the codebook only here
    x^  = decoder(post_quant_conv(z_e + sg[z_q - z_e]))   the straight-through estimator (VQ-VAE §3.1)

Presets (`--model VQ-{T,S,B}/f`, f the downsampling factor, as DiT's /p is its patch): per-level
channel multipliers of a base width (`--hidden-size`), `--depth` residual layers per level.
VQ-B/16 has the widths and depths of taming-transformers' VQGAN f16 (width 128, multipliers 1,1,2,2,4,
two layers, 256-dim codes; VQ-Diffusion's tokenizers are such VQGANs), without VQGAN's attention at the
16x16 level (diffusers' DownEncoderBlock2D has none) and without its perceptual and GAN losses.

The buffers `usage`, `initialized` and `updates` are training statistics of the codebook (k-means
init done, per-code usage, forwards seen), kept in the state dict so that a resumed run continues
exactly; inference never reads them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from dit.errors import UserError
from dit.networks.base import TOKENIZER
from dit.networks.dit_config import config_from_dict
from dit.networks.catalog import Architecture

KEY = "vq-tokenizer"  # the registry key, defined once: import it rather than repeat it
# Base width, per-level multipliers (level i has width * mult[i]; len(mult) - 1 downsamplings at most),
# residual layers per level, encoder output channels, codebook vector dimension.
PRESETS = {
    "VQ-T": dict(width=32, mult=(1, 2, 2, 2, 4), layers_per_block=1, latent_channels=32, codebook_dim=32),
    "VQ-S": dict(width=64, mult=(1, 1, 2, 2, 4), layers_per_block=2, latent_channels=128, codebook_dim=128),
    "VQ-B": dict(width=128, mult=(1, 1, 2, 2, 4), layers_per_block=2, latent_channels=256, codebook_dim=256),
}
FACTORS = (1, 2, 4, 8, 16)
MODEL_NAMES = [f"{base}/{f}" for base in PRESETS for f in FACTORS]
DISTANCE_CHUNK = 16384  # rows of the (N, K) distance matrix computed at once


@dataclass(frozen=True)
class VQConfig:
    image_size: int = 16
    in_channels: int = 3
    block_out_channels: tuple[int, ...] = (32, 64)  # one level per entry; len - 1 downsamplings by 2
    layers_per_block: int = 1
    latent_channels: int = 32  # encoder output (before quant_conv) and decoder input channels
    codebook_dim: int = 32  # D, the dimension of a codebook vector (diffusers' vq_embed_dim)
    codebook_size: int = 256  # K
    norm_num_groups: int = 8
    mid_attention: bool = True  # the single-head self-attention in the middle block (diffusers' default)

    def __post_init__(self):
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        for name in ("image_size", "in_channels", "layers_per_block", "latent_channels", "codebook_dim",
                     "norm_num_groups"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"vq-tokenizer {name} must be a positive integer, got {v!r}")
        K = self.codebook_size
        if not isinstance(K, int) or isinstance(K, bool) or K < 2:
            raise UserError(f"the codebook size must be an integer >= 2 (--codebook-size), got {K!r}")
        chans = self.block_out_channels
        if not chans or any(not isinstance(c, int) or c < 1 or c % self.norm_num_groups for c in chans):
            raise UserError(f"vq-tokenizer block_out_channels {chans} must be positive multiples of "
                            f"norm_num_groups {self.norm_num_groups}")
        if self.image_size % self.downsample:
            raise UserError(f"image size {self.image_size} is not a multiple of the tokenizer's factor {self.downsample}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def grid_size(self) -> int:
        """Side of the token grid, image_size / f."""
        return self.image_size // self.downsample

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VQConfig":
        return config_from_dict(cls, d, KEY)


def nearest(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean) for each row: z (N, D), codes (K, D) -> (N,) long.
    float32 whatever the autocast, in chunks of rows (the (N, K) matrix of 65K tokens x 2,886 codes
    is 750 MB); ties go to the lowest index."""
    z, codes = z.float(), codes.float()
    sq = (codes * codes).sum(1)  # (K,)
    out = []
    with torch.autocast(z.device.type, enabled=False):
        for chunk in z.split(DISTANCE_CHUNK):
            # ||z||^2 is the same for every code of a row: argmin of ||e||^2 - 2 z.e
            out.append((sq - 2 * chunk @ codes.T).argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=z.device)


class VQTokenizer(nn.Module):
    """forward (training): x (B, 3, H, W) in [-1, 1] -> {"recon", "z_e", "z_q", "ids"}; encode / decode
    between images and ids (B, h, w)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        from diffusers import VQModel

        self.config = cfg
        self.num_classes, self.null_class = 0, None  # it reads no label
        levels = len(cfg.block_out_channels)
        self.vq = VQModel(
            in_channels=cfg.in_channels, out_channels=cfg.in_channels, down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=cfg.block_out_channels,
            layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels, sample_size=cfg.image_size,
            num_vq_embeddings=cfg.codebook_size, norm_num_groups=cfg.norm_num_groups, vq_embed_dim=cfg.codebook_dim,
            mid_block_add_attention=cfg.mid_attention,
        )
        K = cfg.codebook_size
        self.register_buffer("usage", torch.zeros(K))  # EMA of the share of tokens each code takes
        self.register_buffer("initialized", torch.zeros((), dtype=torch.long))  # 1 once k-means has run
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # training forwards seen

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.config.in_channels, self.config.image_size, self.config.image_size)

    @property
    def codebook(self) -> torch.Tensor:
        """The (K, D) codebook, diffusers' `quantize.embedding.weight` (a Parameter)."""
        return self.vq.quantize.embedding.weight

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """z_e = quant_conv(encoder(x)): (B, 3, H, W) -> (B, D, h, w)."""
        return self.vq.quant_conv(self.vq.encoder(x))

    def quantize(self, z_e: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> ids (B, h, w) of the nearest codes (no gradient)."""
        B, D, h, w = z_e.shape
        with torch.no_grad():
            ids = nearest(z_e.detach().permute(0, 2, 3, 1).reshape(-1, D), self.codebook)
        return ids.view(B, h, w)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) -> code vectors (B, D, h, w); differentiable in the codebook."""
        return nn.functional.embedding(ids, self.codebook).permute(0, 3, 1, 2)

    def decode_vectors(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> images (B, 3, H, W)."""
        return self.vq.decoder(self.vq.post_quant_conv(z))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(self.encode_latents(x))

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        K = self.config.codebook_size
        if ids.dtype not in (torch.int16, torch.int32, torch.int64, torch.uint8):
            raise ValueError(f"the tokenizer decodes integer ids, got {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= K):
            raise ValueError(f"token ids must be in 0..{K - 1} (K = {K}; K itself is vq-diffusion's [MASK]), "
                             f"got {int(ids.min())}..{int(ids.max())}")
        return self.decode_vectors(self.lookup(ids.long()))

    def forward(self, x: torch.Tensor, t=None, cond=None) -> dict:
        if t is not None:  # a generator's process calls network(x_t, t, cond)
            raise UserError(f"a {KEY} network is trained by train_vq.py and used as an autoencoder (--vae RUN_DIR), "
                            "not by a diffusion process")
        z_e = self.encode_latents(x)
        ids = self.quantize(z_e)
        z_q = self.lookup(ids)
        recon = self.decode_vectors(z_e + (z_q - z_e).detach())  # straight-through: d recon / d z_e = d recon / d z_q
        return {"recon": recon, "z_e": z_e, "z_q": z_q, "ids": ids}


# --- The registry entry -----------------------------------------------------------------------------

@dataclass(frozen=True)
class VQSection:
    """The tokenizer's training flags (`--arch vq-tokenizer`, train_vq.py; the loss: dit/training/vq_objective.py)."""

    # K, token ids 0..K-1: the tokenizer's codebook, declared alike by token-dit and the vq-diffusion process
    # (0: unset; the presets set it)
    codebook_size: int = 0
    codebook_dim: int = 0  # dimension of a codebook vector (0: the --model preset's)
    commitment: float = 0.25  # beta of VQ-VAE's commitment term beta ||z_e - sg[e]||^2 (van den Oord et al. 2017, eq. 3)
    kmeans_iters: int = 10  # Lloyd iterations initialising the codebook on the first batch's encoder outputs (0: random init)
    restart_every: int = 100  # every N training forwards, re-seed dead codes from the batch's encoder outputs (0: never)
    dead_code_threshold: float = 0.1  # dead: usage (EMA of the share of tokens) below this fraction of 1/K

    def __post_init__(self):
        if self.codebook_dim < 0:
            raise UserError(f"--codebook-dim must be >= 0 (0: the preset's), got {self.codebook_dim}")
        if self.commitment < 0:
            raise UserError(f"--commitment must be >= 0, got {self.commitment}")
        for name in ("kmeans_iters", "restart_every"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0 (0: off), got {getattr(self, name)}")
        if not 0 <= self.dead_code_threshold < 1:
            raise UserError(f"--dead-code-threshold must be in [0, 1) (a share of 1/K), got {self.dead_code_threshold}")


def preset_config(name: str, image_size: int, codebook_size: int, width: int | None = None,
                  layers_per_block: int | None = None, codebook_dim: int | None = None) -> VQConfig:
    """`VQ-T/2` etc. at `image_size` pixels, with an optional base width, layers per level and code dimension."""
    if name not in MODEL_NAMES:
        raise UserError(f"unknown tokenizer model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    base, _, f = name.partition("/")
    p = PRESETS[base]
    width = width or p["width"]
    levels = int(math.log2(int(f))) + 1
    chans = tuple(width * m for m in p["mult"][:levels])
    groups = math.gcd(32, *chans)  # diffusers' 32 groups where the widths allow
    return VQConfig(image_size=image_size, block_out_channels=chans, layers_per_block=layers_per_block or
                    p["layers_per_block"], latent_channels=p["latent_channels"],
                    codebook_dim=codebook_dim or p["codebook_dim"], codebook_size=codebook_size,
                    norm_num_groups=groups)


def factor_of(model: str) -> int:
    """The downsampling factor f a `--model VQ-*/f` name gives."""
    if model not in MODEL_NAMES:
        raise UserError(f"unknown tokenizer model {model!r}; choose one of {', '.join(MODEL_NAMES)}")
    return int(model.rpartition("/")[2])


def config_for_run(run, data: dict) -> VQConfig:
    """The tokenizer of a training run: `--model VQ-*/f`, --hidden-size (base width), --depth (layers
    per level), --codebook-dim, --codebook-size, on pixel images (data in_channels 3, no autoencoder)."""
    if data.get("downsample", 1) != 1:
        raise UserError("a tokenizer is trained on pixels: pass --vae none")
    f = factor_of(run.model)
    side = data["input_size"]
    if side % f:
        raise UserError(f"image size {side} is not a multiple of {run.model}'s factor {f}; use a multiple of {f}")
    return preset_config(run.model, side, run.codebook_size, run.hidden_size, run.depth, run.codebook_dim or None)


def check_run(run) -> None:
    if run.model not in MODEL_NAMES:  # first: a generator's preset (train.py --arch vq-tokenizer) ends here
        raise UserError(f"unknown tokenizer model {run.model!r} (tokenizers are trained by train_vq.py, --model "
                        f"VQ-{{T,S,B}}/f); choose one of {', '.join(MODEL_NAMES)}")
    if run.vae != "none":
        raise UserError(f"a tokenizer maps pixels to tokens: pass --vae none (got --vae {run.vae})")
    if run.distributed != "ddp":
        raise UserError("--distributed fsdp: the tokenizer is small and its codebook is rewritten in place "
                        "(k-means init, dead-code restarts); use --distributed ddp")
    config_for_run(run, {"input_size": run.image_size, "in_channels": 3})


def describe(cfg: VQConfig) -> str:
    return (f"VQ tokenizer f{cfg.downsample} (widths {list(cfg.block_out_channels)}, {cfg.layers_per_block} layers a "
            f"level) on {cfg.image_size}px: {cfg.grid_size}x{cfg.grid_size} ids of a {cfg.codebook_size} x "
            f"{cfg.codebook_dim} codebook")


ARCH = Architecture(
    key=KEY, config_from_dict=VQConfig.from_dict, build=VQTokenizer, config_for_run=config_for_run,
    check_run=check_run, describe=describe, section=VQSection,
    # it has no process, no attention heads and no normalisation of its (pixel) input
    ignores=("num_heads", "latent_norm", "process"), role=TOKENIZER,
)
