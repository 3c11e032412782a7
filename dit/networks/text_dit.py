"""The text-conditioned DiT (`--arch text-dit`): a pure function (x_t, t, cond) -> network output, where cond
holds a caption's token ids (conditioning.TEXT_IDS) instead of a label.

DiT's patch embedding, fixed sin-cos positions, timestep embedder and output layout (dit.py), with a
trainable text encoder (text_encoder.py) and one of three ways to read its features (text_config.py):
pooled adaLN-Zero (the baseline), PixArt-α's cross-attention with adaLN-single, or SD3's joint attention.

The null text (classifier-free guidance's unconditional branch, and caption dropout: cond["drop"] = 1) is
the empty caption: no real token. Every attention masks padding (text_blocks.masked_attention) and the
pooled caption is zero then, so an empty caption gives exactly what the network gives with no text at all
(`cond` without TEXT_IDS): the text path reduces to an unconditional DiT of the same weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from dit.networks import text_config
from dit.networks.base import Blocks, GradCheckpointing, ReadsText
from dit.networks.blocks import DiTBlock, FinalLayer
from dit.networks.catalog import Architecture
from dit.networks.conditioning import NO_CLASSES, TEXT, TEXT_IDS, TEXT_MASK, UNLABELLED, as_cond
from dit.networks.frozen_text import frozen_encoder
from dit.networks.layers import (PatchEmbed, TimestepEmbedder, get_2d_sincos_pos_embed, make_norm, modulate,
                                 xavier_linears)
from dit.networks.text_blocks import CrossDiTBlock, JointDiTBlock
from dit.networks.text_config import TextConfig, TextSection
from dit.networks.text_encoder import TextEncoder, pooled


def _projection(width: int, hidden: int, act: nn.Module) -> nn.Sequential:
    """Linear, activation, Linear: PixArt's caption projection (GELU-tanh) and SD3's pooled projection (SiLU)."""
    return nn.Sequential(nn.Linear(width, hidden), act, nn.Linear(hidden, hidden))


class TableFinalLayer(nn.Module):
    """PixArt's final layer: shift and scale from t's embedding plus a learned table (2, D), then the linear."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, norm: str = "layernorm"):
        super().__init__()
        self.norm_final = make_norm(norm, hidden_size, affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + t_emb[:, None]).unbind(1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class TextDiT(nn.Module, GradCheckpointing, Blocks, ReadsText):
    """forward: x (N, C, H, W), t (N,), cond {TEXT_IDS: (N, S) long, "drop": (N,) optional} -> (N, out, H, W)."""

    num_classes = NO_CLASSES  # conditioned on captions, not labels
    null_class = UNLABELLED

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = cfg = config
        D, W = cfg.hidden_size, cfg.encoder_width
        self.patch_size, self.in_channels, self.out_channels = cfg.patch_size, cfg.in_channels, cfg.out_channels
        self.conditioning, self.grad_checkpointing = cfg.conditioning, False
        self.x_embedder = PatchEmbed((cfg.input_size, cfg.width), cfg.patch_size, cfg.in_channels, D, bias=True,
                                     strict_img_size=False)
        self.t_embedder = TimestepEmbedder(D, freq_shift=cfg.timestep_freq_shift)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, D), requires_grad=False)
        # The trainable encoder, or none: a frozen transformers encoder lives outside the module (frozen_text.py).
        self.text_encoder = None if cfg.text_encoder else TextEncoder(cfg.tokenizer.vocab_size, cfg.text_length, W,
                                                                      cfg.text_depth, cfg.encoder_heads)
        options = dict(mlp=cfg.mlp, norm=cfg.norm, qk_norm=cfg.qk_norm)
        args = (D, cfg.num_heads, cfg.mlp_ratio)
        if cfg.conditioning == "cross-attention":
            self.caption_projection = _projection(W, D, nn.GELU(approximate="tanh"))
            self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))  # adaLN-single
            self.blocks = nn.ModuleList(CrossDiTBlock(*args, **options) for _ in range(cfg.depth))
            self.final_layer = TableFinalLayer(D, cfg.patch_size, cfg.out_channels, cfg.norm)
        else:
            self.pooled_embedder = _projection(W, D, nn.SiLU())
            if cfg.conditioning == "joint":
                self.context_embedder = nn.Linear(W, D)
                self.blocks = nn.ModuleList(JointDiTBlock(*args, **options, last=i == cfg.depth - 1)
                                            for i in range(cfg.depth))
            else:
                self.blocks = nn.ModuleList(DiTBlock(*args, True, **options) for _ in range(cfg.depth))
            self.final_layer = FinalLayer(D, cfg.patch_size, cfg.out_channels, cfg.norm)
        self.initialize_weights()

    @classmethod
    def from_config(cls, cfg: TextConfig) -> "TextDiT":
        return cls(cfg)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.config.input_size, self.config.width)

    def initialize_weights(self) -> None:
        """DiT's init (xavier linears, zero biases, N(0, 0.02) timestep MLP, fixed sin-cos table) plus, as the
        papers: zero final linear (the untrained network outputs 0); adaLN-Zero's and MMDiT's modulation
        zero (every block starts as the identity); PixArt's cross-attention output projection zero and its
        t_block N(0, 0.02) (its blocks start from the tables' random modulation, not the identity)."""
        xavier_linears(self)
        self.pos_embed.data.copy_(get_2d_sincos_pos_embed(self.pos_embed.shape[-1], self.config.grid).unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        for linear in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(linear.weight, std=0.02)
        zero = [self.final_layer.linear]
        if self.conditioning == "cross-attention":
            nn.init.normal_(self.t_block[1].weight, std=0.02)
            zero += [block.cross_attn.proj for block in self.blocks]
        else:
            zero += [block.adaLN_modulation[-1] for block in self.blocks] + [self.final_layer.adaLN_modulation[-1]]
            if self.conditioning == "joint":
                zero += [block.context_modulation[-1] for block in self.blocks]
        for linear in zero:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = enabled

    @property
    def frozen(self):
        """The frozen transformers encoder (shared by the process, checked against the recorded sha256), or None."""
        cfg = self.config
        return frozen_encoder(cfg.text_encoder, cfg.text_length, cfg.text_encoder_sha256) if cfg.text_encoder else None

    def encode_text(self, captions: list[str], features: bool = False) -> dict:
        """The cond entries of `captions` (prompts at sampling, captions in training): their token ids (and, for a
        frozen encoder, its padding mask); with `features` (sampling: no gradient flows to the encoder) also the
        encoder's features and mask (TEXT, TEXT_MASK), computed once here instead of at every network call."""
        if self.frozen is not None:
            ids, mask = self.frozen.encode(captions)
            cond = {TEXT_IDS: ids, TEXT_MASK: mask}
        else:
            cond = {TEXT_IDS: self.config.tokenizer.encode(captions, self.config.text_length)}
        if features:
            device = self.pos_embed.device
            with torch.no_grad():
                text, mask = self.caption({k: v.to(device) for k, v in cond.items()}, len(captions), device)
            cond.update({TEXT: text, TEXT_MASK: mask})
        return cond

    def caption(self, cond: dict, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (B, S, W) zero at padding, mask (B, S)) of cond's caption; no caption at all is a sequence
        of length 0; a dropped one ("drop" 1) has no real token."""
        ids = cond.get(TEXT_IDS)
        if ids is None:
            return torch.zeros(batch, 0, self.config.encoder_width, device=device), torch.zeros(
                batch, 0, dtype=torch.bool, device=device)
        if TEXT in cond:  # given: encode_text's (sampling) or a latent cache's; masked here, as the null text
            mask = cond[TEXT_MASK].bool()  # (conditioning.unconditional) zeroes only the mask
            features = (cond[TEXT] * mask.unsqueeze(-1)).to(self.pos_embed.dtype)
        elif self.text_encoder is None:  # frozen: its features, cached per caption
            mask = cond[TEXT_MASK].bool()
            features = self.frozen.features(ids, mask).to(self.pos_embed.dtype)
        else:
            features, mask = self.text_encoder(ids)
        drop = cond.get("drop")
        if drop is not None:
            mask = mask & (drop == 0).reshape(-1, 1)
            features = features * mask.unsqueeze(-1).to(features.dtype)
        return features, mask

    def _run(self, block, *args):
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        cond = as_cond(cond)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        pos = self.pos_embed if grid == self.config.grid else get_2d_sincos_pos_embed(
            self.pos_embed.shape[-1], grid).unsqueeze(0).to(self.pos_embed)
        h = self.x_embedder(x) + pos
        t_emb = self.t_embedder(t)
        features, mask = self.caption(cond, x.shape[0], x.device)
        if self.conditioning == "cross-attention":
            context, t6 = self.caption_projection(features), self.t_block(t_emb)
            for block in self.blocks:
                h = self._run(block, h, context, mask, t6)
            h = self.final_layer(h, t_emb)
        else:
            has_text = mask.any(dim=1, keepdim=True).to(t_emb.dtype)  # the empty caption adds nothing
            c = t_emb + self.pooled_embedder(pooled(features, mask)) * has_text
            if self.conditioning == "joint":
                context = self.context_embedder(features)
                for block in self.blocks:
                    h, context = self._run(block, h, context, mask, c)
            else:
                for block in self.blocks:
                    h = self._run(block, h, c)
            h = self.final_layer(h, c)
        p = self.patch_size
        return rearrange(h, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=grid[0], w=grid[1], p1=p, p2=p)


ARCH = Architecture(
    key="text-dit", config_from_dict=TextConfig.from_dict, build=TextDiT.from_config,
    config_for_run=text_config.config_for_run, check_run=text_config.check_run, describe=text_config.describe,
    section=TextSection, any_size=True, reads_text=True, cpu_defaults=text_config.CPU_DEFAULTS,
)
