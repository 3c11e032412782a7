"""A noise-aware classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, ADM §4).

It reads the generator's own input (latents for latent models, pixels for pixel models: guidance
never differentiates through the VAE decoder) at the generator's network time t, and returns
logits over the classes. The architecture is DiT's, cut to what a classifier needs:
- the patch embedding and fixed 2-D sin-cos table of DiT §3.1;
- adaLN-Zero blocks (DiT §3.2) conditioned on the timestep embedding ONLY (the label is the
  output here, never an input), so every block starts as the identity;
- attention pooling: one query attends over the tokens, either a learned query ("query") or
  ADM's AttentionPool2d query, the mean token plus its own position ("mean-query");
- a LayerNorm and a linear head, zero-initialised: the untrained classifier says "uniform".

Presets (`--model`, patch after the slash): Classifier-T (the CPU size), -S, -B and -ADM, about
50M parameters at 32x32x4 latents, the size of ADM's ImageNet 256 classifier encoder.
The network contract (dit/networks/catalog.py) holds: forward(x, t, cond) with cond unused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from dit.errors import UserError
from dit.networks.base import CLASSIFIER, Blocks
from dit.networks.blocks import DiTBlock
from dit.networks.dit_config import PATCH_SIZES, check_image_size, config_from_dict
from dit.networks.layers import LN_EPS, PatchEmbed, TimestepEmbedder, get_2d_sincos_pos_embed, xavier_linears
from dit.networks.catalog import Architecture

POOLS = ("query", "mean-query")
PRESETS = {
    "Classifier-T": dict(depth=4, hidden_size=128, num_heads=2),
    "Classifier-S": dict(depth=6, hidden_size=384, num_heads=6),
    "Classifier-B": dict(depth=6, hidden_size=512, num_heads=8),
    "Classifier-ADM": dict(depth=4, hidden_size=832, num_heads=13),
}
MODEL_NAMES = [f"{base}/{p}" for base in PRESETS for p in PATCH_SIZES]


@dataclass(frozen=True)
class ClassifierConfig:
    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 384
    depth: int = 6
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    pool: str = "query"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise UserError(f"classifier {f.name} must be a positive integer, got {v!r}")
        if self.pool not in POOLS:
            raise UserError(f"unknown classifier pool {self.pool!r}; choose one of {', '.join(POOLS)}")
        if self.hidden_size % self.num_heads:
            raise UserError(f"classifier hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.hidden_size % 4:
            raise UserError(f"classifier hidden_size {self.hidden_size} must be a multiple of 4 (the 2-D sin-cos table)")
        if self.input_size % self.patch_size:
            raise UserError(f"a {self.input_size}x{self.input_size} input is not divisible by patch size {self.patch_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        return config_from_dict(cls, d, "classifier")


class AttentionPool(nn.Module):
    """Multi-head attention of one query over the tokens (N, T, D) -> (N, D)."""

    def __init__(self, dim: int, num_heads: int, pool: str, num_tokens: int):
        super().__init__()
        self.num_heads, self.pool = num_heads, pool
        self.query = nn.Parameter(torch.zeros(1, 1, dim))  # "query": learned; "mean-query": its position
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = self.query.expand(x.shape[0], -1, -1)
        if self.pool == "mean-query":  # ADM's AttentionPool2d: the mean token (plus a position) asks
            query = query + x.mean(dim=1, keepdim=True)
        q = rearrange(self.q(query), "b t (h d) -> b h t d", h=self.num_heads)
        k, v = rearrange(self.kv(x), "b s (two h d) -> two b h s d", two=2, h=self.num_heads)
        return self.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h t d -> b (t h d)"))


class NoisyClassifier(nn.Module, Blocks):
    """forward: x (N, C, H, W) at network time t (N,) -> logits (N, num_classes)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.null_class = None  # it never reads a label
        self.x_embedder = PatchEmbed(cfg.input_size, cfg.patch_size, cfg.in_channels, cfg.hidden_size, bias=True)
        self.t_embedder = TimestepEmbedder(cfg.hidden_size)
        tokens = (cfg.input_size // cfg.patch_size) ** 2
        self.register_buffer("pos_embed", get_2d_sincos_pos_embed(cfg.hidden_size, int(tokens ** 0.5)).unsqueeze(0),
                             persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(cfg.hidden_size, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.pool = AttentionPool(cfg.hidden_size, cfg.num_heads, cfg.pool, tokens)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=LN_EPS)
        self.head = nn.Linear(cfg.hidden_size, cfg.num_classes)
        self.initialize_weights()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c = self.config
        return (c.in_channels, c.input_size, c.input_size)

    def initialize_weights(self) -> None:
        xavier_linears(self)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        for layer in self.t_embedder.mlp[0], self.t_embedder.mlp[2]:
            nn.init.normal_(layer.weight, std=0.02)
        nn.init.normal_(self.pool.query, std=0.02)
        for linear in [b.adaLN_modulation[-1] for b in self.blocks] + [self.head]:  # identity blocks, uniform output
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t)
        for block in self.blocks:
            h = block(h, c)
        return self.head(self.norm(self.pool(h)))


@dataclass(frozen=True)
class ClassifierSection:
    """The noisy classifier's training flags (`--arch noisy-classifier`, train_classifier.py)."""

    classifier_pool: str = "query"  # query (a learned query attends over the tokens) or mean-query (ADM's)


def config_for_run(run, data: dict) -> ClassifierConfig:
    """The classifier of a training run: a `--model` preset (Classifier-S/2, ...) resized by
    --hidden-size / --depth / --num-heads, on the data's channels, side and classes."""
    if run.model not in MODEL_NAMES:
        raise UserError(f"unknown classifier model {run.model!r}; choose one of {', '.join(MODEL_NAMES)}")
    base, _, patch = run.model.partition("/")
    overrides = {k: getattr(run, k) for k in ("hidden_size", "depth", "num_heads") if getattr(run, k) is not None}
    if "hidden_size" in overrides and "num_heads" not in overrides:
        overrides["num_heads"] = max(1, overrides["hidden_size"] // 64)
    if "image_size" in data:
        check_image_size(data["image_size"], data.get("downsample", 1), int(patch))
    return ClassifierConfig(**{**PRESETS[base], **overrides}, patch_size=int(patch), input_size=data["input_size"],
                            in_channels=data["in_channels"], num_classes=data["num_classes"],
                            pool=run.classifier_pool)


def check_run(run) -> None:
    if run.class_dropout_prob:
        raise UserError("a classifier's labels are its targets: --class-dropout-prob must be 0")
    patch = int(run.model.rpartition("/")[2]) if run.model in MODEL_NAMES else 1
    config_for_run(run, {"in_channels": 3, "input_size": patch, "num_classes": 10})


def describe(cfg: ClassifierConfig) -> str:
    name = next((n for n, p in PRESETS.items() if all(getattr(cfg, k) == v for k, v in p.items())), None)
    arch = f"{name}/{cfg.patch_size}" if name else f"depth {cfg.depth}, hidden {cfg.hidden_size}, patch {cfg.patch_size}"
    return (f"noisy classifier {arch} ({cfg.pool} pooling) on a {cfg.input_size}x{cfg.input_size}x{cfg.in_channels} "
            f"input, {cfg.num_classes} classes")


ARCH = Architecture(
    key="noisy-classifier", config_from_dict=ClassifierConfig.from_dict, build=NoisyClassifier,
    config_for_run=config_for_run, check_run=check_run, describe=describe, section=ClassifierSection,
    # x_t at uniform t over the whole range (Process.draw_uniform): the flow process's time sampling and loss
    # are a generator's
    ignores=("time_sampling", "cosine_loss"), role=CLASSIFIER,
)
