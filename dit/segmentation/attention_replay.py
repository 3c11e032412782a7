"""Attention injection (EmerDiff §3.3): record every self-attention map of a pass, replay them later.

A modulated denoising pass that recomputed its attention would let the perturbation move the maps
as well as the values, and the change would spread over the whole image. Replaying the maps of the
unmodulated pass keeps it where the perturbed tokens are read. The switch itself is
`Attention.mode` (dit/networks/layers.py); this module drives it for a whole network, one network
call at a time:

    tape = AttentionTape(model)
    with tape.recording():
        out = model(x, t, y)
        maps = tape.take()                 # one (N, heads, T, T) tensor per attention layer
    with tape.replaying():
        tape.load(maps, repeats=4)         # each map used for 4 consecutive samples of the batch
        out = model(x4, t4, y4)
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from dit.networks.layers import Attention


class AttentionTape:
    """Records and replays the self-attention maps of every `Attention` layer of `model`, in module order."""

    def __init__(self, model: torch.nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, Attention)]
        if not self.layers:
            raise ValueError("the network has no self-attention layers to record")

    @contextmanager
    def _mode(self, mode: str):
        for layer in self.layers:
            layer.mode, layer.probs = mode, None
        try:
            yield self
        finally:  # back to the fused kernel, nothing kept
            for layer in self.layers:
                layer.mode, layer.probs = None, None

    def recording(self):
        return self._mode("record")

    def replaying(self):
        return self._mode("replay")

    def take(self) -> list[torch.Tensor]:
        """The maps of the last network call (recording), one per layer."""
        maps = [layer.probs for layer in self.layers]
        if any(m is None for m in maps):
            raise RuntimeError("no recorded attention: call the network inside recording() first")
        return maps

    def load(self, maps: list[torch.Tensor], repeats: int = 1) -> None:
        """Maps for the next network call (replaying); sample n of `maps` serves samples
        n * repeats ... (n + 1) * repeats - 1 of that call's batch."""
        if len(maps) != len(self.layers):
            raise ValueError(f"{len(maps)} maps for {len(self.layers)} attention layers")
        for layer, m in zip(self.layers, maps):
            layer.probs = m if repeats == 1 else m.repeat_interleave(repeats, dim=0)
