"""How a video DiT is told the given frames: the four ways VDT compares (Lu et al. 2024, §4.4).

The network always knows WHICH tokens are given: `given_embed` (video_dit.py) is added to every
given token, fixing VDT's blind spot. What differs is how the clean values reach it:
    replace          in place: x is replaced by CLEAN at given positions (VDT's mask modelling);
                     every other position holds x_t. Costs nothing.
    concat           token concatenation (VDT's favourite): a second stream of F context frames,
                     CLEAN's tokens where given and only the flags elsewhere, appended along time
                     (each at its own frame's temporal position, marked by `context_embed`); the
                     main stream holds x_t everywhere. Twice the tokens.
    adaln            the given tokens' embeddings (with their time positions), mean-pooled per clip
                     through a Linear, added to adaLN's c = t_emb + y_emb. Cheap, no positions.
    cross-attention  after each spatial block, every token attends to the given tokens (plus one
                     learned null token, so a clip with nothing given still has a key); the output
                     projection starts at 0, so the block starts as the identity.
A clip without GIVEN is treated as one with nothing given, exactly as training's "unconditional"
masks present it, for every method.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from dit.networks.layers import make_norm

GIVEN_CONDITIONINGS = ("replace", "concat", "adaln", "cross-attention")


class MaskedCrossAttention(nn.Module):
    """Pre-norm residual cross-attention x (B, T, D) -> context (B, S, D) with a key mask (B, S);
    the output projection is zero at init (the identity)."""

    def __init__(self, dim: int, num_heads: int, norm: str = "layernorm"):
        super().__init__()
        self.num_heads = num_heads
        self.norm = make_norm(norm, dim, affine=True)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = rearrange(self.q(self.norm(x)), "b t (h d) -> b h t d", h=self.num_heads)
        k, v = rearrange(self.kv(context), "b s (two h d) -> two b h s d", two=2, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])  # (B, heads, T, d)
        return x + self.proj(rearrange(out, "b h t d -> b t (h d)"))


class GivenConditioning(nn.Module):
    """The parameters and the plumbing of one method (module docstring); `mode` is the config's."""

    def __init__(self, mode: str, hidden_size: int, num_heads: int, depth: int, norm: str = "layernorm"):
        super().__init__()
        if mode not in GIVEN_CONDITIONINGS:
            raise ValueError(f"unknown given-frame conditioning {mode!r}; one of {', '.join(GIVEN_CONDITIONINGS)}")
        self.mode = mode
        D = hidden_size
        if mode == "concat":
            self.context_embed = nn.Parameter(torch.zeros(D))
        elif mode == "adaln":
            self.pool = nn.Linear(D, D)
        elif mode == "cross-attention":
            self.null = nn.Parameter(torch.zeros(1, 1, D))
            self.cross = nn.ModuleList(MaskedCrossAttention(D, num_heads, norm) for _ in range(depth))

    def zero_init(self) -> None:
        """The parts that must start silent: the adaLN pool's output and every cross-attention's projection."""
        if self.mode == "adaln":
            nn.init.zeros_(self.pool.weight)
            nn.init.zeros_(self.pool.bias)
        elif self.mode == "cross-attention":
            for block in self.cross:
                nn.init.zeros_(block.proj.weight)
                nn.init.zeros_(block.proj.bias)
            nn.init.normal_(self.null, std=0.02)

    @property
    def replaces(self) -> bool:
        return self.mode == "replace"

    def context(self, clean_tokens: torch.Tensor, flags: torch.Tensor, time: torch.Tensor):
        """What the method carries, from the embedded CLEAN (B, F, N, D), the given flags (B, F, N) and
        the time table (F, D): concat -> the context stream (B, F, N, D); adaln -> the pooled vector
        (B, D); cross-attention -> (keys (B, 1 + F N, D), key mask (B, 1 + F N))."""
        if self.mode == "concat":
            return clean_tokens * flags.unsqueeze(-1) + self.context_embed
        tokens = (clean_tokens + time[None, :, None]) * flags.unsqueeze(-1)  # nothing where not given
        if self.mode == "adaln":
            pooled = tokens.sum((1, 2)) / flags.sum((1, 2)).clamp_min(1).unsqueeze(-1)
            return self.pool(pooled)
        B = tokens.shape[0]
        keys = torch.cat([self.null.expand(B, 1, -1).to(tokens.dtype), tokens.flatten(1, 2)], dim=1)
        keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=flags.device), flags.flatten(1) > 0.5], dim=1)
        return keys, keep

    def attend(self, i: int, h: torch.Tensor, context) -> torch.Tensor:
        """Cross-attention after spatial block i: h (B, F, N, D), every frame's tokens to the clip's given tokens."""
        keys, keep = context
        B, Fr, N, D = h.shape
        out = self.cross[i](h.reshape(B, Fr * N, D), keys, keep)
        return out.view(B, Fr, N, D)
