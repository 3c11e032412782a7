"""The training data stream: which sample each process sees at each step, and all its randomness.

Reproducibility is structural (EDM2-style). The stream is the concatenation of per-epoch
permutations of the dataset (epoch e shuffled by seed and e); "position" p is a sample's place
in that infinite stream. Optimizer step s consumes positions [s*B, (s+1)*B) for global batch B:
micro-batch k of process r takes the slice of b = B / (processes * accum) positions starting at
s*B + (k*processes + r)*b. Everything random about a training sample (flip, the latent drawn from
the VAE posterior, label dropout, and what the process draws: for the Gaussian process the
timestep and the noise) is drawn from `np.random.default_rng([seed, p])`. The stream owns the
generator; the process decides what to draw from it (`process.draw`). Hence:
- resuming at step s only needs s (no RNG state, no data-loader state);
- the same global batch on 1, 2 or 8 processes, with any gradient accumulation, trains on exactly
  the same samples with the same noise, so results agree to float rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from dit.autoencoders.pixels import from_uint8
from dit.errors import UserError
from dit.networks.conditioning import NO_CLASSES, UNLABELLED


class TrainingItems(torch.utils.data.Dataset):
    """Wraps a base dataset with `get(index, rng) -> (x, label, unreadable)`; items are keyed by
    stream position.

    `__getitem__((position, index))` returns a dict: "x" what the base gives (pixels, or a latent
    from a cache), "y" the label, "draws" what `process.draw` drew (Gaussian: "t", "noise"), "drop"
    1 where the label is dropped for classifier-free guidance, and with `posterior_noise` (images
    encoded by the VAE during training) "post_noise" for drawing the latent from q(z|x), and with
    `mask` (video mask modelling, dit/data/video_masks.py: rng -> GIVEN mask) "given", and with `captions`
    ((index, rng) -> the cond entries of a caption of sample `index`: dit/training/captions.py) "cond".
    """

    def __init__(self, base, seed: int, process, label_dropout: float, latent_shape: tuple[int, ...],
                 posterior_noise: bool = False, mask=None, buckets=None, captions=None):
        self.base, self.seed, self.process, self.captions = base, seed, process, captions
        self.label_dropout, self.latent_shape = label_dropout, tuple(latent_shape)
        self.posterior_noise, self.mask = posterior_noise, mask
        # Aspect-ratio buckets (dit/data/buckets.py): (bucket of each index, latent shape of each bucket).
        self.bucket_of, self.bucket_shapes = buckets or (None, None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        position, index = key
        rng = np.random.default_rng([self.seed, position])
        # Draw order is fixed: changing it changes every run's data, so append new draws at the end.
        x, y, unreadable = self.base.get(index, rng)
        shape = self.latent_shape if self.bucket_of is None else tuple(self.bucket_shapes[self.bucket_of[index]])
        draws = self.process.draw(rng, shape)
        drop = int(rng.random() < self.label_dropout)
        # unreadable: this position's file could not be decoded and the next readable one stands in
        item = {"x": x, "y": y, "draws": draws, "drop": drop, "unreadable": int(unreadable)}
        if self.posterior_noise:
            item["post_noise"] = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
        if self.mask is not None:
            item["given"] = torch.from_numpy(self.mask(rng))
        if getattr(self.base, "joint_images", 0):  # joint image-video training (dit/data/joint.py)
            item["images"] = self.base.joint_images
        if self.captions is not None:  # the caption's draws (a template, synonyms) come last
            item["cond"] = self.captions(index, rng)
        return item


class StreamBatches(torch.utils.data.Sampler):
    """Batch sampler: yields this process's micro-batches [(position, index), ...] from `start_step` on.

    Infinite; the training loop decides when to stop. Each epoch is a fresh permutation of
    range(dataset_size) generated from (seed, epoch) alone, so every process computes the same one.
    """

    def __init__(self, dataset_size: int, global_batch: int, num_processes: int, rank: int, accum: int,
                 seed: int, start_step: int = 0):
        if dataset_size < 1:
            raise UserError("the dataset is empty")
        self.n, self.B, self.P, self.r, self.accum = dataset_size, global_batch, num_processes, rank, accum
        self.b = per_process_batch(global_batch, num_processes, accum)
        self.seed, self.start_step = seed, start_step
        self._perm_epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g).tolist(), epoch
        return self._perm[offset]

    def micro_batch(self, step: int, k: int) -> list[tuple[int, int]]:
        start = step * self.B + (k * self.P + self.r) * self.b
        return [(p, self._index(p)) for p in range(start, start + self.b)]

    def __iter__(self):
        step = self.start_step
        while True:
            for k in range(self.accum):
                yield self.micro_batch(step, k)
            step += 1

    def __len__(self) -> int:  # DataLoader asks; the stream is effectively endless
        return 2**62


def per_process_batch(global_batch: int, num_processes: int, accum: int) -> int:
    if global_batch % (num_processes * accum):
        raise UserError(
            f"global batch size {global_batch} is not divisible by {num_processes} processes x {accum} "
            f"accumulation steps; choose a multiple of {num_processes * accum}"
        )
    return global_batch // (num_processes * accum)


def flip_or_not(x: torch.Tensor, rng: np.random.Generator, enabled: bool) -> torch.Tensor:
    """The paper's only augmentation: mirror left-right with probability 1/2 (one draw either way)."""
    flip = rng.random() < 0.5
    return x.flip(-1) if enabled and flip else x


class InMemoryImages:
    """Pixel images held as uint8 (N, 3, H, W) with labels: the built-in shapes, rendered once."""

    def __init__(self, images_uint8: torch.Tensor, labels: torch.Tensor, flip: bool, num_classes: int,
                 class_names: list[str] | None = None):
        self.images, self.labels, self.flip = images_uint8, labels, flip
        self.num_classes, self.class_names = num_classes, class_names

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, index: int, rng: np.random.Generator):
        x = from_uint8(self.images[index])  # (3, H, W) in [-1, 1]
        return flip_or_not(x, rng, self.flip), int(self.labels[index]), False


class Unlabelled:
    """Any base dataset with its labels dropped (train.py --unconditional): no classes, every sample the
    null label (dit/networks/conditioning.py is_unconditional). Everything else is the base's."""

    num_classes = NO_CLASSES
    class_names: list[str] = []

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def get(self, index: int, rng: np.random.Generator):
        x, _, replaced = self.base.get(index, rng)
        return x, UNLABELLED, replaced

    def __getattr__(self, name: str):
        if name == "base":  # not set yet (unpickling in a loader worker): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)


def collate(items: list[dict]) -> dict:
    """Stack per-sample dicts key by key (nested dicts too): tensors stacked, numbers to a tensor."""
    out = {}
    for k in items[0]:
        v = [it[k] for it in items]
        if isinstance(v[0], dict):
            out[k] = collate(v)
        elif isinstance(v[0], torch.Tensor):
            out[k] = torch.stack(v)
        else:
            out[k] = torch.tensor(v)
    return out


def make_loader(items: TrainingItems, batches: StreamBatches, num_workers: int, pin_memory: bool):
    """The endless iterator of collated micro-batches this process trains on."""
    return iter(torch.utils.data.DataLoader(items, batch_sampler=batches, num_workers=num_workers, collate_fn=collate,
                                            pin_memory=pin_memory, persistent_workers=num_workers > 0))
