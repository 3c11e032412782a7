"""Ground truth for the built-in shapes: images with the renderer's coverage masks.

Image i of seed s is `render_with_mask(i % 10, default_rng([s, i]), size)`, as ShapesDataset draws
it, so the pixels are the dataset's; a pixel belongs to the shape where its coverage exceeds 1/2.
The seeds here are not the training data's (0) nor evaluate.py's reference (20,000).
"""

from __future__ import annotations

import numpy as np
import torch

from dit.data.shapes import CLASS_NAMES, render_with_mask

SEED = 30_000  # segment.py --shapes and the benchmark's test set
VALIDATION_SEED = 30_001  # the benchmark's settings are chosen on these


def shapes_with_truth(n: int, size: int, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(images (n, 3, size, size) in [-1, 1], truth bool (n, size, size), class labels)."""
    images, masks, labels = [], [], []
    for i in range(n):
        label = i % len(CLASS_NAMES)
        img, cover = render_with_mask(label, np.random.default_rng([seed, i]), size)
        images.append(torch.from_numpy(img).permute(2, 0, 1).mul(2).sub(1))
        masks.append(torch.from_numpy(cover > 0.5))
        labels.append(label)
    return torch.stack(images), torch.stack(masks), labels
