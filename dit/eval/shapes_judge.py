"""A small CNN trained on the built-in shapes, to judge class-conditional samples offline.

Two uses: the fraction of samples for class y that it classifies as y (does the model follow its
label?), and a Fréchet distance between its penultimate features on samples and on real images
(the FID recipe of Heusel et al. 2017 with this network standing in for Inception-v3, which would
need a download and sees 32 px shapes badly). Both need a fixed network, so weights are cached
per (image size, seed, steps, versions) and trained once, in well under a minute on two CPU cores.

Colour alone identifies a class, so a plain classifier learns only colour (measured: shown a
shape in another class's colour it followed the colour 99% of the time) and would accept a red
blob as a red circle. It therefore has an eleventh output, OTHER, trained on shapes painted in
the wrong class's colour: a sample counts as class y only if both its shape and colour match.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from dit.io.atomic import atomic_path

from dit.data import shapes

VERSION = "1"  # bump when the architecture or the training recipe changes
DEFAULT_STEPS = 600
FEATURE_DIM = 128
OTHER = len(shapes.CLASS_NAMES)  # logit index for "a shape in the wrong colour"


class ShapesClassifier(nn.Module):
    """Four conv blocks (each halves the resolution), global average pool, linear: 243k params.

    Global pooling makes it work at any image size (16 px and up) and gives a position-invariant
    feature vector. Four blocks rather than three: on the OTHER task (below) three blocks reach
    97% after 800 steps, four reach 98.6% after 600 in less time.
    """

    def __init__(self, num_classes: int = OTHER + 1, width: int = 32):
        super().__init__()
        chans = [3, width, 2 * width, FEATURE_DIM, FEATURE_DIM]
        # BatchNorm replaces the conv bias; each block halves H and W.
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                          nn.MaxPool2d(2))
            for cin, cout in zip(chans[:-1], chans[1:])
        ])  # fmt: skip
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, 128) penultimate activations (for a Fréchet distance)."""
        return self.blocks(x).mean(dim=(2, 3))  # (N, C, H/16, W/16) -> (N, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, 11) logits, the last one OTHER


def mismatched(num_images: int, image_size: int = 32, seed: int = 0) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1]: shape k painted in the colour of class k + j, j in 1..9."""
    out = []
    for i in range(num_images):
        rng = np.random.default_rng([seed, 1, i])  # not [seed, i]: independent of ShapesDataset
        label, shift = i % OTHER, 1 + rng.integers(OTHER - 1)
        hwc = shapes.render(label, rng, image_size, color=(label + shift) % OTHER)
        out.append(torch.from_numpy(hwc).permute(2, 0, 1))
    return torch.stack(out).mul(2).sub(1)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of `images` ((N, 3, H, W) in [-1, 1]) whose argmax logit equals `labels`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model(images[i : i + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == labels[i : i + batch_size]).sum().item()
    model.train(was_training)
    return correct / max(len(images), 1)


def train_classifier(
    image_size: int = 32, seed: int = 0, steps: int = DEFAULT_STEPS, batch_size: int = 64,
    num_images: int = 5000, device: str | torch.device = "cpu", verbose: bool = False,
) -> ShapesClassifier:  # fmt: skip
    """Train on ShapesDataset(seed) with random horizontal flips; returns the model in eval mode.

    Half the training images are OTHER negatives (`mismatched`). Adam at 3e-3 with a cosine
    decay; the default 600 steps of batch 64 take ~40 s on two CPU cores and give >= 99% held-out
    accuracy, with ~98.5% of wrong-colour shapes rejected as OTHER. Measured on images of
    another seed (fresh draws): `model.heldout_accuracy` on 1,000 dataset images, and
    `model.heldout_other` the fraction of 500 wrong-colour shapes called OTHER.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = shapes.ShapesDataset(num_images, image_size, seed).tensors()
    negatives = mismatched(num_images, image_size, seed)  # half the training data
    images = torch.cat([images, negatives])
    labels = torch.cat([labels, torch.full((len(negatives),), OTHER)])
    model = ShapesClassifier().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    t0 = time.time()
    model.train()
    for step in range(steps):
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        x, y = images[idx], labels[idx]
        flip = torch.rand(batch_size, generator=gen) < 0.5  # the DiT paper's augmentation
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        cross_entropy_step(model, opt, sched, x, y, device, "classifier", step, steps, t0, verbose)
    model.eval()
    # A seed far from any training seed: held-out images are fresh draws.
    test_x, test_y = shapes.ShapesDataset(1000, image_size, seed + 10_000).tensors()
    model.heldout_accuracy = accuracy(model, test_x, test_y)
    wrong = mismatched(500, image_size, seed + 10_000)
    model.heldout_other = accuracy(model, wrong, torch.full((len(wrong),), OTHER))
    model.train_seconds = time.time() - t0
    if verbose:
        print(f"classifier held-out accuracy {model.heldout_accuracy:.4f}, wrong colour -> OTHER "
              f"{model.heldout_other:.4f}, trained in {model.train_seconds:.1f}s")
    return model


def cache_path(
    cache_dir: str | os.PathLike, image_size: int = 32, seed: int = 0, steps: int = DEFAULT_STEPS
) -> Path:
    """Weights file for one setting: any change to data, recipe or network gets a new name."""
    name = f"shapes-cnn-v{VERSION}-data{shapes.VERSION}-{image_size}px-seed{seed}-steps{steps}.safetensors"
    return Path(cache_dir) / name


def load_or_train(
    cache_dir: str | os.PathLike, image_size: int = 32, seed: int = 0, steps: int = DEFAULT_STEPS,
    device: str | torch.device = "cpu", verbose: bool = False,
) -> ShapesClassifier:  # fmt: skip
    """The cached classifier for this setting, training and caching it first if needed (eval mode)."""
    path = cache_path(cache_dir, image_size, seed, steps)
    model = ShapesClassifier()
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        with safe_open(str(path), "pt") as f:  # the held-out scores measured when it was trained
            for key, value in (f.metadata() or {}).items():
                setattr(model, key, float(value))
        return model.to(device).eval()
    model = train_classifier(image_size, seed, steps, device=device, verbose=verbose)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a killed run never leaves a half-written file that a later run would load.
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {k: f"{getattr(model, k):.4f}" for k in ("heldout_accuracy", "heldout_other")}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return model


def cross_entropy_step(model, opt, sched, x, y, device, name: str, step: int, steps: int, t0: float,
                       verbose: bool) -> None:
    """One optimiser step of a judge on cross-entropy (the shapes classifier and the video judges
    train the same way), with a progress line every 100 steps when `verbose`."""
    loss = F.cross_entropy(model(x.to(device)), y.to(device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    if verbose and (step % 100 == 0 or step == steps - 1):
        print(f"{name} step {step}: loss {loss.item():.4f} ({time.time() - t0:.1f}s)")


def cached_judge(path: Path, empty: nn.Module, train, keys, device) -> nn.Module:
    """A judge network from its safetensors cache `path` (its scalar attributes `keys`, e.g. held-out
    scores, in the file's metadata), or `train()`ed and cached first (written then renamed, so never
    half a file); eval mode on `device` either way. The video judges share it."""
    if path.exists():
        empty.load_state_dict(load_file(str(path)))
        with safe_open(str(path), "pt") as f:
            for key, value in (f.metadata() or {}).items():
                setattr(empty, key, float(value))
        return empty.to(device).eval()
    model = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {k: f"{getattr(model, k):.4f}" for k in keys if hasattr(model, k)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return model.to(device).eval()
