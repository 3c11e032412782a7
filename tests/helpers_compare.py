"""Comparisons that can fail (issue 31; the policy: tests/README.md).

A tiny model trained a few steps, or a random one, often draws images that are almost all 0 or 255:
its float output lies far outside [-1, 1] and `to_uint8` clamps it. Two such uint8 images are equal
for almost any change of sampler, steps, guidance or label, so a uint8 comparison against them
proves nothing. `check_informative` refuses such a reference; `capture_floats` records the float
images before quantisation, to compare those instead.
"""

from __future__ import annotations

import numpy as np
import torch

SATURATED_LIMIT = 0.9  # a reference with this share (or more) of its values at 0 or 255 is refused


def saturated_share(images) -> float:
    """The share of values that quantise to 0 or 255: uint8 values at either end, float values
    (the package's [-1, 1] convention) at or beyond +-1 (what to_uint8 clamps)."""
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.dtype == np.uint8:
        return float(np.isin(x, (0, 255)).mean())
    return float((np.abs(x.astype(np.float64)) >= 1).mean())


def check_informative(reference, what: str = "reference") -> None:
    """Refuse a quantised reference that is SATURATED_LIMIT or more saturated: comparing to it cannot
    tell samples apart. Compare float outputs before quantisation instead (`capture_floats`), or draw
    from a model whose samples are mid-range."""
    share = saturated_share(reference)
    assert share < SATURATED_LIMIT, (
        f"{what} is {share:.1%} saturated (0 or 255): a comparison of quantised samples cannot tell them apart; "
        "compare the float outputs before quantisation (helpers_compare.capture_floats) or use a model whose "
        "samples are mid-range")


def same_across_batches(a, b, levels: int = 1, share: float = 0.01) -> None:
    """uint8 samples drawn with other batch sizes, process counts or files: the same draws, each value
    within `levels` uint8 levels on under `share` of the values (the measured tolerance of the caller's
    test: kernels at another batch size round differently, and a float on a rounding boundary lands one
    level away). `b` is the reference and must be informative. A wrong seed, label or step moves far
    more values by far more than one level."""
    a, b = np.asarray(a), np.asarray(b)
    check_informative(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = np.abs(a.astype(int) - b.astype(int))
    off = float((diff > 0).mean())
    assert diff.max() <= levels and off < share, (
        f"max |difference| {diff.max()} uint8 levels (allowed {levels}) on {off:.2%} of the values "
        f"(allowed < {share:.2%})")


def same_ids(a, b, share: float = 0.01) -> None:
    """Token ids or segment labels drawn with other batch sizes or process counts: the same draws, but a
    float difference in the last bit can move a value on a decision boundary, so fewer than `share` of
    them may differ (a wrong seed or label changes most of them)."""
    a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    assert a.shape == b.shape, (a.shape, b.shape)
    off = float((a != b).float().mean())
    assert off < share, f"{off:.2%} of the ids differ (allowed < {share:.2%})"


class capture_floats:
    """Record the float images that dit.sampling.generate.generate_images (and the text pipeline's
    decoder, dit/pipelines/vq_text.py) quantise, one tensor per call, in call order:

        with capture_floats(monkeypatch) as floats:
            run_cli(sample.main, argv)
        images = floats.cat()  # (N, C, H, W) or (N, F, C, H, W), float32 on the CPU
    """

    def __init__(self, monkeypatch):
        self.calls: list[torch.Tensor] = []
        self._monkeypatch = monkeypatch

    def __enter__(self):
        import dit.autoencoders.pixels as pixels
        import dit.sampling.generate as generate

        real = pixels.to_uint8

        def recording(images):
            self.calls.append(images.detach().float().cpu().clone())
            return real(images)

        self._saved = [(module, module.to_uint8) for module in (generate, pixels)]
        for module, _ in self._saved:
            self._monkeypatch.setattr(module, "to_uint8", recording)
        return self

    def __exit__(self, *exc):
        for module, fn in self._saved:
            self._monkeypatch.setattr(module, "to_uint8", fn)
        return False

    def cat(self) -> torch.Tensor:
        assert self.calls, "nothing was quantised while capturing"
        return torch.cat(self.calls)
