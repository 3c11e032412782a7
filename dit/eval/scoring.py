"""Per-sample scores and bootstrap intervals: a metric computed once per sample, then on any resample.

A scorer's `per_sample(images, labels)` keeps what each sample contributes (judge features and hits,
or Inception features and logits); `statistics(data, idx)` is the metric of all samples (idx None:
exactly the metric of dit/eval/metrics.py) or of a resample, with no network call. `bootstrap` turns
that into percentile intervals. The benchmarks (sampler_quality, time_to_quality, ssm_vs_dit,
vq_diffusion) share them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dit.errors import UserError

LEVEL = 0.95  # bootstrap interval coverage
LOWER_BETTER, HIGHER_BETTER = ("fd_shapes", "fid"), ("class_acc", "inception_score")  # distances never below 0


class ShapesScorer:
    """fd_shapes and class_acc (dit/eval/metrics.py ShapesMetric) from what each sample contributes,
    computed once: its classifier features (for the Fréchet distance) and whether the classifier
    assigns it its class. A resample is then a row selection, with no classifier call."""

    keys = ("fd_shapes", "class_acc")

    def __init__(self, metric):
        self.metric = metric
        from dit.eval.metrics import FrechetToReference

        self.fd_to_ref = FrechetToReference(metric.ref_mu, metric.ref_sigma)

    def per_sample(self, images: np.ndarray, labels: np.ndarray) -> dict:
        import torch

        m = self.metric
        if images.shape[1] != m.image_size:
            raise UserError(f"samples are {images.shape[1]} px but the metric was built for {m.image_size} px")
        x = m.to_float(images)
        with torch.no_grad():  # as ShapesMetric does: features in batches of 500, logits = head(features)
            feats = torch.cat([m.classifier.features(x[i : i + 500].to(m.device)).cpu() for i in range(0, len(x), 500)])
            predicted = m.classifier.head(feats.to(m.device)).argmax(1).cpu().numpy()
        return {"features": feats.double().numpy(), "hits": (predicted == np.asarray(labels)).astype(np.float64)}

    def statistics(self, data: dict, idx=None) -> dict:
        """The metrics of all samples (idx None: exactly ShapesMetric's numbers) or of the resample idx."""
        from dit.eval.metrics import feature_statistics, frechet_distance

        if idx is None:
            fd = frechet_distance(*feature_statistics(data["features"]), self.metric.ref_mu, self.metric.ref_sigma)
            return {"fd_shapes": fd, "class_acc": float(data["hits"].mean())}
        return {"fd_shapes": self.fd_to_ref(data["features"][idx]), "class_acc": float(data["hits"][idx].mean())}


class InceptionScorer:
    """FID and Inception Score from per-sample pool_3 features and logits (one Inception pass)."""

    keys = ("fid", "inception_score")

    def __init__(self, reference, cache_dir):
        from dit.eval.metrics import FrechetToReference, InceptionFeatures, reference_statistics

        self.extractor = InceptionFeatures()
        self.ref = reference_statistics(reference, self.extractor, cache_dir)
        self.fd_to_ref = FrechetToReference(self.ref["mu"], self.ref["sigma"])

    def per_sample(self, images: np.ndarray, labels: np.ndarray) -> dict:
        feats = self.extractor(images)
        return {"pool": feats["pool"].numpy(), "logits": feats["logits"].numpy()}

    def statistics(self, data: dict, idx=None) -> dict:
        import torch
        from torch_fidelity.metric_isc import isc_features_to_metric

        from dit.eval.metrics import feature_statistics, frechet_distance

        if idx is None:  # all samples: the same formula as dit.eval.metrics.inception_metrics
            fid = frechet_distance(*feature_statistics(data["pool"]), self.ref["mu"], self.ref["sigma"])
            logits = data["logits"]
        else:
            fid, logits = self.fd_to_ref(data["pool"][idx]), data["logits"][idx]
        isc = isc_features_to_metric(torch.from_numpy(logits), splits=10)
        return {"fid": fid, "inception_score": isc["inception_score_mean"],
                "inception_score_std": isc["inception_score_std"]}


def seeded_scorer(out: Path, cache: Path, shared: list[Path], classifier_steps: int | None) -> ShapesScorer:
    """A ShapesScorer whose judge cache `cache` is first seeded from other benchmarks' caches (the judge
    is deterministic: a copy is the same judge, and training it again costs minutes); the reference
    statistics are saved under out/scores/reference.npz."""
    import shutil

    from dit.eval.metrics import ShapesMetric

    cache.mkdir(parents=True, exist_ok=True)
    for folder in shared:
        for f in folder.glob("shapes-*") if folder.is_dir() else []:
            if not (cache / f.name).exists():
                shutil.copy2(f, cache / f.name)
    scorer = ShapesScorer(ShapesMetric(16, cache, classifier_steps=classifier_steps))
    (out / "scores").mkdir(exist_ok=True)
    np.savez(out / "scores" / "reference.npz", mu=scorer.metric.ref_mu, sigma=scorer.metric.ref_sigma)
    return scorer


def bootstrap(scorer, data: dict, point: dict, resamples: int, seed: int, level: float = LEVEL) -> dict:
    """{metric: (lo, hi)} for each of scorer.keys ({} when resamples is 0): the percentile interval
    of the metric over `resamples` resamples of the samples with replacement, shifted by the
    bootstrap bias estimate (mean over resamples - `point`, the all-samples value); distances are
    clipped at 0. The index sets depend only on (seed, number of samples, resamples), so every
    sampler is resampled identically."""
    if resamples <= 0:
        return {}
    n = len(next(iter(data.values())))
    rng = np.random.default_rng(seed)
    draws = {k: np.empty(resamples) for k in scorer.keys}
    for i in range(resamples):
        stats = scorer.statistics(data, rng.integers(0, n, n))
        for k in scorer.keys:
            draws[k][i] = stats[k]
    tail = (1 - level) / 2
    out = {}
    for k, v in draws.items():
        lo, hi = np.quantile(v, [tail, 1 - tail]) - (v.mean() - point[k])
        out[k] = (max(float(lo), 0.0) if k in LOWER_BETTER else float(lo), float(hi))
    return out
