"""Joint image-video training (Latte+IMG, Ma et al. 2024 §3.3): single frames ride along each clip.

Latte appends images to every video batch and lets them through the spatial blocks only, so the
spatial layers keep learning appearance from more, and more varied, frames than the clips give.
Here each training clip (F, C, H, W) gets `images` extra frames after it, (F + images, C, H, W):
frame i is a random frame of a random other clip OF THE SAME CLASS (one label per sample, the
class conditioning stays right), all drawn from the sample's stream generator. The stream marks
the sample with cond key IMAGES (dit/layout.py) so the network keeps them out of its temporal
parts; masks never give them; the loss covers them like any generated position.
"""

from __future__ import annotations

import numpy as np
import torch


def _labels(base) -> list[int]:
    if hasattr(base, "labels"):  # InMemoryClips
        return [int(v) for v in base.labels]
    return [int(label) for _, label in base.samples]  # VideoFolderDataset


class JointImages:
    """A clip base dataset (get(index, rng) -> (clip, label, unreadable)) whose clips carry `images`
    extra same-class frames; the base-dataset interface of dit/data/stream.py."""

    def __init__(self, base, images: int):
        if images < 1:
            raise ValueError(f"images must be >= 1, got {images}")
        self.base, self.joint_images = base, images
        self.num_classes, self.class_names = base.num_classes, base.class_names
        labels = _labels(base)
        self.by_class = [np.flatnonzero(np.asarray(labels) == k) for k in range(base.num_classes)]

    def __len__(self) -> int:
        return len(self.base)

    def get(self, index: int, rng: np.random.Generator):
        clip, label, unreadable = self.base.get(index, rng)
        frames = []
        for _ in range(self.joint_images):  # draws, in order: the other clip, its frame, then whatever base.get draws
            pool = self.by_class[label]
            other = int(pool[rng.integers(len(pool))])
            frame = int(rng.integers(clip.shape[0]))
            x, _, bad = self.base.get(other, rng)
            frames.append(x[frame])
            unreadable = unreadable or bad
        return torch.cat([clip, torch.stack(frames)]), label, unreadable
