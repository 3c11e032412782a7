"""Token features of a DiT for low-resolution masks (EmerDiff §3.2, on a DiT instead of SD's U-Net).

The image is noised lightly (a small t: the network sees the image almost as it is) with a fixed
noise draw per image and run once with the null label, so no class information leaks in; the
features are a middle block's output (its residual stream, "hidden") or the queries of its
self-attention ("query", EmerDiff's choice in SD), read by forward hooks: the network is unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from dit.segmentation.inversion import level

FEATURES = ("hidden", "query")


def num_tokens(model) -> int:
    side = model.input_size // model.patch_size
    return side * side


def null_labels(model, n: int, device) -> torch.Tensor:
    return torch.full((n,), model.null_class, dtype=torch.long, device=device)


@contextmanager
def capture(module: torch.nn.Module, store: list):
    """Append `module`'s output to `store` at every call."""
    handle = module.register_forward_hook(lambda _m, _i, out: store.append(out))
    try:
        yield store
    finally:
        handle.remove()


@torch.no_grad()
def token_features(model, process, x0: torch.Tensor, t: float, block: int, kind: str,
                   noise: torch.Tensor) -> torch.Tensor:
    """x0 (N, C, H, W) clean model inputs -> (N, T, D) features of `block` at time t, tokens in raster order."""
    if kind not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {kind!r}")
    lv = level(process, t)
    x_t = lv.a * x0 + lv.s * noise
    dtype = torch.long if process.discrete_time else torch.float32
    tt = torch.full((x0.shape[0],), lv.t, dtype=dtype, device=x0.device)
    target = model.blocks[block] if kind == "hidden" else model.blocks[block].attn.qkv
    with capture(target, []) as out:
        model(x_t, process.network_time(tt), null_labels(model, x0.shape[0], x0.device))
    feats = out[0][:, : num_tokens(model)]  # in-context conditioning appends t and y tokens: not image tokens
    if kind == "query":  # qkv's features are laid out (3, heads, head_dim): q is the first third
        feats = feats[..., : feats.shape[-1] // 3]
    return feats.float()
