"""Transformer blocks for the four conditioning variants of DiT §3.2 (compared in Table 4).

- adaLN-Zero (default): LayerNorm scale/shift *and* residual gates regressed from c = t_emb + y_emb,
  the regression zero-initialised so every block starts as the identity. `DiTBlock(gated=True)`.
- adaLN: the same without the gates (plain residuals). `DiTBlock(gated=False)`.
- in-context: a plain ViT block; t and y ride along as two extra tokens. `ViTBlock`.
- cross-attention: a ViT block plus cross-attention to the 2-token sequence [t_emb, y_emb].
  `ViTBlock(cross_attention=True)`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dit.networks.layers import Attention, CrossAttention, make_mlp, modulate

LN_EPS = 1e-6  # as in the public DiT; LayerNorm's default 1e-5 would shift outputs of loaded checkpoints


class DiTBlock(nn.Module):
    """adaLN(-Zero) block, DiT §3.2. x (N, T, D), c (N, D) -> (N, T, D).

    The LayerNorms have no affine parameters: scale and shift come from c instead.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, gated: bool = True):
        super().__init__()
        self.gated = gated
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=LN_EPS)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=LN_EPS)
        self.mlp = make_mlp(hidden_size, mlp_ratio)
        # 6 modulation vectors with gates (adaLN-Zero), 4 without (adaLN).
        n_mod = 6 if gated else 4
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, n_mod * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        mod = self.adaLN_modulation(c).chunk(6 if self.gated else 4, dim=1)  # each (N, D)
        if self.gated:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
            x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
            x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        else:
            shift_msa, scale_msa, shift_mlp, scale_mlp = mod
            x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
            x = x + self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class ViTBlock(nn.Module):
    """Pre-norm ViT block (affine LayerNorms) for the in-context and cross-attention variants.

    x (N, T, D); context (N, S, D) is only used (and required) with cross_attention=True.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, cross_attention: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=LN_EPS)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True)
        if cross_attention:
            # DiT §3.2: "a multi-head cross-attention layer following the multi-head self-attention"
            self.norm_cross = nn.LayerNorm(hidden_size, eps=LN_EPS)
            self.cross_attn = CrossAttention(hidden_size, num_heads, qkv_bias=True)
        else:
            self.cross_attn = None
        self.norm2 = nn.LayerNorm(hidden_size, eps=LN_EPS)
        self.mlp = make_mlp(hidden_size, mlp_ratio)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), context)
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    """adaLN final layer: (N, T, D) -> (N, T, p*p*out_channels), features ordered (p1, p2, c)."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=LN_EPS)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class PlainFinalLayer(nn.Module):
    """LayerNorm + Linear final layer of the in-context / cross-attention variants (no c)."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, eps=LN_EPS)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(self.norm_final(x))
