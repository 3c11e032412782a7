"""The blocks a video DiT adds to DiT's (blocks.py): how space and time share one block.

Latte (Ma et al. 2024) compares four ways to factorise attention over a clip's tokens
(B, F, N, D) = (batch, frames, tokens per frame, width); video_dit.py composes them:
- interleaved / late fusion (variants 1, 2): whole DiT blocks, applied over space (B*F, N, D)
  or over time (B*N, F, D); no new block;
- factorised attention (variant 3, VDT's block): a temporal attention then a spatial DiT block
  inside one step: `AttentionBlock` here is the temporal half (adaLN-Zero attention, no MLP);
- split heads (variant 4): one attention whose heads split between space and time:
  `SplitHeadsBlock`.
Every temporal part is adaLN-Zero with its gate regressed by a zero-initialised Linear, so it
starts as the identity and an image DiT's weights initialise the spatial parts exactly (Latte's
pretrained init). VDT's released temporal branch has neither adaLN nor gate; ours does, for that.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from dit.networks.layers import Attention, make_mlp, make_norm, modulate


class AttentionBlock(nn.Module):
    """adaLN-Zero self-attention without an MLP: x (N, T, D), c (N, D) -> (N, T, D).

    The temporal half of the factorised-attention block (Latte variant 3); the gate starts at 0.
    """

    def __init__(self, hidden_size: int, num_heads: int, norm: str = "layernorm", qk_norm: bool = False):
        super().__init__()
        self.norm1 = make_norm(norm, hidden_size, affine=False)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True, qk_norm=qk_norm)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 3 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(c).chunk(3, dim=1)
        a = x if pos is None else x + pos  # positions enter the attention, not the residual stream
        return x + gate.unsqueeze(1) * self.attn(modulate(self.norm1(a), shift, scale))


class SplitHeadsAttention(nn.Module):
    """Latte variant 4: the first `spatial_heads` heads attend within a frame, the others across
    frames at one position. x (B, F, N, D) -> (B, F, N, D); the qkv layout is Attention's."""

    def __init__(self, dim: int, num_heads: int, spatial_heads: int, qk_norm: bool = False):
        super().__init__()
        if not 0 < spatial_heads < num_heads:
            raise ValueError(f"split heads needs 0 < spatial heads < heads, got {spatial_heads} of {num_heads}")
        self.num_heads, self.spatial_heads = num_heads, spatial_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        head = dim // num_heads
        self.q_norm = make_norm("rmsnorm", head, affine=True) if qk_norm else None
        self.k_norm = make_norm("rmsnorm", head, affine=True) if qk_norm else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, Fr, N, _ = x.shape
        q, k, v = rearrange(self.qkv(x), "b f n (three h d) -> three b h f n d", three=3, h=self.num_heads)
        if self.q_norm is not None:
            q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        s = self.spatial_heads
        # spatial heads: sequences of N tokens, one per (frame, head)
        spatial = F.scaled_dot_product_attention(q[:, :s], k[:, :s], v[:, :s])  # (B, s, F, N, d)
        # temporal heads: sequences of F tokens, one per (position, head)
        qt, kt, vt = (a[:, s:].transpose(2, 3) for a in (q, k, v))  # (B, h - s, N, F, d)
        temporal = F.scaled_dot_product_attention(qt, kt, vt).transpose(2, 3)  # (B, h - s, F, N, d)
        out = torch.cat([spatial, temporal], dim=1)  # (B, h, F, N, d)
        return self.proj(rearrange(out, "b h f n d -> b f n (h d)"))


class SplitHeadsBlock(nn.Module):
    """DiT's adaLN-Zero block around a split-heads attention: x (B, F, N, D), c (B, D)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, mlp: str = "gelu",
                 norm: str = "layernorm", qk_norm: bool = False):
        super().__init__()
        self.norm1 = make_norm(norm, hidden_size, affine=False)
        self.attn = SplitHeadsAttention(hidden_size, num_heads, num_heads // 2, qk_norm)
        self.norm2 = make_norm(norm, hidden_size, affine=False)
        self.mlp = make_mlp(hidden_size, mlp_ratio, mlp)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        B, Fr, N, D = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            m[:, None, None] for m in self.adaLN_modulation(c).chunk(6, dim=1))  # each (B, 1, 1, D)
        x = x + gate_msa * self.attn(self.norm1(x) * (1 + scale_msa) + shift_msa)
        return x + gate_mlp * self.mlp(self.norm2(x) * (1 + scale_mlp) + shift_mlp)
