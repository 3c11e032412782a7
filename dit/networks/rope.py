"""Axial 2-D rotary position embedding (RoPE, Su et al. 2021, "RoFormer"), as LightningDiT uses it.

RoPE rotates q and k (never v) by angles proportional to the token's position, so the attention
score q_p . k_r depends on the positions only through the offset p - r. Axial 2-D layout, the
one of EVA-02's VisionRotaryEmbeddingFast that LightningDiT (Yao et al. 2025) borrows:

- head dims [0, d/2) rotate with the token's row, dims [d/2, d) with its column;
- within each half, adjacent dims (2i, 2i+1) form one rotation pair ("interleaved", as EVA-02 and
  RoFormer; GPT-NeoX pairs i with i + d/2 instead) turning by angle pos * theta^(-2i / (d/2));
- positions are the integer grid indices 0..side-1 (EVA-02 with pt_seq_len = ft_seq_len).

Needs head_dim divisible by 4 (two axes, pairs of dims). Tokens are the patch grid in row-major
(h, w) order, as PatchEmbed emits them; tokens past the grid (the in-context variant's t and y
tokens) are not rotated, which is the rotation of position (0, 0).
"""

from __future__ import annotations

import torch

ROPE_THETA = 10000.0  # RoFormer's base, used unchanged by EVA-02 and LightningDiT

__all__ = ["ROPE_THETA", "apply_rope", "rope_2d"]


def _axis_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """positions (M,) -> (M, dim) angles, each frequency repeated for its pair (2i, 2i+1)."""
    freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim)  # (dim/2,)
    return torch.outer(positions.float(), freqs).repeat_interleave(2, dim=-1)


def rope_2d(height: int, width: int, head_dim: int, device: torch.device | str | None = None,
            theta: float = ROPE_THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (height * width, head_dim) float32, for a row-major token grid."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    half = head_dim // 2
    angles = torch.cat([_axis_angles(rows.reshape(-1), half, theta), _axis_angles(cols.reshape(-1), half, theta)], -1)
    return angles.cos(), angles.sin()


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): multiplication by i on each pair."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, head_dim) by tables (n, head_dim) of rope_2d: its first n tokens, the rest as they are.

    Computed in float32 and returned in x's dtype, so bf16 autocast loses no angle precision.
    """
    n = cos.shape[0]
    head, tail = x[..., :n, :], x[..., n:, :]
    xf = head.float()
    rotated = (xf * cos + _rotate_pairs(xf) * sin).to(x.dtype)
    return rotated if tail.shape[-2] == 0 else torch.cat([rotated, tail], dim=-2)
