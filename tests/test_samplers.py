"""Samplers against closed forms, against an independent copy of the public DiT loops, and per-seed.

Closed form: data x0 ~ N(MU, S^2) per dimension has the exact eps predictor
eps*(x_t, t) = sqrt(1 - abar_t) (x_t - sqrt(abar_t) MU) / (abar_t S^2 + 1 - abar_t),
so a correct sampler must land on mean MU and std S (up to its own discretisation error).
"""

import math

import numpy as np
import pytest
import torch

from dit.processes.gaussian import GaussianDiffusion
from dit.errors import UserError
from dit.sampling.noise import PerSampleNoise
from dit.sampling.ancestral import ddim_sample, ddpm_sample
from dit.sampling import run_sampler, sampler_names
from dit.sampling.schedulers import SCHEDULERS, make_scheduler

MU, S, T = 0.5, 0.3, 1000
FULL = GaussianDiffusion.from_schedule("linear", T)
ABAR = FULL.alphas_cumprod.float()


def gaussian_denoiser(sign=1.0, learned_v=None, reverse_time=False):
    """Exact eps for N(MU, S^2) data; optional 2C output with constant variance value v."""
    def denoiser(x, t):
        ti = t.long()
        abar = ABAR[T - 1 - ti if reverse_time else ti].view(-1, *[1] * (x.dim() - 1))
        eps = sign * (1 - abar).sqrt() * (x - abar.sqrt() * MU) / (abar * S ** 2 + 1 - abar)
        return eps if learned_v is None else torch.cat([eps, torch.full_like(eps, learned_v)], 1)
    return denoiser


@pytest.fixture(scope="module")
def x_T():
    return torch.randn(4096, 4, generator=torch.Generator().manual_seed(0))


def errors(x):
    return abs(x.mean().item() - MU), abs(x.std().item() - S)


# Step counts where the sampler's own discretisation bias on this sharp (S = 0.3) target is below
# ~0.016 (see test_few_step_bias_is_discretisation for fewer steps).
CASES = [
    ("ddpm", 250, {}, -1.0),  # learned-range output at v = -1: the posterior variance beta~
    ("ddpm", 250, {}, None),  # C channels: fixed "large" variance
    ("ddim", 250, {"eta": 0.0}, None),
    ("ddim", 250, {"eta": 1.0}, None),
    ("dpm++", 50, {}, None),
    ("unipc", 50, {}, None),
    ("euler", 250, {}, None),
    ("euler-a", 250, {}, None),
    ("heun", 50, {}, None),
    ("diffusers-ddim", 250, {}, None),
]


@pytest.mark.parametrize("name,steps,kw,v", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}" for c in CASES])
def test_sampler_recovers_gaussian_data(x_T, name, steps, kw, v):
    torch.manual_seed(1)
    x = run_sampler(gaussian_denoiser(learned_v=v), FULL, x_T, name, steps, **kw)
    assert x.shape == x_T.shape and x.dtype == x_T.dtype
    mean_err, std_err = errors(x)
    assert mean_err < 0.01 and std_err < 0.02, (mean_err, std_err)


def test_covered_all_samplers():
    assert {c[0] for c in CASES} == set(sampler_names("gaussian"))


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_schedulers_start_at_pure_noise(name):
    """"trailing" spacing: the first step is at t = T-1 and the last step ends at clean data."""
    scheduler = make_scheduler(name, FULL)
    scheduler.set_timesteps(25)
    assert int(scheduler.timesteps[0]) == T - 1 and int(scheduler.timesteps[-1]) < T // 25


@pytest.mark.parametrize("name,steps", [("ddim", 250), ("euler", 250), ("diffusers-ddim", 250),
                                        ("dpm++", 50), ("unipc", 50), ("heun", 50)])
def test_ode_samplers_follow_exact_flow_map(x_T, name, steps):
    """For Gaussian data the probability-flow ODE is the affine map x_T -> MU + S (x_T - m_T)/s_T:
    checked per sample, which also catches scaling slips (init_noise_sigma, scale_model_input)."""
    aT = FULL.alphas_cumprod[-1].item()
    target = MU + S * (x_T - math.sqrt(aT) * MU) / math.sqrt(aT * S ** 2 + 1 - aT)
    x = run_sampler(gaussian_denoiser(), FULL, x_T, name, steps)
    assert (x - target).abs().max().item() < 0.035


def test_ddpm_matches_exact_linear_gaussian_law(x_T):
    """DDPM over Gaussian data is a linear Gaussian chain: propagate its mean/variance exactly
    (float64, from abar alone) and compare, within sampling error, to the empirical output."""
    d = FULL.respace(250)
    ab = d.alphas_cumprod.tolist()
    for v in (-1.0, 1.0):
        m, var = 0.0, 1.0
        for i in range(249, -1, -1):
            a, ap = ab[i], (ab[i - 1] if i else 1.0)
            beta = 1 - a / ap
            k = math.sqrt(1 - a) / (a * S ** 2 + 1 - a)  # eps* = k (x - sqrt(a) MU)
            x0_slope, x0_icpt = (1 - math.sqrt(1 - a) * k) / math.sqrt(a), math.sqrt(1 - a) * k * MU
            c1, c2 = beta * math.sqrt(ap) / (1 - a), (1 - ap) * math.sqrt(1 - beta) / (1 - a)
            post = beta * (1 - ap) / (1 - a)
            step_var = 0.0 if i == 0 else (post if v < 0 else beta)
            m, var = (c1 * x0_slope + c2) * m + c1 * x0_icpt, (c1 * x0_slope + c2) ** 2 * var + step_var
        torch.manual_seed(2)
        x = ddpm_sample(gaussian_denoiser(learned_v=v), d, x_T)
        assert abs(x.mean().item() - m) < 0.01 and abs(x.std().item() - math.sqrt(var)) < 0.008


def test_few_step_bias_is_discretisation(x_T):
    """Few-step ODE samplers under-disperse a sharp Gaussian; the bias must shrink as steps grow."""
    for name in ("ddim", "dpm++"):
        std_errs = [S - run_sampler(gaussian_denoiser(), FULL, x_T, name, n).std().item() for n in (10, 25, 50)]
        assert std_errs[0] > std_errs[1] > std_errs[2] > -0.01, (name, std_errs)


@pytest.mark.parametrize("bad", [dict(sign=-1.0), dict(reverse_time=True)])
def test_wrong_sign_or_time_direction_fails(x_T, bad):
    for name, steps in (("ddim", 50), ("dpm++", 25)):
        x = run_sampler(gaussian_denoiser(**bad), FULL, x_T, name, steps)
        mean_err, std_err = errors(x)
        assert not (mean_err < 0.01 and std_err < 0.02)  # (NaN errors also fail the check)


# --- Trajectory fidelity against an independent re-implementation of the public DiT loops -------

def _public_tables(T, n):
    """Respaced tables exactly as public DiT (float64 numpy): section stride accumulated in float."""
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    keep, pos, stride = set(), 0.0, (T - 1) / (n - 1)
    for _ in range(n):
        keep.add(round(pos))
        pos += stride
    tmap, new_betas, last = [], [], 1.0
    for i, a in enumerate(np.cumprod(1.0 - betas)):
        if i in keep:
            new_betas.append(1 - a / last)
            last = a
            tmap.append(i)
    b = np.array(new_betas)
    ab = np.cumprod(1 - b)
    abp = np.append(1.0, ab[:-1])
    pv = b * (1 - abp) / (1 - ab)
    return dict(tmap=tmap, ab=ab, abp=abp, logb=np.log(b), plv=np.log(np.append(pv[1], pv[1:])),
                fixed=np.log(np.append(pv[1], b[1:])), c1=b * np.sqrt(abp) / (1 - ab),
                c2=(1 - abp) * np.sqrt(1 - b) / (1 - ab), sra=np.sqrt(1 / ab), srm1=np.sqrt(1 / ab - 1))


def _public_loop(model, x, noises, tab, ddim_eta=None, clip=False):
    B, C = x.shape[:2]
    noises = list(noises)
    for i in reversed(range(len(tab["tmap"]))):
        g = lambda k: torch.from_numpy(tab[k])[torch.full((B,), i)].float().view(B, 1, 1, 1)  # noqa: E731
        out = model(x, torch.full((B,), float(tab["tmap"][i])))
        eps = out[:, :C]
        if out.shape[1] == 2 * C:
            frac = (out[:, C:] + 1) / 2
            logvar = frac * g("logb") + (1 - frac) * g("plv")
        else:
            logvar = g("fixed") + torch.zeros_like(x)
        x0 = g("sra") * x - g("srm1") * eps
        if clip:
            x0 = x0.clamp(-1, 1)
        z = noises.pop(0)
        mask = float(i != 0)
        if ddim_eta is None:
            x = g("c1") * x0 + g("c2") * x + mask * torch.exp(0.5 * logvar) * z
        else:
            e = (g("sra") * x - x0) / g("srm1")
            a, ap = g("ab"), g("abp")
            sig = ddim_eta * torch.sqrt((1 - ap) / (1 - a)) * torch.sqrt(1 - a / ap)
            x = x0 * torch.sqrt(ap) + torch.sqrt(1 - ap - sig ** 2) * e + mask * sig * z
    return x


def standin_model(C=4):
    """A fixed nonlinear (x, t) -> 2C function: channel mixing plus a time dependence."""
    W = torch.randn(2 * C, C, generator=torch.Generator().manual_seed(3)) * 0.7
    return lambda x, t: torch.tanh(torch.einsum("oc,bchw->bohw", W, x) + torch.sin(t / 137.0).view(-1, 1, 1, 1))


@pytest.mark.parametrize("kind,n,eta,channels,clip", [
    ("ddpm", 250, None, 8, False), ("ddpm", 25, None, 4, True),
    ("ddim", 50, 0.0, 8, False), ("ddim", 50, 0.5, 8, True),
    ("ddpm", 21, None, 8, False)])  # 21: accumulated stride differs from round(i * stride)
def test_trajectory_matches_public_loop(kind, n, eta, channels, clip):
    g = torch.Generator().manual_seed(4)
    x_T = torch.randn(3, 4, 8, 8, generator=g)
    noises = [torch.randn(3, 4, 8, 8, generator=g) for _ in range(n)]
    net = standin_model()
    model = lambda x, t: net(x, t)[:, :channels]  # noqa: E731
    ref = _public_loop(model, x_T, noises, _public_tables(T, n), eta, clip)
    stream = iter(noises)
    d = FULL.respace(n)
    if kind == "ddpm":
        ours = ddpm_sample(model, d, x_T, noise=lambda like: next(stream), clip_denoised=clip)
    else:
        ours = ddim_sample(model, d, x_T, eta=eta, noise=lambda like: next(stream), clip_denoised=clip)
    assert next(stream, None) is None  # one noise draw per step, the last (masked) one included
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


# --- Per-seed determinism --------------------------------------------------------------------------

@pytest.mark.parametrize("name,kw", [("ddpm", {}), ("ddim", {"eta": 1.0}), ("euler-a", {}), ("dpm++", {}),
                                     ("diffusers-ddim", {"eta": 1.0})])
def test_per_seed_determinism_across_batches(name, kw):
    net = standin_model()

    def run(seeds):
        noise = PerSampleNoise(seeds)
        return run_sampler(lambda x, t: net(x, t), FULL, noise.initial((4, 4, 4)), name, 8, noise=noise, **kw)

    whole = run([0, 1, 2, 3])
    split = torch.cat([run([0, 1]), run([2, 3])])
    torch.testing.assert_close(whole, split, atol=1e-6, rtol=0)
    assert not torch.allclose(whole[0], whole[1])  # different seeds, different samples


def test_per_sample_noise_matches_diffusers_randn_tensor():
    from diffusers.utils.torch_utils import randn_tensor

    ours = PerSampleNoise([5, 9])(torch.empty(2, 3, 4))
    theirs = randn_tensor((2, 3, 4), generator=[torch.Generator().manual_seed(s) for s in (5, 9)])
    assert torch.equal(ours, theirs)
    assert torch.equal(PerSampleNoise.for_samples(5, [0, 4])(torch.empty(2, 3, 4)), ours)


def test_sample_rejects_bad_arguments(x_T):
    den = gaussian_denoiser()
    with pytest.raises(UserError, match="unknown sampler"):
        run_sampler(den, FULL, x_T, "plms")
    with pytest.raises(UserError, match="eta"):
        run_sampler(den, FULL, x_T, "ddpm", 10, eta=0.5)
    with pytest.raises(UserError, match="eta"):
        run_sampler(den, FULL, x_T, "euler", 10, eta=0.5)
    with pytest.raises(UserError):
        run_sampler(den, FULL, x_T, "dpm++", 0)
    with pytest.raises(UserError):
        run_sampler(den, FULL, x_T, "ddim", 1001)
    with pytest.raises(UserError):
        run_sampler(den, FULL, x_T, "ddpm", 1)
    with pytest.raises(ValueError):
        run_sampler(den, FULL.respace(10), x_T, "ddpm", 10)
