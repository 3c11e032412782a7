"""Fréchet distance against independent computations; the offline shapes metric end to end."""

import numpy as np
import pytest
import scipy.linalg

from dit.data import shapes
from dit.errors import UserError
from dit.autoencoders.pixels import to_uint8
from dit.eval.metrics import ShapesMetric, feature_statistics, frechet_distance, load_images


def test_frechet_distance_closed_forms():
    # 1-D: W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2.
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    # Diagonal covariances: per dimension, summed.
    m1, m2, v1, v2 = np.array([0.0, 1, 2]), np.array([1.0, 1, 0]), np.array([1.0, 2, 3]), np.array([4.0, 2, 0.5])
    expect = ((m1 - m2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expect)
    assert frechet_distance(m1, np.diag(v1), m1, np.diag(v1)) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_on_full_covariances():
    rng = np.random.default_rng(0)
    for d in (2, 8, 64):
        a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
        s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T  # s2 is singular-ish for d=64 (rank <= 64)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)


def test_estimated_statistics_converge_to_the_true_distance():
    rng = np.random.default_rng(1)
    d, n = 4, 200_000
    a = rng.normal(size=(d, d))
    cov = a @ a.T
    x = rng.multivariate_normal(np.zeros(d), np.eye(d), size=n)
    y = rng.multivariate_normal(np.ones(d), cov, size=n)
    true = frechet_distance(np.zeros(d), np.eye(d), np.ones(d), cov)
    est = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert est == pytest.approx(true, rel=0.02)


def test_load_images_formats(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", arr_0=images, arr_1=np.arange(5))
    got, labels = load_images(tmp_path / "s.npz")
    assert np.array_equal(got, images) and labels.tolist() == list(range(5))
    from PIL import Image

    (tmp_path / "dir").mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / "dir" / f"{i}.png")
    assert np.array_equal(load_images(tmp_path / "dir")[0], images)
    np.savez(tmp_path / "bad.npz", arr_0=images.astype(np.float32))
    with pytest.raises(UserError, match="expected uint8 images"):
        load_images(tmp_path / "bad.npz")
    with pytest.raises(UserError, match="does not exist"):
        load_images(tmp_path / "none.npz")


@pytest.fixture(scope="module")
def metric(tmp_path_factory):
    return ShapesMetric(16, tmp_path_factory.mktemp("metric"), reference_images=1000, classifier_steps=200)


def test_shapes_metric_ranks_real_above_degraded(metric):
    real, labels = shapes.ShapesDataset(500, 16, seed=7).tensors()
    real8 = to_uint8(real)
    good = metric(real8, labels.numpy())
    assert good["class_acc"] > 0.9 and good["num_samples"] == 500
    noise = np.random.default_rng(0).normal(0, 40, real8.shape)
    noisy = metric(np.clip(real8 + noise, 0, 255).astype(np.uint8), labels.numpy())
    wrong = metric(real8, ((labels + 1) % 10).numpy())  # right images, wrong labels
    blank = metric(np.full_like(real8, 30), labels.numpy())
    assert good["fd_shapes"] < noisy["fd_shapes"] < blank["fd_shapes"]
    assert wrong["class_acc"] < 0.05 and wrong["fd_shapes"] == pytest.approx(good["fd_shapes"])
    assert blank["class_acc"] < 0.2


def test_shapes_metric_reference_is_cached(metric, tmp_path_factory, monkeypatch):
    from dit.eval import metrics as metrics_module

    cache = next(p for p in tmp_path_factory.getbasetemp().iterdir() if p.name.startswith("metric"))
    monkeypatch.setattr(metrics_module, "feature_statistics", lambda *a: (_ for _ in ()).throw(AssertionError))
    again = ShapesMetric(16, cache, reference_images=1000, classifier_steps=200)  # neither retrains nor recomputes the reference
    assert np.array_equal(again.ref_mu, metric.ref_mu)


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """torch-fidelity's Inception-v3 with random weights, saved as a plain state dict (no download)."""
    import torch
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    real_load = fe.FeatureExtractorInceptionV3.load_state_dict
    fe.load_state_dict_from_url, saved_url = (lambda *a, **k: None), fe.load_state_dict_from_url
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, sd: None
    try:
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        for m in net.modules():  # variance-preserving init, so that features still vary with the input
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    finally:
        fe.FeatureExtractorInceptionV3.load_state_dict, fe.load_state_dict_from_url = real_load, saved_url
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.slow("runs Inception-v3 features over real and generated images on CPU")
def test_inception_metrics_end_to_end_with_local_weights(random_inception, tmp_path):
    from dit.eval.metrics import InceptionFeatures, inception_metrics

    rng = np.random.default_rng(0)
    real = to_uint8(shapes.ShapesDataset(12, 16).tensors()[0])
    np.savez(tmp_path / "ref.npz", arr_0=real)
    extractor = InceptionFeatures(random_inception, batch_size=6)
    same = inception_metrics(real, extractor, tmp_path / "ref.npz", cache_dir=tmp_path / "cache")
    assert same["fid"] == pytest.approx(0, abs=1e-3) and same["precision"] == 1.0 and same["recall"] == 1.0
    assert list((tmp_path / "cache").glob("inception-ref-*.npz"))  # reference features cached
    noise = rng.integers(0, 256, real.shape, dtype=np.uint8)
    other = inception_metrics(noise, extractor, tmp_path / "ref.npz", cache_dir=tmp_path / "cache")
    assert other["fid"] > same["fid"] + 1 and 0 <= other["precision"] <= 1 and np.isfinite(other["inception_score"])
    # Precomputed statistics as a reference: FID only.
    ref = np.load(next((tmp_path / "cache").glob("inception-ref-*.npz")))
    np.savez(tmp_path / "stats.npz", mu=ref["mu"], sigma=ref["sigma"])
    only = inception_metrics(noise, extractor, tmp_path / "stats.npz", prc=False)
    assert only["fid"] == pytest.approx(other["fid"], rel=1e-6)
    with pytest.raises(UserError, match="need reference images"):
        inception_metrics(noise, extractor, tmp_path / "stats.npz")


def test_inception_weights_offline_and_unsafe(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    from dit.eval.metrics import inception_weights

    monkeypatch.setenv("DIT_WEIGHTS_DIR", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(UserError, match=r"weights-inception-2015-12-05-6726825d\.pth.*place it at"):
        inception_weights()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import torch

    torch.save({"fc.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="not a plain Inception state dict"):
        inception_weights(tmp_path / "evil.pth")
    assert not marker.exists()


def test_frechet_distance_on_rank_deficient_ill_conditioned_2048_dims():
    """Inception's 2,048 dimensions from fewer samples than dimensions (rank-deficient covariances), with
    feature scales spread over six decades (ill-conditioned): both Fréchet paths (evaluate.py's
    frechet_distance, the benchmarks' FrechetToReference) against an independent closed form. With
    S1 = A A^T and S2 = B B^T, the nonzero eigenvalues of S1 S2 are the squared singular values of A^T B,
    so Tr((S1 S2)^(1/2)) is the nuclear norm of A^T B, computed in the samples' small space."""
    from dit.eval.metrics import FrechetToReference

    rng = np.random.default_rng(7)
    d = 2048
    scale = np.logspace(-3, 3, d)
    x = rng.normal(size=(300, d)) * scale
    y = rng.normal(size=(500, d)) * scale[::-1] + 0.5
    (mx, sx), (my, sy) = feature_statistics(x), feature_statistics(y)
    a = (x - x.mean(0)).T / np.sqrt(len(x) - 1)  # S_x = a a^T (feature_statistics: np.cov, n - 1)
    b = (y - y.mean(0)).T / np.sqrt(len(y) - 1)
    assert np.allclose(a @ a.T, sx, rtol=1e-9, atol=1e-9 * np.abs(sx).max())
    nuclear = np.linalg.svd(a.T @ b, compute_uv=False).sum()
    oracle = ((mx - my) ** 2).sum() + (a ** 2).sum() + (b ** 2).sum() - 2 * nuclear
    assert frechet_distance(mx, sx, my, sy) == pytest.approx(oracle, rel=1e-6)
    assert FrechetToReference(my, sy)(x) == pytest.approx(oracle, rel=1e-6)


def test_frechet_distance_matches_scipy_sqrtm_when_ill_conditioned():
    """A full-rank but ill-conditioned pair (eigenvalues over eight decades), scipy's sqrtm in float64."""
    rng = np.random.default_rng(3)
    d = 256
    q1, _ = np.linalg.qr(rng.normal(size=(d, d)))
    q2, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s1 = (q1 * np.logspace(-4, 4, d)) @ q1.T
    s2 = (q2 * np.logspace(4, -4, d)) @ q2.T
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)
