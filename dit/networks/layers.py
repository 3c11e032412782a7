"""Building blocks of DiT (Peebles & Xie 2022): embedders, attention, the 2-D position table.

Every numeric convention here matches the public DiT release so its checkpoints load and give
the same numbers (see /work/shared/REFERENCE.md, "Conventions"). Module attribute names are
part of that contract: they are the state-dict keys (`t_embedder.mlp.0`, `attn.qkv`, ...).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Mlp, PatchEmbed, SwiGLU

from dit.networks.conditioning import null_class, reads_only_null, table_rows
from dit.networks.rope import apply_rope

__all__ = [
    "LN_EPS", "Attention", "CrossAttention", "LabelEmbedder", "Mlp", "PatchEmbed", "SwiGLU",
    "TimestepEmbedder", "get_1d_sincos_pos_embed", "get_2d_sincos_pos_embed", "make_mlp", "make_norm", "modulate", "swiglu_hidden",
    "timestep_embedding",
]

FREQUENCY_EMBEDDING_SIZE = 256  # DiT §3.2: t is embedded with 256 sinusoidal frequencies
LN_EPS = 1e-6  # as in the public DiT; LayerNorm's default 1e-5 would shift outputs of loaded checkpoints


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN (DiT §3.2): x (N, T, D), shift/scale (N, D). `1 + scale` so that scale 0 is identity."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def timestep_embedding(t: torch.Tensor, dim: int = FREQUENCY_EMBEDDING_SIZE, max_period: float = 10000,
                       freq_shift: int = 0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, t (N,) -> (N, dim).

    Frequencies are exp(-ln(max_period) * k / (half - freq_shift)), k = 0..half-1; cos before sin
    as in the public DiT (the transformer "Attention is all you need" order is the reverse: mind
    it when porting). freq_shift 0 is DiT's convention (the lowest frequency stops just above
    1/max_period); 1 is diffusers' `downscale_freq_shift=1` (it reaches 1/max_period), which its
    DiTTransformer2DModel uses: the same weights compute another function under each.
    """
    half = dim // 2
    # (-ln P * k) / (half - shift), in diffusers' order of operations, so shift 1 matches it bit for bit
    # and shift 0 is the expression this function always computed.
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - freq_shift))
    wide = torch.float64 if t.dtype == torch.float64 else torch.float32  # float64 oracles stay float64
    args = t[:, None].to(wide) * freqs[None].to(wide)  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """t (N,) in the original 0..999 index space -> (N, hidden). Sinusoids, then Linear-SiLU-Linear."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = FREQUENCY_EMBEDDING_SIZE, freq_shift: int = 0):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.freq_shift = freq_shift  # 0: DiT's frequencies, 1: diffusers' (see timestep_embedding)
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.frequency_embedding_size, freq_shift=self.freq_shift)
        return self.mlp(emb.to(self.mlp[0].weight.dtype) if emb.dtype != self.mlp[0].weight.dtype else emb)


class LabelEmbedder(nn.Module):
    """Class labels (N,) -> (N, hidden), with label dropout for classifier-free guidance.

    The table always has num_classes + 1 rows (the last is the null label, see conditioning.null_class),
    even with dropout 0, so every checkpoint fits every dropout setting. Dropout 1 makes the model
    unconditional: it reads the null label whatever it is given (classifier guidance's base model).
    So does a table of no classes (conditioning.is_unconditional): the null row is its only row.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(table_rows(num_classes), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Replace labels by the null class with probability dropout_prob (or where force_drop_ids == 1)."""
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, null_class(self.num_classes), labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if reads_only_null(self.num_classes, self.dropout_prob):  # the null label always, in training and sampling
            return self.embedding_table(torch.full_like(labels, null_class(self.num_classes)))
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


def _1d_sincos(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """pos (M,) -> (M, embed_dim): [sin(pos * omega), cos(pos * omega)], omega = 1/10000^(k/(D/2))."""
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    out = np.outer(pos.reshape(-1).astype(np.float64), omega)  # (M, D/2)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_1d_sincos_pos_embed(embed_dim: int, length: int) -> torch.Tensor:
    """Fixed 1-D table (length, embed_dim) float32 for positions 0..length-1 (the video networks' time axis)."""
    if embed_dim % 2:
        raise ValueError(f"1-D sin-cos position embedding needs an even embed_dim, got {embed_dim}")
    return torch.from_numpy(_1d_sincos(embed_dim, np.arange(length, dtype=np.float64))).float()


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int | tuple[int, int]) -> torch.Tensor:
    """Fixed MAE-style 2-D table, (rows * columns, embed_dim) float32, tokens in row-major (h, w) order;
    grid_size is (rows, columns), or one int for a square grid.

    The first embed_dim/2 channels encode the token's column (width coordinate), the second half
    its row: the public DiT builds meshgrid(w, h) and embeds grid[0] first. Kept for compatibility.
    """
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs embed_dim divisible by 4, got {embed_dim}")
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    w, h = np.meshgrid(np.arange(cols, dtype=np.float64), np.arange(rows, dtype=np.float64))  # (rows, cols) each
    emb = np.concatenate([_1d_sincos(embed_dim // 2, w), _1d_sincos(embed_dim // 2, h)], axis=1)
    return torch.from_numpy(emb).float()


def make_norm(kind: str, dim: int, affine: bool) -> nn.Module:
    """LayerNorm (DiT) or RMSNorm (Zhang & Sennrich 2019; LightningDiT), eps LN_EPS either way.

    RMSNorm has no bias, so an affine RMSNorm holds `weight` only where the LayerNorm held both.
    """
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=LN_EPS, elementwise_affine=affine)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=LN_EPS, elementwise_affine=affine)
    raise ValueError(f"unknown norm {kind!r} (dit_config.NORMS lists the choices)")


def swiglu_hidden(hidden_size: int, mlp_ratio: float) -> int:
    """SwiGLU's hidden width: floor(2/3 of the GELU MLP's int(D * mlp_ratio)).

    Three D x h matrices instead of two D x 4D ones, so 2/3 keeps the parameters and MACs of the
    GELU MLP (Shazeer 2020, "GLU Variants Improve Transformer"). Rounded down in integers, no
    alignment to a multiple of 8 or 64; this equals LightningDiT's int(2/3 * mlp_hidden_dim) for
    the paper widths (D = 384, 768, 1024, 1152 at ratio 4: 1024, 2048, 2730, 3072).
    """
    return 2 * int(hidden_size * mlp_ratio) // 3


def make_mlp(hidden_size: int, mlp_ratio: float, kind: str = "gelu") -> nn.Module:
    """The transformer MLP: "gelu" is the public DiT's tanh-GELU Mlp (keys fc1, fc2); "swiglu" is
    SiLU(x W_g) * (x W_x) W_2 (timm's SwiGLU: keys fc1_g, fc1_x, fc2, all with bias as LightningDiT)."""
    if kind == "gelu":
        return Mlp(
            in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio),
            act_layer=lambda: nn.GELU(approximate="tanh"), drop=0,
        )
    if kind == "swiglu":
        return SwiGLU(in_features=hidden_size, hidden_features=swiglu_hidden(hidden_size, mlp_ratio))
    raise ValueError(f"unknown mlp {kind!r} (dit_config.MLPS lists the choices)")


class Attention(nn.Module):
    """Multi-head self-attention with qkv bias (ViT), computed by PyTorch's fused SDPA.

    qk_norm: a learnable RMSNorm over each head's q and k before the product (keys q_norm, k_norm,
    one head_dim weight shared by all heads), as LightningDiT with its RMSNorm and SD3. It bounds
    the attention logits, the instability QK-norm was introduced against (Dehghani et al. 2023,
    ViT-22B, who used LayerNorm); RMSNorm whatever the blocks' `norm`, so the flag means one thing.
    rope: (cos, sin) tables of rope.rope_2d, applied to q and k after the norm.

    `mode` is a switch for attention injection (EmerDiff, dit/segmentation/attention_replay.py):
    None (default) runs the fused SDPA kernel; "record" computes softmax(q k^T / sqrt(d)) explicitly
    and keeps it in `probs` (N, heads, T, T); "replay" uses `probs` instead of this call's q and k,
    so only the values carry the new input. Replaying a recorded pass gives it back bit for bit.
    """

    mode: str | None = None  # class attribute: instances and checkpoints carry nothing until it is set
    probs: torch.Tensor | None = None

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_norm: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if qk_norm:
            self.q_norm = make_norm("rmsnorm", dim // num_heads, affine=True)
            self.k_norm = make_norm("rmsnorm", dim // num_heads, affine=True)
        else:
            self.q_norm = self.k_norm = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        # The qkv feature axis is laid out (3, heads, head_dim), as in timm: checkpoints depend on it.
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.num_heads)
        if self.q_norm is not None:  # CUDA autocast runs norms in float32; SDPA wants one dtype
            q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.mode is None:
            x = F.scaled_dot_product_attention(q, k, v)  # (N, heads, T, head_dim)
        else:
            x = self._explicit(q, k, v)
        return self.proj(rearrange(x, "b h t d -> b t (h d)"))

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The record/replay path: the same attention with its map written out (see `mode`)."""
        if self.mode == "record":
            self.probs = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)  # (N, heads, T, T)
        elif self.mode != "replay":
            raise ValueError(f"Attention.mode must be None, 'record' or 'replay', got {self.mode!r}")
        elif self.probs is None or self.probs.shape[-1] != k.shape[-2]:
            raise ValueError("Attention.mode 'replay' needs the maps of a recorded pass of the same length in `probs`")
        return self.probs.to(v.dtype) @ v


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over the keys where key_mask (B, S) is True; q (B, h, T, d), k and v
    (B, h, S, d). A row with no key gets zeros (text_blocks.py's docstring)."""
    if key_mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    if k.shape[-2] == 0:  # no caption at all
        return q.new_zeros(*q.shape[:-1], v.shape[-1])
    any_key = key_mask.any(dim=1)  # (B,)
    allowed = key_mask | ~any_key[:, None]  # a row with no key attends to all, then is zeroed: no NaN
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None, None, :])
    return out * any_key.to(out.dtype)[:, None, None, None]


class CrossAttention(nn.Module):
    """Multi-head attention from x (N, T, D) to a context sequence (N, S, D): DiT §3.2 cross-attention, and with a
    key mask (N, S) a caption's (text_blocks.py; masked_attention)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = rearrange(self.q(x), "b t (h d) -> b h t d", h=self.num_heads)
        k, v = rearrange(self.kv(context), "b s (two h d) -> two b h s d", two=2, h=self.num_heads)
        x = masked_attention(q, k, v, mask)  # (N, heads, T, head_dim); SDPA as before without a mask
        return self.proj(rearrange(x, "b h t d -> b t (h d)"))


def xavier_linears(module: nn.Module) -> None:
    """Every nn.Linear under `module`: xavier-uniform weight, zero bias (the ViT/JAX convention DiT keeps)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_embedders(x_embedder: PatchEmbed, t_embedder: TimestepEmbedder, y_embedder: LabelEmbedder) -> None:
    """DiT's embedder init, in its order (the RNG draws of public-DiT initialisation depend on it): the
    patch conv xavier on its (out, in*p*p) view (initialised like the linear it is), zero bias; the
    label table and both timestep-MLP weights N(0, 0.02)."""
    w = x_embedder.proj.weight.data
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(x_embedder.proj.bias)
    nn.init.normal_(y_embedder.embedding_table.weight, std=0.02)
    nn.init.normal_(t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(t_embedder.mlp[2].weight, std=0.02)
