"""Sample-quality metrics: FID / Inception Score / precision-recall through torch-fidelity, and an
offline stand-in for the built-in dataset.

Images everywhere are uint8 NHWC arrays (the ADM evaluator's `.npz` layout, see dit/io/images.py).

Inception metrics (`inception_metrics`) use torch-fidelity's port of the TF-slim Inception-v3 that
FID was defined with (Heusel et al. 2017); its weights are one file, listed in
models/manifest.json as `inception-v3-fid`: taken from models/weights/ (or $DIT_WEIGHTS_DIR),
downloaded there when online, checked against the manifest's hash, and only then handed to
torch-fidelity, after `torch.load(weights_only=True)` has confirmed it holds nothing but tensors.

The offline metric (`ShapesMetric`) is for the built-in shapes, where Inception-v3 (trained on
ImageNet photos at 299 px) is both unavailable offline and a poor judge of 16-32 px shapes. It
reports two numbers, named for what they are:
- `fd_shapes`: the Fréchet distance (the FID formula) between the penultimate features of the
  project's shapes classifier (dit/eval/shapes_judge.py) on the samples and on fresh dataset images;
  this is NOT FID and is not comparable with any published FID;
- `class_acc`: the fraction of samples the classifier assigns to the class they were drawn for
  (shape and colour must both match: wrong-colour shapes go to its OTHER output).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from dit.errors import UserError
from dit.io.atomic import atomic_path

INCEPTION = "inception-v3-fid"  # manifest name of the Inception weights


# --- Fréchet distance -------------------------------------------------------------------------


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise UserError(f"need at least 2 feature vectors to estimate a covariance, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)): the squared 2-Wasserstein distance between
    N(mu1, S1) and N(mu2, S2) (Fréchet 1957; the FID formula of Heusel et al. 2017).

    The trace of the matrix square root is computed as the sum of square roots of the eigenvalues
    of S1 S2, which are real and >= 0 for covariance matrices (S1 S2 is similar to the PSD
    S1^(1/2) S2 S1^(1/2)); tiny negative or imaginary parts from rounding are clipped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes do not match: mu {mu1.shape} {mu2.shape}, sigma {s1.shape} {s2.shape}")
    eig = np.linalg.eigvals(s1 @ s2)
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


class FrechetToReference:
    """Fréchet distance (frechet_distance above) from feature sets to fixed reference
    statistics, for many resamples: with R = S_ref^(1/2), Tr((S S_ref)^(1/2)) is the sum of the
    square roots of the eigenvalues of the symmetric R S R (similar to S S_ref), a symmetric
    eigenproblem several times faster than the general one; equal to frechet_distance to rounding."""

    def __init__(self, mu, sigma):
        w, v = np.linalg.eigh(np.asarray(sigma, np.float64))
        self.root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        self.mu, self.trace = np.asarray(mu, np.float64), float(np.trace(sigma))

    def __call__(self, features: np.ndarray) -> float:
        mu, sigma = feature_statistics(features)
        eig = np.linalg.eigvalsh(self.root @ sigma @ self.root)
        diff = mu - self.mu
        return float(diff @ diff + np.trace(sigma) + self.trace - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


# --- inputs ------------------------------------------------------------------------------------


def load_images(source) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 NHWC images (and labels if known) from an `.npz` (arr_0 [, arr_1]), a folder of image
    files, or an array."""
    if isinstance(source, np.ndarray):
        return _check_images(source, "array"), None
    path = Path(source)
    if not path.exists():
        raise UserError(f"{path} does not exist: give an .npz of samples (arr_0, uint8 NHWC) or a folder of images")
    if path.is_dir():
        from PIL import Image

        from dit.data.folders import IMAGE_EXTENSIONS, to_rgb

        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise UserError(f"{path} holds no images ({' '.join(IMAGE_EXTENSIONS)})")
        arrays = []
        for f in files:
            try:
                with Image.open(f) as im:
                    arrays.append(np.asarray(to_rgb(im)))
            except Exception as e:  # noqa: BLE001 - any decoding failure: name the file
                raise UserError(f"cannot read image {f}: {type(e).__name__}: {e}") from None
        if len({a.shape for a in arrays}) > 1:
            raise UserError(f"images in {path} have different sizes; resize them to one size first")
        return np.stack(arrays), None
    try:
        with np.load(path) as data:
            images = data["arr_0"]
            labels = data["arr_1"] if "arr_1" in data else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is not a readable .npz with images under arr_0 ({type(e).__name__}: {e})") from None
    return _check_images(images, str(path)), labels


def _check_images(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"{where}: expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
    return images


# --- the offline metric on the built-in shapes ---------------------------------------------------


class ShapesMetric:
    """fd_shapes and class_acc (see the module docstring) for samples of the built-in dataset."""

    def __init__(self, image_size: int, cache_dir: str | os.PathLike, reference_images: int = 5000,
                 device: str | torch.device = "cpu", classifier_steps: int | None = None):
        from dit.data import shapes
        from dit.eval import shapes_judge

        self.image_size, self.device = image_size, torch.device(device)
        steps = classifier_steps or shapes_judge.DEFAULT_STEPS
        self.classifier = shapes_judge.load_or_train(cache_dir, image_size=image_size, steps=steps, device=self.device)
        ref_path = Path(cache_dir) / (f"shapes-ref-v{shapes_judge.VERSION}-data{shapes.VERSION}-{image_size}px-"
                                      f"steps{steps}-{reference_images}.npz")
        if ref_path.exists():
            with np.load(ref_path) as ref:
                self.ref_mu, self.ref_sigma = ref["mu"], ref["sigma"]
        else:
            # Fresh images (a seed no training run uses by default), so the reference is not the training set.
            images, _ = shapes.ShapesDataset(reference_images, image_size, seed=20_000).tensors()
            self.ref_mu, self.ref_sigma = feature_statistics(self._features(images))
            with atomic_path(ref_path) as tmp:
                np.savez(tmp, mu=self.ref_mu, sigma=self.ref_sigma)

    @torch.no_grad()
    def _features(self, images: torch.Tensor, batch: int = 500) -> np.ndarray:
        out = [self.classifier.features(images[i : i + batch].to(self.device)).cpu() for i in range(0, len(images), batch)]
        return torch.cat(out).double().numpy()

    @staticmethod
    def to_float(images_uint8: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float().div(127.5).sub(1)

    def __call__(self, images_uint8: np.ndarray, labels: np.ndarray | None = None) -> dict:
        images_uint8 = _check_images(images_uint8, "samples")
        if images_uint8.shape[1] != self.image_size:
            raise UserError(f"samples are {images_uint8.shape[1]} px but the metric was built for {self.image_size} px")
        x = self.to_float(images_uint8)
        mu, sigma = feature_statistics(self._features(x))
        result = {"fd_shapes": frechet_distance(mu, sigma, self.ref_mu, self.ref_sigma), "num_samples": len(x)}
        if labels is not None:
            from dit.eval.shapes_judge import accuracy

            result["class_acc"] = accuracy(self.classifier, x, torch.as_tensor(np.asarray(labels), dtype=torch.long))
        return result


# --- Inception metrics (FID, Inception Score, precision/recall) through torch-fidelity ----------


def inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The Inception-v3 weights file: `path`, else the manifest's (downloaded when missing).

    torch-fidelity unpickles the file without `weights_only`; it is handed over only after a
    `weights_only=True` load has shown that it holds nothing but tensors.
    """
    from dit.io import zoo

    url = zoo.manifest(feature_extractors=True)[INCEPTION]["url"]
    if path is None:
        path, _ = zoo.resolve(INCEPTION)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Inception weights {path} not found; download {url} and pass its path, or put it in "
                        f"{zoo.weights_dir()}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - refused objects or a corrupt file: either way not usable
        raise UserError(f"{path} is not a plain Inception state dict ({type(e).__name__}); delete it and fetch "
                        f"{url} again") from None
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise UserError(f"{path} does not hold torch-fidelity's Inception-v3 weights (no fc.weight)")
    return path


class InceptionFeatures:
    """pool_3 features (2048-d, for FID and precision/recall) and logits (for IS) of uint8 images."""

    def __init__(self, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 64):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.device, self.batch_size = torch.device(device), batch_size
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=str(inception_weights(weights)))
        self.net.to(self.device)

    @torch.no_grad()
    def __call__(self, images_uint8: np.ndarray) -> dict[str, torch.Tensor]:
        images_uint8 = _check_images(images_uint8, "images")
        pool, logits = [], []
        for i in range(0, len(images_uint8), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images_uint8[i : i + self.batch_size])).permute(0, 3, 1, 2)
            f, lg = self.net(x.to(self.device))  # resized to 299 px inside, as TF-Inception does
            pool.append(f.double().cpu())
            logits.append(lg.double().cpu())
        return {"pool": torch.cat(pool), "logits": torch.cat(logits)}


def reference_statistics(reference: str | os.PathLike, extractor: InceptionFeatures,
                         cache_dir: str | os.PathLike | None = None) -> dict:
    """{"mu", "sigma"[, "pool"]} of a reference: an .npz of images (arr_0, e.g. ADM's
    VIRTUAL_imagenet256_labeled.npz), an .npz of precomputed "mu"/"sigma", or a folder of images.
    Features of image references are cached in `cache_dir`, keyed by the file's path, size and time."""
    import hashlib

    path = Path(reference)
    if not path.exists():
        raise UserError(f"reference {path} does not exist: give an .npz (arr_0 images, or mu/sigma) or a folder")
    if path.suffix == ".npz":
        with np.load(path) as data:
            if "arr_0" not in data and {"mu", "sigma"} <= set(data.files):
                return {"mu": data["mu"].astype(np.float64), "sigma": data["sigma"].astype(np.float64)}
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = Path(cache_dir) / f"inception-ref-{key}.npz" if cache_dir else None
    if cached is not None and cached.exists():
        with np.load(cached) as data:
            return {k: data[k] for k in data.files}
    pool = extractor(load_images(path)[0])["pool"].numpy()
    mu, sigma = feature_statistics(pool)
    out = {"mu": mu, "sigma": sigma, "pool": pool.astype(np.float32)}
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as tmp:
            np.savez(tmp, **out)
    return out


def inception_metrics(samples_uint8: np.ndarray, extractor: InceptionFeatures, reference=None,
                      fid: bool = True, isc: bool = True, prc: bool = True, cache_dir=None) -> dict:
    """FID and precision/recall against `reference` (see reference_statistics), and Inception Score.

    IS uses 10 splits (Salimans et al. 2016); precision/recall the k=3 nearest-neighbour manifolds
    of Kynkäänniemi et al. 2019 on pool_3 features, as the ADM evaluator does.
    """
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    feats = extractor(samples_uint8)
    out = {"num_samples": len(samples_uint8)}
    if isc:
        res = isc_features_to_metric(feats["logits"], splits=10)
        out["inception_score"], out["inception_score_std"] = res["inception_score_mean"], res["inception_score_std"]
    if fid or prc:
        if reference is None:
            raise UserError("FID and precision/recall need a reference (--ref)")
        ref = reference_statistics(reference, extractor, cache_dir)
        if fid:
            out["fid"] = frechet_distance(*feature_statistics(feats["pool"].numpy()), ref["mu"], ref["sigma"])
        if prc:
            if "pool" not in ref:
                raise UserError(f"precision/recall need reference images, but {reference} holds only mu/sigma")
            res = prc_features_to_metric(feats["pool"].float(), torch.from_numpy(np.asarray(ref["pool"])).float(),
                                         prc_neighborhood=3, prc_batch_size=10000, save_cpu_ram=False, verbose=False)
            out["precision"], out["recall"] = res["precision"], res["recall"]
    return out
