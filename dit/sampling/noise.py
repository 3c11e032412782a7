"""Per-sample noise: the reproducibility rule.

Sample i of a run is drawn from seed `base + i`, whatever the batch size or the number of processes
(as EDM2's generate_images.py does). Each sample owns a torch.Generator, so its initial noise AND
every per-step noise of an ancestral sampler depend only on its seed: splitting [0, 1, 2, 3] into
batches [0, 1] and [2, 3] gives identical samples.

Anything that takes a noise callable `noise(like) -> Tensor` also accepts plain `torch.randn_like`
(the global RNG: faster to set up, but then results depend on the batching).
"""

from collections.abc import Sequence

import torch


class PerSampleNoise:
    """noise(like) -> standard normal (B, *like.shape[1:]) whose row b comes only from generator b.

    `generators` (one per batch row) is also what diffusers' schedulers take as `generator=`: their
    `randn_tensor` draws row b from generators[b] with shape (1, ...), the same draw as here.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(s) for s in self.seeds]

    @classmethod
    def for_samples(cls, base_seed: int, indices: Sequence[int], device="cpu") -> "PerSampleNoise":
        """Noise for global sample indices `indices` of a run seeded with `base_seed`."""
        return cls([base_seed + i for i in indices], device)

    def __len__(self) -> int:
        return len(self.generators)

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        if like.shape[0] != len(self.generators):
            raise ValueError(f"batch of {like.shape[0]} rows but {len(self.generators)} per-sample generators")
        # Always drawn in float32 and then cast, so a seed gives the same noise in any dtype.
        rows = [torch.randn(like.shape[1:], generator=g, device=self.device, dtype=torch.float32)
                for g in self.generators]
        return torch.stack(rows).to(device=like.device, dtype=like.dtype)  # (B, *like.shape[1:])

    def initial(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """x_T for one sample shape (C, H, W) -> (B, C, H, W) on this object's device."""
        return self(torch.empty(len(self), *shape, device=self.device, dtype=dtype))
