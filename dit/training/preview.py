"""Preview grids during and after training: the EMA network sampled through the same function as sample.py."""

from __future__ import annotations

from dit.io.images import make_grid
from dit.networks.conditioning import UNLABELLED, is_unconditional
from dit.sampling.generate import generate_images

PREVIEW_SEED = 10_000  # previews always use the same noise, so successive grids show progress
UNCONDITIONAL_ROWS = 2  # an unconditional model's preview: this many rows of 4 x samples_per_class


def preview_labels(num_classes: int, per_class: int) -> list[int]:
    """Rows of the preview grid: every class of a small dataset, eight spread-out classes otherwise; the
    null label for an unconditional model (no classes)."""
    if is_unconditional(num_classes):
        return [UNLABELLED] * (UNCONDITIONAL_ROWS * 4 * per_class)
    classes = list(range(num_classes)) if num_classes <= 10 else [round(i * (num_classes - 1) / 7) for i in range(8)]
    return [c for c in classes for _ in range(per_class)]


def preview_cfg(config, num_classes: int, prompts=None) -> float:
    """--sample-cfg, or 1 for an unconditional model without prompts (both guidance branches are the same:
    nothing to guide) and for a process that folded guidance into training (MeanFlow with --meanflow-cfg)."""
    folded = config.make_process().guidance_refusal is not None
    return 1.0 if (is_unconditional(num_classes) and not prompts) or folded else config.sample_cfg


def preview_grid(ema_model, process, autoencoder, config, num_classes: int, device, prompts: list[str] | None = None):
    """A grid from the EMA network, sampled on `device`; the network goes back where it was (under
    FSDP the gathered EMA lives in the main process's CPU memory and must not stay on its GPU). `prompts`: a
    text network's (samples_per_class of each, one row per prompt), instead of classes."""
    labels = preview_labels(num_classes, config.samples_per_class) if not prompts else \
        [UNLABELLED] * (len(prompts) * config.samples_per_class)
    text = ema_model.encode_text([p for p in prompts for _ in range(config.samples_per_class)], features=True) \
        if prompts else None
    seeds = [PREVIEW_SEED + i for i in range(len(labels))]
    home = next(ema_model.parameters()).device
    try:
        images = generate_images(ema_model.to(device), autoencoder, process, seeds, labels, config.sample_sampler,
                                 config.sample_steps, preview_cfg(config, num_classes, prompts), text=text)
    finally:
        ema_model.to(home)
    if images.ndim == 5:  # clips (N, F, H, W, 3): one row per clip, its frames left to right
        return make_grid(images.reshape(-1, *images.shape[2:]), nrow=images.shape[1])
    if prompts:  # a row per prompt, or all prompts in one row when each is drawn once
        return make_grid(images, nrow=config.samples_per_class if config.samples_per_class > 1 else len(prompts))
    return make_grid(images, nrow=config.samples_per_class * (4 if is_unconditional(num_classes) else 1))
