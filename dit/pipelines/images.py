"""Class-conditional images and clips from a pipeline: a grid of chosen classes, or an evaluation batch.

Sample i is drawn from seed spec.seed + i with its label, whatever the batch size or process count.
An evaluation batch (`sample_npz`) is written as shards that record what drew them (the pipeline's
`shard_settings`, dit/io/shards.py) and assembled into one .npz in the ADM evaluator's format; a
rerun keeps every shard whose record matches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dit.errors import UserError
from dit.io.atomic import write_json
from dit.io.images import save_png
from dit.io.shards import sample_to_npz
from dit.io.video import write_gif, write_grid
from dit.networks.conditioning import UNLABELLED, is_unconditional
from dit.pipelines.pipeline import Pipeline
from dit.pipelines.spec import SamplingSpec


def check_labels(labels, num_classes: int, what: str = "this model") -> None:
    bad = [int(c) for c in labels if not 0 <= c < num_classes]
    if bad:
        raise UserError(f"class labels {bad[:8]} are outside [0, {num_classes}); {what} has {num_classes} classes")


def make_labels(n: int, num_classes: int, mode: str, seed: int) -> np.ndarray:
    """Evaluation labels: uniform draws (ADM/DiT protocol) or each class equally often, shuffled; the null
    label throughout for an unconditional model (no classes to draw)."""
    if is_unconditional(num_classes):
        return np.full(n, UNLABELLED, dtype=np.int64)
    g = torch.Generator().manual_seed(seed)
    if mode == "uniform":
        return torch.randint(num_classes, (n,), generator=g).numpy()
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)].numpy()


def class_rows(classes) -> int | None:
    """Clips per row of a GIF/MP4 grid: one row per class when --classes lists each class's clips
    together, as many of each (0 0 1 1 -> 2 a row); else None (near-square)."""
    if not classes:
        return None
    runs = [1]
    for a, b in zip(classes, classes[1:]):
        runs[-1:] = [runs[-1] + 1] if a == b else [runs[-1], 1]
    return runs[0] if len(set(runs)) == 1 and len(runs) == len(set(classes)) else None


def save_grid(samples: np.ndarray, out: str, nrow: int | None, classes=None) -> None:
    """A PNG grid of images, or a GIF/MP4 grid of clips (one row per class where --classes allows)."""
    write_grid(samples, out, nrow or class_rows(classes if samples.ndim == 5 else None))


def save_each(samples: np.ndarray, folder: str) -> None:
    """One file per sample: a clip as a GIF of its own, an image as a PNG."""
    for i, sample in enumerate(samples):
        if sample.ndim == 4:
            write_gif(Path(folder) / f"{i:06d}.gif", sample[None])
        else:
            save_png(sample, Path(folder) / f"{i:06d}.png")


def report(stats: dict, spec: SamplingSpec) -> None:
    if stats.get("batches"):
        guided = " (2 network passes each with guidance)" if spec.cfg_scale != 1 else ""
        print(f"{spec.sampler}: {stats['nfe'] / stats['batches']:.1f} function evaluations per batch{guided}")


def sample_grid(pipe: Pipeline, spec: SamplingSpec, batch_size: int, device, show: bool = True) -> np.ndarray:
    """One sample per entry of spec.classes (or spec.num_samples with drawn labels), uint8 NHWC (NFHWC clips)."""
    classes = list(spec.classes) if spec.classes else make_labels(spec.num_samples, pipe.network.num_classes,
                                                                  spec.labels, spec.seed).tolist()
    if spec.classes:  # the labels a classifier guides towards, for an unconditional network with one
        if pipe.classifier is not None and is_unconditional(pipe.network.num_classes):
            check_labels(classes, pipe.classifier.num_classes, "the --classifier")
        else:
            check_labels(classes, pipe.network.num_classes)
    images, stats = [], {}
    for a in tqdm(range(0, len(classes), batch_size), desc="sampling", disable=not show):
        idx = list(range(a, min(a + batch_size, len(classes))))
        images.append(pipe.generate(spec, idx, [classes[i] for i in idx], device, stats))
    report(stats, spec)
    return np.concatenate(images)


def sample_prompts(pipe: Pipeline, spec: SamplingSpec, batch_size: int, device, show: bool = True) -> np.ndarray:
    """One sample per prompt of spec.prompts (sample i from seed spec.seed + i), uint8 NHWC."""
    prompts, images, stats = list(spec.prompts), [], {}
    for a in tqdm(range(0, len(prompts), batch_size), desc="sampling", disable=not show):
        idx = list(range(a, min(a + batch_size, len(prompts))))
        images.append(pipe.generate(spec, idx, [UNLABELLED] * len(idx), device, stats, prompts=[prompts[i] for i in idx]))
    report(stats, spec)
    return np.concatenate(images)


def sample_npz(pipe: Pipeline, spec: SamplingSpec, out: str | Path, batch_size: int, state, show: bool = True) -> None:
    """Resumable mass sampling of spec.num_samples samples with spec.labels labels into `out`, split
    over the processes of `state` (accelerate's PartialState)."""
    labels = make_labels(spec.num_samples, pipe.network.num_classes, spec.labels, spec.seed)
    stats = {}

    def draw(a: int, b: int) -> np.ndarray:
        return pipe.generate(spec, range(a, b), labels[a:b], state.device, stats)

    shape = sample_to_npz(Path(out), labels, batch_size, pipe.shard_settings(spec), draw, state, show=show)
    if shape is not None:  # the main process
        report(stats, spec)
        layout = "uint8 NFHWC clips" if len(shape) == 5 else "uint8 NHWC"
        # What decided the samples, the network evaluations per sample (NFE) among it, beside the array.
        nfe = pipe.count_nfe(spec, state.device)
        write_json(record_path(out), pipe.provenance(spec, shape[0]) | {"nfe": nfe})
        print(f"wrote {out}: {shape[0]} samples of {'x'.join(map(str, shape[1:-1]))}, {layout} under arr_0 "
              f"({nfe} network evaluations each; settings in {record_path(out).name})")


def record_path(npz: str | Path) -> Path:
    """The JSON record beside an .npz of samples: OUT.npz -> OUT.npz.json."""
    return Path(npz).with_name(Path(npz).name + ".json")
