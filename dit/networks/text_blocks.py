"""The blocks of the text-conditioned DiT (text_dit.py) and its text encoder (text_encoder.py).

Padding: a caption is a (B, S) row of tokens with a boolean mask, True where a token is real. Every
attention here takes a key mask (`masked_attention`): padded keys get no weight, so appending padding
changes nothing, and a sample with no real key at all (the empty caption: the null text of classifier-free
guidance) gets exactly zero from that attention, not the NaN of a softmax over nothing. The empty
caption therefore removes the text path exactly (text_dit.py).

    EncoderBlock   pre-norm transformer block with masked self-attention (the trainable text encoder)
    CrossDiTBlock  PixArt-α's block (Chen et al. 2023): self-attention and MLP modulated by adaLN-single
                   (one t projection shared by all blocks, plus this block's learned table), with
                   unmodulated cross-attention to the caption between them
    JointDiTBlock  SD3's MMDiT block (Esser et al. 2024): image and text tokens keep their own norms,
                   modulation, QKV, output projections and MLPs, and attend jointly over [image, text]
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from dit.networks.layers import Attention, CrossAttention, make_mlp, make_norm, masked_attention, modulate


class MaskedSelfAttention(Attention):
    """layers.Attention (fused qkv, optional qk-norm) with a key mask instead of RoPE."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.num_heads)
        if self.q_norm is not None:
            q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        return self.proj(rearrange(masked_attention(q, k, v, mask), "b h t d -> b t (h d)"))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block over caption tokens (B, S, W) with their mask (B, S)."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = MaskedSelfAttention(width, num_heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = make_mlp(width, mlp_ratio)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class CrossDiTBlock(nn.Module):
    """PixArt-α block: x (B, T, D), the caption (B, S, D) and its mask, t6 (B, 6D) the shared adaLN-single
    projection of t. Modulation = this block's table (6, D) + t6, in DiT's order (shift, scale, gate of the
    self-attention, then of the MLP)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, mlp: str = "gelu",
                 norm: str = "layernorm", qk_norm: bool = False):
        super().__init__()
        self.norm1 = make_norm(norm, hidden_size, affine=False)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True, qk_norm=qk_norm)
        self.cross_attn = CrossAttention(hidden_size, num_heads)
        self.norm2 = make_norm(norm, hidden_size, affine=False)
        self.mlp = make_mlp(hidden_size, mlp_ratio, mlp)
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None, t6: torch.Tensor
                ) -> torch.Tensor:
        mod = (self.scale_shift_table[None] + t6.reshape(len(t6), 6, -1)).unbind(1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.cross_attn(x, context, mask)  # PixArt: no norm, no modulation before the cross-attention
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class JointDiTBlock(nn.Module):
    """MMDiT block: image tokens x (B, T, D) and text tokens (B, S, D) with its mask, both modulated from
    c (B, D) = t's embedding + the pooled caption's. `last`: the text stream's output is not used after
    this block (SD3's context_pre_only), so it has only the modulation its attention input needs."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, mlp: str = "gelu",
                 norm: str = "layernorm", qk_norm: bool = False, last: bool = False):
        super().__init__()
        self.num_heads, self.last = num_heads, last
        D = hidden_size
        self.norm1 = make_norm(norm, D, affine=False)
        self.norm1_context = make_norm(norm, D, affine=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))
        self.context_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, (2 if last else 6) * D))
        self.qkv = nn.Linear(D, 3 * D)
        self.context_qkv = nn.Linear(D, 3 * D)
        if qk_norm:
            self.q_norm, self.k_norm, self.context_q_norm, self.context_k_norm = (
                make_norm("rmsnorm", D // num_heads, affine=True) for _ in range(4))
        else:
            self.q_norm = self.k_norm = self.context_q_norm = self.context_k_norm = None
        self.proj = nn.Linear(D, D)
        self.norm2 = make_norm(norm, D, affine=False)
        self.mlp = make_mlp(D, mlp_ratio, mlp)
        if not last:
            self.context_proj = nn.Linear(D, D)
            self.norm2_context = make_norm(norm, D, affine=False)
            self.context_mlp = make_mlp(D, mlp_ratio, mlp)

    def _heads(self, qkv: torch.Tensor, q_norm, k_norm):
        q, k, v = rearrange(qkv, "b t (three h d) -> three b h t d", three=3, h=self.num_heads)
        if q_norm is not None:
            q, k = q_norm(q).to(v.dtype), k_norm(k).to(v.dtype)
        return q, k, v

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None, c: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        cmod = self.context_modulation(c).chunk(2 if self.last else 6, dim=1)
        T = x.shape[1]
        qx, kx, vx = self._heads(self.qkv(modulate(self.norm1(x), shift_msa, scale_msa)), self.q_norm, self.k_norm)
        qc, kc, vc = self._heads(self.context_qkv(modulate(self.norm1_context(context), cmod[0], cmod[1])),
                                 self.context_q_norm, self.context_k_norm)
        keys = None if mask is None else torch.cat([mask.new_ones(len(mask), T), mask], dim=1)  # [image, text]
        out = masked_attention(torch.cat([qx, qc], 2), torch.cat([kx, kc], 2), torch.cat([vx, vc], 2), keys)
        out = rearrange(out, "b h t d -> b t (h d)")
        x = x + gate_msa.unsqueeze(1) * self.proj(out[:, :T])
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        if self.last:
            return x, None
        c_shift_mlp, c_scale_mlp, c_gate_mlp = cmod[3:]
        context = context + cmod[2].unsqueeze(1) * self.context_proj(out[:, T:])
        context = context + c_gate_mlp.unsqueeze(1) * self.context_mlp(
            modulate(self.norm2_context(context), c_shift_mlp, c_scale_mlp))
        return x, context
