"""The trainable text encoder: a small transformer over caption token ids, trained jointly with the DiT (the
CPU default of the text-conditioned DiT, text_dit.py).

ids (B, S) long, PAD 0 (text_tokenizer.py) -> features (B, S, W), zero at padding, and the mask (B, S),
True at real tokens. Token embedding plus a learned position table of `length` rows (any S <= length
works, so padding a caption further changes nothing), pre-norm blocks with masked self-attention
(text_blocks.EncoderBlock), a final LayerNorm. `pooled` is the mean of the real tokens' features (zero for
an empty caption): what the pooled and joint conditionings add to t's embedding.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dit.networks.text_blocks import EncoderBlock
from dit.networks.text_tokenizer import PAD


class TextEncoder(nn.Module):
    def __init__(self, vocab_size: int, length: int, width: int, depth: int, num_heads: int):
        super().__init__()
        self.length = length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embedding = nn.Parameter(torch.zeros(1, length, width))
        self.blocks = nn.ModuleList(EncoderBlock(width, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embedding, std=0.02)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.shape[1] > self.length:
            raise ValueError(f"captions of {ids.shape[1]} tokens, but the encoder's positions stop at {self.length}")
        mask = ids != PAD
        x = self.token_embedding(ids) + self.pos_embedding[:, : ids.shape[1]]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) * mask.unsqueeze(-1).to(x.dtype), mask


def pooled(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of the real tokens' features (B, W); zero where a caption has none."""
    m = mask.unsqueeze(-1).to(features.dtype)
    return (features * m).sum(1) / m.sum(1).clamp(min=1)
