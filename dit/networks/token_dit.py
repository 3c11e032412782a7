"""The token transformer of discrete diffusion (`--arch token-dit`): DiT's blocks over a grid of token ids.

forward(x, t, cond): x (B, H, W) ids in 0..K (K is [MASK], dit/processes/vq_schedule.py) or (B, L)
with L = H * W in raster order; t (B,) the process's time; cond labels or {"y", "drop"} as DiT.
Returns log p(x~0 | x_t, y) over the K regular ids, (B, K, H, W) (or (B, K, L)): the network never
predicts [MASK] (VQ-Diffusion §3.3).

Everything but the input and the output is DiT's (Peebles & Xie 2022): a token embedding
nn.Embedding(K + 1, D) takes the place of the patch embedding (a token is one position, no
patches), the fixed 2-D sin-cos table of DiT §3.1 is added, c = t_emb + y_emb conditions
adaLN-Zero blocks (§3.2; the label table's extra row is the learned null condition that
classifier-free guidance reads, which is improved VQ-Diffusion's "learnable" unconditional input),
and DiT's final layer maps each token to K logits, followed by a log-softmax over K.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from dit.errors import UserError
from dit.networks.base import Blocks, GradCheckpointing
from dit.networks.blocks import DiTBlock, FinalLayer
from dit.networks.conditioning import as_cond, null_class
from dit.networks.dit_config import PRESETS as DIT_PRESETS, config_from_dict
from dit.networks.layers import LabelEmbedder, TimestepEmbedder, get_2d_sincos_pos_embed, xavier_linears
from dit.networks.catalog import Architecture

# DiT Table 1's widths and depths; "-CPU" is the CPU demo's size (width 128, depth 4).
PRESETS = {"TokenDiT-CPU": dict(depth=4, hidden_size=128, num_heads=2),
           **{name.replace("DiT", "TokenDiT"): p for name, p in DIT_PRESETS.items()}}
MODEL_NAMES = list(PRESETS)


@dataclass(frozen=True)
class TokenDiTConfig:
    input_size: int = 16  # token grid side (256 px through a factor-16 VQ tokenizer)
    codebook_size: int = 1024  # K regular ids; the embedding has K + 1 rows ([MASK])
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v, want = getattr(self, f.name), {"int": int, "float": float}[f.type]
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v))
            elif not isinstance(v, want) or isinstance(v, bool):
                raise UserError(f"token-dit {f.name} must be of type {f.type}, got {v!r}")
        for name in ("input_size", "hidden_size", "depth", "num_heads"):
            if getattr(self, name) < 1:
                raise UserError(f"token-dit {name} must be a positive integer, got {getattr(self, name)}")
        if self.num_classes < 0:  # 0: unconditional (conditioning.is_unconditional)
            raise UserError(f"token-dit num_classes must be >= 0 (0: unconditional), got {self.num_classes}")
        if self.codebook_size < 2:
            raise UserError(f"token-dit codebook_size must be >= 2, got {self.codebook_size}")
        if self.hidden_size % 4 or self.hidden_size % self.num_heads:
            raise UserError(f"token-dit hidden_size {self.hidden_size} must be a multiple of 4 (the 2-D sin-cos table) "
                            f"and of num_heads {self.num_heads}")
        if self.mlp_ratio <= 0:
            raise UserError(f"token-dit mlp_ratio must be positive, got {self.mlp_ratio}")
        if not 0.0 <= self.class_dropout_prob <= 1.0:
            raise UserError(f"class_dropout_prob must be in [0, 1] (1: unconditional), got {self.class_dropout_prob}")

    @property
    def null_class(self) -> int:
        return null_class(self.num_classes)

    @property
    def num_tokens(self) -> int:
        return self.input_size ** 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TokenDiTConfig":
        return config_from_dict(cls, d, "token-dit")


class TokenDiT(nn.Module, GradCheckpointing, Blocks):
    """forward: x (N, H, W) or (N, L) long, t (N,), cond -> (N, K, H, W) or (N, K, L) log-probabilities."""

    def __init__(self, cfg: TokenDiTConfig):
        super().__init__()
        self.config = cfg
        self.num_classes, self.null_class = cfg.num_classes, cfg.null_class
        self.grad_checkpointing = False
        D, K = cfg.hidden_size, cfg.codebook_size
        self.tok_embedder = nn.Embedding(K + 1, D)  # ids 0..K-1 and [MASK] = K
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = LabelEmbedder(cfg.num_classes, D, cfg.class_dropout_prob)
        self.register_buffer("pos_embed", get_2d_sincos_pos_embed(D, cfg.input_size).unsqueeze(0), persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(D, cfg.num_heads, cfg.mlp_ratio, gated=True) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(D, 1, K)
        self.initialize_weights()

    @property
    def input_shape(self) -> tuple[int, int]:
        """(H, W) of one sample's token grid: what the process's prior is drawn in."""
        return (self.config.input_size, self.config.input_size)

    def initialize_weights(self) -> None:
        """DiT's invariants: xavier-uniform Linears with zero bias; token table, label table and the
        timestep MLP's weights N(0, 0.02); every block's adaLN modulation and the final layer zero, so
        each block is the identity and the untrained network outputs the uniform log(1/K) everywhere."""
        xavier_linears(self)
        for w in (self.tok_embedder.weight, self.y_embedder.embedding_table.weight,
                  self.t_embedder.mlp[0].weight, self.t_embedder.mlp[2].weight):
            nn.init.normal_(w, std=0.02)
        zero = [b.adaLN_modulation[-1] for b in self.blocks]
        zero += [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]
        for linear in zero:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = enabled

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        cond = as_cond(cond)
        y, drop = cond["y"], cond.get("drop", force_drop_ids)
        side, grid = self.config.input_size, x.dim() == 3
        if x.shape[1:] not in ((side, side), (side * side,)):
            raise ValueError(f"token-dit takes ids (N, {side}, {side}) or (N, {side * side}), got {tuple(x.shape)}")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        h = self.tok_embedder(x.reshape(x.shape[0], -1).long()) + self.pos_embed  # (N, L, D), raster order
        c = self.t_embedder(t) + self.y_embedder(y, self.training, drop)  # (N, D), DiT §3.2
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, c, use_reentrant=False)
            else:
                h = block(h, c)
        logits = self.final_layer(h, c).float()  # (N, L, K); the softmax over K in float32
        out = torch.log_softmax(logits, dim=-1).transpose(1, 2)  # (N, K, L)
        return rearrange(out, "n k (h w) -> n k h w", h=side) if grid else out


# --- The registry entry -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenDiTSection:
    """token-dit's training flags (`--arch token-dit`); DiT's block options are not among them (adaLN-Zero
    blocks only)."""

    # K of the token ids, declared alike by the tokenizer and the vq-diffusion process (0: read from the
    # tokenizer --vae, train.py's resolve_tokens)
    codebook_size: int = 0


def preset_config(name: str, **overrides) -> TokenDiTConfig:
    if name not in MODEL_NAMES:
        raise UserError(f"unknown token-dit model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return TokenDiTConfig.from_dict({**PRESETS[name], **overrides})


def config_for_run(run, data: dict) -> TokenDiTConfig:
    """A `--model` preset (TokenDiT-S, ...; a DiT name such as DiT-XL/2 takes its width and depth,
    the patch size is ignored: a token is one position) resized by --hidden-size / --depth /
    --num-heads, on the data's grid side ("input_size"), codebook size ("codebook_size", else the
    run's) and classes."""
    model = run.model.rpartition("/")[0].replace("DiT", "TokenDiT", 1) if run.model.startswith("DiT-") else run.model
    overrides = {k: getattr(run, k) for k in ("hidden_size", "depth", "num_heads") if getattr(run, k) is not None}
    if "hidden_size" in overrides and "num_heads" not in overrides:
        overrides["num_heads"] = max(1, overrides["hidden_size"] // 64)
    K = data.get("codebook_size", run.codebook_size)
    return preset_config(model, input_size=data["input_size"], codebook_size=K, num_classes=data["num_classes"],
                         class_dropout_prob=run.class_dropout_prob, **overrides)


def check_run(run) -> None:
    config_for_run(run, {"input_size": 2, "num_classes": 10, "codebook_size": run.codebook_size or 16})


def describe(cfg: TokenDiTConfig) -> str:
    name = next((n for n, p in PRESETS.items() if all(getattr(cfg, k) == v for k, v in p.items())), None)
    arch = name or f"token-dit depth {cfg.depth}, hidden {cfg.hidden_size}"
    return f"{arch} on a {cfg.input_size}x{cfg.input_size} grid of {cfg.codebook_size} tokens with {cfg.num_classes} classes"


ARCH = Architecture(
    key="token-dit", config_from_dict=TokenDiTConfig.from_dict, build=TokenDiT, config_for_run=config_for_run,
    check_run=check_run, describe=describe, data_kind="tokens", section=TokenDiTSection,
)
