"""diffusers' text-conditioned token transformer (VQ-Diffusion's, e.g. microsoft/vq-diffusion-ithq) as a
network of our contract: forward(x, t, cond) -> log p(x~0 | x_t, text) over the K regular ids.

The wrapped `Transformer2DModel` has discrete input (`num_vector_embeds` = K + 1, `is_input_vectorized`):
an embedding of the K + 1 ids plus a learned position table (ImagePositionalEmbeddings), blocks with
self-attention, cross-attention to the text and AdaLayerNorm(t) (`num_embeds_ada_norm` steps), and a
final Linear to K logits followed by a log-softmax over K, computed in float64 and returned as float32,
(B, K, L). Conventions bridged here, nowhere else:

    ours (dit/processes/vq_schedule.py)        diffusers
    x (B, H, W) or (B, L) ids, [MASK] = K       hidden_states (B, L) ids, mask class num_vector_embeds - 1 = K
    t in 1..T, one per sample                   timestep i = t - 1, ONE per call (AdaLayerNorm.emb(i) is
                                                chunked along dim 0: a (B,) timestep would split the batch)
    cond["text"] (B, S, D)                      encoder_hidden_states (B, S, D)
    output (B, K, H, W) log-probs (axis 1)      sample (B, K, L)

A batch whose samples sit at different t is run one t at a time (samplers keep one t per batch, so
that is one call). Not registered as an architecture: it is only ever built from a pipeline directory
(dit/pipelines/vq_text.py), never trained or exported here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from dit.networks.conditioning import TEXT  # the cond key of the (normalised) text embeddings, (B, S, D)



@dataclass(frozen=True)
class TextTokenConfig:
    codebook_size: int  # K: ids 0..K-1, [MASK] = K
    height: int
    width: int
    timesteps: int  # the AdaLayerNorm table's length (>= the process's T)
    text_length: int  # S, the tokenizer's model_max_length
    text_dim: int  # D, the text encoder's width = the cross-attention width

    def to_dict(self) -> dict:
        return asdict(self)


class TextTokenTransformer(nn.Module):
    """A diffusers Transformer2DModel over token ids (module docstring)."""

    num_classes = 0  # conditioned on text, not labels
    null_class = None

    def __init__(self, transformer, text_length: int):
        super().__init__()
        cfg = transformer.config
        self.transformer = transformer
        self.config = TextTokenConfig(codebook_size=cfg.num_vector_embeds - 1, height=transformer.height,
                                      width=transformer.width, timesteps=cfg.num_embeds_ada_norm,
                                      text_length=int(text_length), text_dim=cfg.cross_attention_dim)

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.config.height, self.config.width)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        B, K = x.shape[0], self.config.codebook_size
        ids = x.reshape(B, -1).long()  # (B, L), raster order: diffusers' latent pixel order
        text = cond[TEXT]
        step = (torch.as_tensor(t, device=x.device).reshape(-1).expand(B).round().long() - 1)  # diffusers' index
        values = step.unique()
        if len(values) == 1:
            out = self.transformer(ids, encoder_hidden_states=text, timestep=values[0]).sample  # (B, K, L)
        else:
            out = ids.new_empty((B, K, ids.shape[1]), dtype=torch.float32)
            for i in values:
                rows = step == i
                out[rows] = self.transformer(ids[rows], encoder_hidden_states=text[rows], timestep=i).sample.float()
        return out.reshape(B, K, *x.shape[1:])  # (B, K, H, W) or (B, K, L)
