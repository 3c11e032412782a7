"""Transformer blocks for the four conditioning variants of DiT §3.2 (compared in Table 4).

- adaLN-Zero (default): LayerNorm scale/shift *and* residual gates regressed from c = t_emb + y_emb,
  the regression zero-initialised so every block starts as the identity. `DiTBlock(gated=True)`.
- adaLN: the same without the gates (plain residuals). `DiTBlock(gated=False)`.
- in-context: a plain ViT block; t and y ride along as two extra tokens. `ViTBlock`.
- cross-attention: a ViT block plus cross-attention to the 2-token sequence [t_emb, y_emb].
  `ViTBlock(cross_attention=True)`.

Every block and final layer also takes LightningDiT's options (Yao et al. 2025): `mlp`
("gelu" | "swiglu"), `norm` ("layernorm" | "rmsnorm", for every norm here, affine exactly where
the LayerNorm was) and `qk_norm`; the blocks' forward takes the `rope` tables (rope.py) for
self-attention. Their defaults build the public DiT, parameter for parameter.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dit.networks.layers import LN_EPS, Attention, CrossAttention, make_mlp, make_norm, modulate

__all__ = ["LN_EPS", "DiTBlock", "FinalLayer", "PlainFinalLayer", "ViTBlock"]
Rope = tuple[torch.Tensor, torch.Tensor] | None  # rope.rope_2d's (cos, sin), or no rotary embedding


class DiTBlock(nn.Module):
    """adaLN(-Zero) block, DiT §3.2. x (N, T, D), c (N, D) -> (N, T, D).

    The norms have no affine parameters: scale and shift come from c instead. (LightningDiT's
    RMSNorm keeps a learnable weight here; it multiplies the same channels as 1 + scale.)
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, gated: bool = True,
                 mlp: str = "gelu", norm: str = "layernorm", qk_norm: bool = False):
        super().__init__()
        self.gated = gated
        self.norm1 = make_norm(norm, hidden_size, affine=False)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True, qk_norm=qk_norm)
        self.norm2 = make_norm(norm, hidden_size, affine=False)
        self.mlp = make_mlp(hidden_size, mlp_ratio, mlp)
        # 6 modulation vectors with gates (adaLN-Zero), 4 without (adaLN).
        n_mod = 6 if gated else 4
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, n_mod * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: Rope = None, pos: torch.Tensor | None = None) -> torch.Tensor:
        """pos: a position table added to the attention's input only (the video DiT's time axis), not to x."""
        mod = self.adaLN_modulation(c).chunk(6 if self.gated else 4, dim=1)  # each (N, D)
        if self.gated:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
            a = x if pos is None else x + pos
            x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(a), shift_msa, scale_msa), rope)
            x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        else:
            shift_msa, scale_msa, shift_mlp, scale_mlp = mod
            x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
            x = x + self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class ViTBlock(nn.Module):
    """Pre-norm ViT block (affine LayerNorms) for the in-context and cross-attention variants.

    x (N, T, D); context (N, S, D) is only used (and required) with cross_attention=True.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, cross_attention: bool = False,
                 mlp: str = "gelu", norm: str = "layernorm", qk_norm: bool = False):
        super().__init__()
        self.norm1 = make_norm(norm, hidden_size, affine=True)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True, qk_norm=qk_norm)
        if cross_attention:
            # DiT §3.2: "a multi-head cross-attention layer following the multi-head self-attention"
            # (its 2 context tokens have no positions: no RoPE, no qk-norm there)
            self.norm_cross = make_norm(norm, hidden_size, affine=True)
            self.cross_attn = CrossAttention(hidden_size, num_heads, qkv_bias=True)
        else:
            self.cross_attn = None
        self.norm2 = make_norm(norm, hidden_size, affine=True)
        self.mlp = make_mlp(hidden_size, mlp_ratio, mlp)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, rope: Rope = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), context)
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    """adaLN final layer: (N, T, D) -> (N, T, p*p*out_channels), features ordered (p1, p2, c)."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, norm: str = "layernorm"):
        super().__init__()
        self.norm_final = make_norm(norm, hidden_size, affine=False)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class PlainFinalLayer(nn.Module):
    """Norm + Linear final layer of the in-context / cross-attention variants (no c)."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, norm: str = "layernorm"):
        super().__init__()
        self.norm_final = make_norm(norm, hidden_size, affine=True)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(self.norm_final(x))
