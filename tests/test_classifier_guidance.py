"""Classifier guidance against a closed form, no training (issue: ADM classifier guidance).

Data: a 2-D mixture of two Gaussians, class 0 at (-2, 0) and class 1 at (+2, 0), std 0.5, equal
weights. Under the DDPM forward process x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps its noisy
marginal is again a mixture, N(sqrt(abar) mu_k, (abar 0.25 + 1 - abar) I), so the exact eps*(x_t, t)
and the exact Bayes classifier p(y | x_t, t) are known. The unconditional eps* guided with scale 1
towards y = 1 has exactly the score of p(x_t | y = 1): samples must follow N((2, 0), 0.25 I).
"""

import math

import pytest
import torch

from dit.errors import UserError
from dit.processes.gaussian import GaussianDiffusion
from dit.processes.schedules import space_timesteps
from dit.sampling.classifier_guidance import eps_guided, mean_shift, resolve_form
from dit.sampling.catalog import run_sampler

MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
VAR0 = 0.25
N = 4000


class Mixture:
    """Exact eps* and Bayes classifier of the noisy two-Gaussian mixture at ORIGINAL timesteps t."""

    def __init__(self, process: GaussianDiffusion):
        self.abar = process.alphas_cumprod  # float64 (T,)
        self.seen: list[torch.Tensor] = []  # every t the classifier was called with

    def _parts(self, x, t):
        a = self.abar[t.round().long()].view(-1, 1)
        var = a * VAR0 + 1 - a
        centres = a.sqrt().unsqueeze(1) * MEANS  # (B, 2 classes, 2 dims)
        diff = x.double().unsqueeze(1) - centres
        log_n = -(diff ** 2).sum(-1) / (2 * var)  # (B, K), the shared normaliser dropped
        return a, var, diff, log_n

    def eps(self, x, t):
        a, var, diff, log_n = self._parts(x, t)
        w = torch.softmax(log_n, dim=1).unsqueeze(-1)
        score = -(w * diff).sum(1) / var
        return (-(1 - a).sqrt() * score).to(x.dtype)

    def classifier(self, x, t):
        self.seen.append(t.detach().clone())
        return self._parts(x, t)[3].to(x.dtype)  # logits: log p(y | x_t) up to a constant


def _sample(sampler, steps, scale, form="eps", seed=0, variance=None):
    """variance: None (eps only: DDPM's fixed-large variance), or a constant learned-range value v
    in [-1, 1] appended as the network's variance channels (-1: the posterior variance beta~)."""
    process = GaussianDiffusion.from_schedule("linear", 1000)
    mix = Mixture(process)
    x_T = torch.randn(N, 2, generator=torch.Generator().manual_seed(seed))
    # DDPM's per-step noise (and DDIM's, drawn and masked out at eta 0) from a local generator, not
    # the global RNG: the result must not depend on which tests ran before. dpm++ (diffusers'
    # dpmsolver++, an ODE solver) draws none, and diffusers' schedulers take no noise callable.
    steps_rng = torch.Generator().manual_seed(seed + 1)

    def step_noise(like):
        return torch.randn(like.shape, generator=steps_rng, dtype=like.dtype)

    noise = None if sampler == "dpm++" else step_noise
    labels = torch.ones(N, dtype=torch.long)
    denoiser, options = mix.eps, {}
    if variance is not None:
        denoiser = lambda x, t: torch.cat([mix.eps(x, t), torch.full_like(x, variance)], 1)  # noqa: E731
    if scale and form == "eps":
        denoiser = eps_guided(mix.eps, process, mix.classifier, labels, scale)
    elif scale:
        options["classifier_grad"] = mean_shift(mix.classifier, labels, scale)
    x0 = run_sampler(denoiser, process, x_T, sampler, steps, noise, **options)
    return x0.double(), mix


def _check_class_one(x0):
    assert (x0[:, 0] > 0).double().mean() >= 0.99
    mean, cov = x0.mean(0), torch.cov(x0.T)
    target_cov = VAR0 * torch.eye(2, dtype=torch.float64)
    assert (mean - MEANS[1]).abs().max() <= 0.05, mean
    assert (cov - target_cov).abs().max() <= 0.05, cov


def test_unguided_mixture_is_half_and_half():
    x0, _ = _sample("ddim", 200, 0.0)
    share = (x0[:, 0] > 0).double().mean().item()
    assert abs(share - 0.5) < 0.03  # chance: the guided tests below can fail
    assert (x0.mean(0)[0]).abs() < 0.1 and abs(torch.cov(x0.T)[0, 0].item() - (4 + VAR0)) < 0.3


def test_eps_form_ddim_samples_the_class_conditional():
    x0, _ = _sample("ddim", 200, 1.0, "eps")
    _check_class_one(x0)


@pytest.mark.parametrize("variance", [None, -1.0, 0.0])
def test_mean_shift_ddpm_samples_the_class_conditional(variance):
    # Sigma is the step's own variance: fixed large (C outputs) or learned (2C outputs, Improved DDPM eq. 15)
    x0, _ = _sample("ddpm", 250, 1.0, "mean", variance=variance)
    _check_class_one(x0)


def test_eps_form_through_diffusers_dpm_solver():
    x0, _ = _sample("dpm++", 50, 1.0, "eps")
    _check_class_one(x0)


@pytest.mark.parametrize("sampler,form", [("ddim", "eps"), ("ddpm", "mean"), ("ddpm", "eps"), ("dpm++", "eps")])
def test_classifier_sees_only_original_timesteps(sampler, form):
    _, mix = _sample(sampler, 50, 1.0, form)
    seen = torch.unique(torch.cat(mix.seen)).double()
    assert len(seen) == 50
    assert torch.equal(seen, seen.round())  # integer original indices
    if sampler != "dpm++":  # our samplers: exactly the kept steps of the respaced process
        assert seen.long().tolist() == sorted(space_timesteps(1000, 50))
    assert seen.max() >= 900  # a respaced index would stay below 50


def test_larger_scale_sharpens_towards_the_class():
    sharp, _ = _sample("ddim", 100, 4.0)
    # scale s samples p(x) p(y|x)^s: still class 1 only, and narrower than the class itself
    assert (sharp[:, 0] > 0).double().mean() >= 0.995
    assert sharp[:, 0].var() < VAR0


def test_form_choice_and_bad_input():
    assert resolve_form("auto", "ddpm") == "mean" and resolve_form("auto", "ddim") == "eps"
    with pytest.raises(UserError, match="--sampler ddpm"):
        resolve_form("mean", "dpm++")
    with pytest.raises(UserError, match="--classifier-form"):
        resolve_form("sideways", "ddim")
    process = GaussianDiffusion.from_schedule("linear", 1000)
    with pytest.raises(UserError, match=">= 0"):
        eps_guided(lambda x, t: x, process, lambda x, t: x, torch.zeros(1), -1.0)
    with pytest.raises(UserError, match="finite"):
        mean_shift(lambda x, t: x, torch.zeros(1), math.inf)


def test_guided_output_keeps_variance_channels():
    process = GaussianDiffusion.from_schedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, generator=g)
    out = torch.randn(3, 4, generator=g)  # eps and learned-variance values
    grad = torch.randn(3, 2, generator=g)
    t = torch.tensor([0.0, 500.0, 999.0])
    guided = process.guide(out, x, t, grad, 2.0)
    assert torch.equal(guided[:, 2:], out[:, 2:])
    expected = out[:, :2] - 2.0 * (1 - process.alphas_cumprod[t.long()]).sqrt().float().view(-1, 1) * grad
    torch.testing.assert_close(guided[:, :2], expected)
