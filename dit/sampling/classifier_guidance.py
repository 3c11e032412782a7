"""Classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", ADM §4), two forms.

A classifier here is any callable classifier(x_t, t) -> logits (B, K) at the generator's NETWORK
time t (dit/networks/noisy_classifier.py, or a closed form in the tests); g = grad_x log p(y | x_t, t)
is taken with autograd inside the sampler's no-grad loop.

- eps form (ADM Algorithm 2, eq. 14): a denoiser wrapper, eps' = eps - s sqrt(1 - abar_t) g, i.e.
  the score gains s g; the process owns the formula (`Process.guide`). Every sampler that calls a
  denoiser takes it: ddim, the diffusers schedulers (dpm++, unipc, euler, ...), and ddpm too.
- mean shift (ADM Algorithm 1): the ancestral step's mean mu + s Sigma g with the model's own
  (learned) Sigma: the ddpm sampler's `classifier_grad` option (dit/sampling/ancestral.py).
`resolve_form` picks: ddpm -> mean shift, every other sampler -> eps form (README: "Classifier
guidance"). Both wrap whatever denoiser they get, so they compose with classifier-free guidance.

Samplers hand denoisers the ORIGINAL timestep whatever their respacing (ddpm/ddim map respaced
indices through `timestep_map`, diffusers schedulers step in original timesteps), and the
classifier is called with exactly that value: it never sees a respaced index.
"""

from __future__ import annotations

import math

import torch

from dit.autoencoders.base import NORM_KEYS
from dit.errors import UserError
from dit.networks import CLASSIFIER, role_of
from dit.networks.conditioning import is_unconditional
from dit.processes import process_from_meta

FORMS = ("auto", "eps", "mean")


def check_scale(scale: float) -> float:
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise UserError(f"--classifier-scale must be a finite number >= 0 (0 = no classifier guidance), got {scale}")
    return scale


def resolve_form(form: str, sampler: str) -> str:
    """"auto" -> ADM's form for the sampler: the mean shift for ddpm, the eps form for the rest."""
    if form not in FORMS:
        raise UserError(f"unknown --classifier-form {form!r}; choose one of {', '.join(FORMS)}")
    if form == "auto":
        return "mean" if sampler == "ddpm" else "eps"
    if form == "mean" and sampler != "ddpm":
        raise UserError(f"--classifier-form mean shifts the ancestral step's mean: use --sampler ddpm, or --classifier-"
                        f"form eps with {sampler}")
    return form


def log_prob_gradient(classifier, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """grad_x log p(labels | x, t) (B, ...) in float32, with its own grad mode inside no-grad sampling."""
    with torch.enable_grad():
        x_in = x.detach().float().requires_grad_(True)
        log_p = torch.log_softmax(classifier(x_in, t).float(), dim=-1)
        chosen = log_p.gather(1, labels.view(-1, 1).long()).sum()  # samples are independent: one backward for all
        return torch.autograd.grad(chosen, x_in)[0]


def eps_guided(denoiser, process, classifier, labels: torch.Tensor, scale: float):
    """denoiser'(x, t): the output with its score shifted by scale * grad log p(y | x_t, t) (eq. 14).
    `process` is the full (un-respaced) process; t the network time samplers pass."""
    scale = check_scale(scale)
    if scale == 0:
        return denoiser

    def guided(x, t):
        out = denoiser(x, t)
        return process.guide(out, x, t, log_prob_gradient(classifier, x, t, labels), scale).to(out.dtype)

    return guided


def mean_shift(classifier, labels: torch.Tensor, scale: float):
    """The ddpm sampler's `classifier_grad`: (x_t, network time) -> scale * grad log p(y | x_t, t),
    which the ancestral step multiplies by its variance Sigma and adds to its mean (Algorithm 1)."""
    scale = check_scale(scale)

    def grad(x, t):
        return scale * log_prob_gradient(classifier, x, t, labels)

    return grad


def check_classifier(classifier, classifier_meta: dict, network, model_meta: dict, process,
                     classifier_path: str = "") -> None:
    """Refuse a process that cannot be guided, and a classifier that does not read the model's input
    space or was trained under another process."""
    where = f" ({classifier_path})" if classifier_path else ""
    if process.classifier_guidance_refusal is not None:
        raise UserError(process.classifier_guidance_refusal)
    if classifier_meta.get("arch") is None or role_of(classifier_meta["arch"]) != CLASSIFIER:
        raise UserError(f"--classifier{where} is not a noise-aware classifier run (train one with train_classifier.py)")
    if tuple(classifier.input_shape) != tuple(network.input_shape):
        raise UserError(f"--classifier{where} reads inputs of shape {tuple(classifier.input_shape)}, the model samples "
                        f"{tuple(network.input_shape)}: train the classifier on the model's --image-size and --vae")
    for key in ("vae", "image_size", *NORM_KEYS):
        if key in classifier_meta or key in model_meta:
            if classifier_meta.get(key) != model_meta.get(key):
                raise UserError(f"--classifier{where} was trained on another latent space ({key} "
                                f"{classifier_meta.get(key)!r}, the model's {model_meta.get(key)!r}): train it with the "
                                "model's --vae and latent normalisation")
    own = process_from_meta(classifier_meta)  # what it was trained under, read as the model's is
    if own.key != process.key or own.to_meta() != process.to_meta():
        raise UserError(f"--classifier{where} was trained under the {own.key} process {own.to_meta()}, the model under "
                        f"the {process.key} process {process.to_meta()}: train it with the model's process settings")
    if is_unconditional(network.num_classes):  # the classifier's classes are the only ones: nothing to match
        return
    if classifier.num_classes != network.num_classes:
        raise UserError(f"--classifier{where} has {classifier.num_classes} classes, the model {network.num_classes}")
    names = classifier_meta.get("class_names"), model_meta.get("class_names")
    if None not in names and list(names[0]) != list(names[1]):
        raise UserError(f"--classifier{where} names its classes {list(names[0])[:3]}..., the model "
                        f"{list(names[1])[:3]}...: label k would mean another class; train it on the model's data")
