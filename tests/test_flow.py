"""The flow process and its samplers against closed forms (issue oracles (a)-(d)).

(a) every prediction-type conversion is exact: given x_t built from known data and noise, each
    prediction's exact value converts to every other's;
(b) a Gaussian-mixture data distribution has a closed-form marginal velocity (and noise, score):
    integrating it with Euler-200 reproduces the mixture's mean and variance within 1.5%, Heun-100
    within 0.2%, dopri5 agrees with Euler-1000, and the SDE has the same marginals;
(c) the timestep shift is the identity at s = 1, monotone, with fixed endpoints;
(d) diffusers' FlowMatchEulerDiscreteScheduler, its shift set to 1/s, walks our Euler trajectory.
"""

import math

import numpy as np
import pytest
import torch

from dit.analysis import gaussian_mixture
from dit.errors import UserError
from dit.processes import FlowMatching, process_from_meta
from dit.processes.paths import PATHS, coefficients
from dit.sampling import check_sampler, run_sampler
from dit.sampling.flow import shift_time, time_grid

PREDICTIONS = ("velocity", "noise", "score")


def exact(process, data, noise, t):
    """Every quantity `convert` can give, computed from the known data and noise at t (float64)."""
    a, da, s, ds = (c.view(-1, *[1] * (data.dim() - 1)) for c in coefficients(process.path, t))
    return a * data + s * noise, {"velocity": da * data + ds * noise, "noise": noise, "score": -noise / s, "data": data}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_a_conversions_are_exact(path, prediction):
    process = FlowMatching(path, prediction)
    g = torch.Generator().manual_seed(0)
    data, noise = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    lo, hi = process.interval(1e-3)
    t = torch.tensor([lo + 1e-3, 0.05, 0.3, 0.5, 0.9, hi - 1e-3], dtype=torch.float64)
    x_t, truth = exact(process, data, noise, t)
    out = truth[prediction]
    for to, want in truth.items():
        got = process.convert(out, x_t, t, to)
        assert (got - want).abs().max() <= 1e-6 * max(1.0, want.abs().max()), (prediction, to)
    # SiT's layout: a second half of channels is ignored; the project-wide names are aliases.
    doubled = torch.cat([out, torch.full_like(out, 7.0)], 1)
    assert torch.equal(process.convert(doubled, x_t, t, "x0"), process.convert(out, x_t, t, "data"))
    assert torch.equal(process.convert(doubled, x_t, t, "eps"), process.convert(out, x_t, t, "noise"))
    # float32, the sampling dtype: relative error at float32 rounding.
    got = process.convert(out.float(), x_t.float(), t.float(), "velocity")
    torch.testing.assert_close(got.double(), truth["velocity"], rtol=1e-4, atol=1e-4)


def test_a_loss_is_zero_exactly_at_the_target_and_the_cosine_term_measures_direction():
    g = torch.Generator().manual_seed(1)
    data, noise = torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 3, 4, 4, generator=g)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    for prediction in PREDICTIONS:
        process = FlowMatching("gvp", prediction)
        x_t, truth = exact(process, data.double(), noise.double(), t.double())

        def oracle(x, nt, cond, sign=1.0):
            assert torch.allclose(nt, t * process.time_scale)
            return sign * truth[prediction].float()

        batch = {"x0": data, "noise": noise, "t": t, "cond": None}
        assert process.loss(oracle, batch)["loss"].max() < 1e-8
        assert process.loss(lambda *a: oracle(*a, sign=-1.0), batch)["loss"].min() > 0.1
    cos = FlowMatching("linear", "velocity", cosine_weight=0.5)
    _, truth = exact(cos, data.double(), noise.double(), t.double())
    scaled = cos.loss(lambda x, nt, c: 3 * truth["velocity"].float(), {"x0": data, "noise": noise, "t": t, "cond": None})
    assert scaled["cos"].abs().max() < 1e-6 and scaled["mse"].min() > 0  # same direction, wrong length
    flipped = cos.loss(lambda x, nt, c: -truth["velocity"].float(), {"x0": data, "noise": noise, "t": t, "cond": None})
    torch.testing.assert_close(flipped["cos"], torch.full((4,), 2.0))
    torch.testing.assert_close(flipped["loss"], flipped["mse"] + 0.5 * flipped["cos"])


# --- (b): a Gaussian mixture, whose marginal velocity is known in closed form ----------------------

MEANS, STDS, WEIGHTS = gaussian_mixture.MEANS, gaussian_mixture.STDS, gaussian_mixture.WEIGHTS
mixture_moments, mixture_network = gaussian_mixture.moments, gaussian_mixture.mixture_network


def prior(n, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def quasi_uniform(n, dims, seed):
    """Scrambled Sobol points in (0, 1)^dims: moments of a smooth map of them converge about as 1/n
    rather than Monte Carlo's 1/sqrt(n), so 16k points pin a sampler's bias to ~0.02% (measured: the
    prior's variance is off by <= 2e-4) where 200,000 random draws left 0.3%."""
    u = torch.quasirandom.SobolEngine(dims, scramble=True, seed=seed).draw(n, dtype=torch.float64)
    return u.clamp(1e-12, 1 - 1e-12)


def normal(u):
    return math.sqrt(2) * torch.erfinv(2 * u - 1)  # the inverse normal CDF


def quasi_prior(n, seed=0):
    return normal(quasi_uniform(n, 2, seed))


def exact_start(process, n, seed):
    """Quasi-random samples of p_t at the sampler's first time: N(0, I) for linear and GVP from
    t = 0, but VP's alpha_0 = e^-5 and a start at t = eps leave some data in x (the process's prior
    ignores it, as SiT: a flow-map property, not a sampler's, so the oracle starts exactly)."""
    u = quasi_uniform(n, 5, seed)
    k = (u[:, 0] > WEIGHTS[0]).long()  # component 1 with probability WEIGHTS[1]
    data = MEANS[k] + STDS[k, None] * normal(u[:, 1:3])
    t0 = torch.tensor([process.interval(process.sample_eps)[0]], dtype=torch.float64)
    a, _, s, _ = coefficients(process.path, t0)
    return a * data + s * normal(u[:, 3:5])


def test_b_euler_200_and_heun_100_match_the_mixture_mean_and_variance():
    """Euler is first order: on this mixture its variance comes out 0.9-1.0% low at 200 steps and half
    that at 400 (measured on quasi-random starts), so the variance gets 1.5% and an O(1/n) check; Heun
    with the same 200 evaluations is within 0.04% (measured) of both moments, checked at 0.2%."""
    process = FlowMatching("linear", "velocity")
    net, x_T = mixture_network(process), quasi_prior(2 ** 14)
    mean, var = mixture_moments()
    euler = run_sampler(net, process, x_T, "euler", 200)
    torch.testing.assert_close(euler.mean(0), mean, rtol=0.005, atol=0)
    torch.testing.assert_close(euler.var(0), var, rtol=0.015, atol=0)
    assert (euler.var(0) < var).all()  # first order: it undershoots the spread
    heun = run_sampler(net, process, x_T, "heun", 100)
    torch.testing.assert_close(heun.mean(0), mean, rtol=0.002, atol=0)
    torch.testing.assert_close(heun.var(0), var, rtol=0.002, atol=0)
    finer = run_sampler(net, process, x_T, "euler", 400)
    ratio = (finer.var(0) - var) / (euler.var(0) - var)
    assert ((0.4 < ratio) & (ratio < 0.6)).all(), ratio  # twice the steps, half the error: O(1/n)


@pytest.mark.parametrize("path,prediction", [("gvp", "velocity"), ("vp", "velocity"), ("linear", "noise"),
                                             ("gvp", "score")])
def test_b_every_path_and_prediction_samples_the_mixture(path, prediction):
    """The same with the other paths and predictions (conversions to velocity inside the sampler):
    Heun-100 on 16k quasi-random starts: within 0.06% on both moments, but noise prediction's
    conversion (a division by sigma near the data end) 0.12% / 0.23% (measured), checked at 0.5%."""
    process = FlowMatching(path, prediction)
    x = run_sampler(mixture_network(process), process, exact_start(process, 2 ** 14, seed=4), "heun", 100)
    mean, var = mixture_moments()
    torch.testing.assert_close(x.mean(0), mean, rtol=0.005, atol=0)
    torch.testing.assert_close(x.var(0), var, rtol=0.005, atol=0)


def test_b_dopri5_matches_euler_1000_and_shift_changes_the_path_not_the_end():
    process = FlowMatching("linear", "velocity")
    net, x_T = mixture_network(process), prior(1000, seed=1)
    calls = []
    counted = lambda x, t: (calls.append(1), net(x, t))[1]  # noqa: E731
    ode = run_sampler(counted, process, x_T, "dopri5", atol=1e-6, rtol=1e-5)
    euler = run_sampler(net, process, x_T, "euler", 1000)
    gap = (ode - euler).abs()
    # Euler-1000's own error is ~1e-3; a few samples near the boundary between the modes, where the
    # flow separates neighbours, carry more of it.
    assert gap.mean() < 3e-3 and gap.quantile(0.99) < 2e-2
    assert 10 < len(calls) < 1000  # adaptive: its own count of evaluations
    shifted = run_sampler(net, process, x_T, "euler", 1000, shift=0.3)
    assert (shifted - ode).abs().mean() < 5e-3  # the same ODE, another grid


def test_b_sde_has_the_mixture_marginals():
    process = FlowMatching("linear", "velocity")
    torch.manual_seed(0)
    for form in ("sigma", "SBDM"):
        x = run_sampler(mixture_network(process), process, prior(40_000, seed=2), "sde", 200, diffusion_form=form)
        mean, var = mixture_moments()
        torch.testing.assert_close(x.mean(0), mean, rtol=0.01, atol=0)
        torch.testing.assert_close(x.var(0), var, rtol=0.03, atol=0)


# --- (c) the shift, (d) diffusers' FlowMatch Euler --------------------------------------------------

def test_c_shift_identity_monotone_endpoints():
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    assert torch.equal(shift_time(t, 1.0), t)
    for s in (0.1, 0.3, 2.0, 7.0):
        u = shift_time(t, s)
        assert u[0] == 0 and u[-1] == 1 and (u.diff() > 0).all()
        assert (u[1:-1] < t[1:-1]).all() == (s < 1)  # s < 1 spends more steps near the noise end
    grid = time_grid(0.001, 0.999, 10, 0.3)
    assert grid[0] == pytest.approx(0.001) and grid[-1] == pytest.approx(0.999) and len(grid) == 11


@pytest.mark.parametrize("shift", [1.0, 0.3, 3.0])
def test_d_diffusers_flow_match_euler_walks_our_euler_trajectory(shift):
    # One Gaussian: a smooth, well-conditioned field. (Near the boundary between two modes the flow
    # separates neighbours, and diffusers' float32 sigmas move a few samples by ~3e-5 there.)
    process = FlowMatching("linear", "velocity")
    net = mixture_network(process, MEANS[:1], STDS[:1], WEIGHTS[:1] / WEIGHTS[0])
    x_T = prior(512, seed=3).float()
    seen = {"ours": [], "diffusers": []}

    def recording(key):
        def f(x, t):
            seen[key].append(t[0].item())
            return net(x, t)
        return f

    ours = run_sampler(recording("ours"), process, x_T, "euler", 30, shift=shift)
    theirs = run_sampler(recording("diffusers"), process, x_T, "diffusers-euler", 30, shift=shift)
    np.testing.assert_allclose(seen["ours"], seen["diffusers"], atol=1e-6)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


# --- contract details ----------------------------------------------------------------------------

def test_meta_round_trip_and_sit_defaults():
    p = FlowMatching("vp", "score", "logit-normal", 0.3, 0.7, time_scale=1000.0)
    q = process_from_meta({"process": "flow", "process_config": p.to_meta()})
    assert q.to_meta() == p.to_meta() and q.train_eps == 1e-5 and q.sample_eps == 1e-3
    sit = process_from_meta({"process": "flow"})  # a public SiT file says nothing: SiT's conventions
    assert (sit.path, sit.prediction, sit.time_scale, sit.interval(sit.sample_eps)) == ("linear", "velocity", 1.0, (0.0, 1.0))
    with pytest.raises(UserError, match="unknown flow settings"):
        process_from_meta({"process": "flow", "process_config": {"paht": "linear"}})
    for bad in (dict(path="cosine"), dict(prediction="eps"), dict(time_sampling="beta"), dict(logit_std=0),
                dict(prediction="noise", cosine_weight=1.0), dict(time_scale=-1)):
        with pytest.raises(UserError):
            FlowMatching(**bad)


def test_draws_are_per_sample_and_logit_normal_concentrates_mid_range():
    uniform, logit = FlowMatching(), FlowMatching(time_sampling="logit-normal")
    a = uniform.draw(np.random.default_rng([0, 5]), (3, 4, 4))
    b = uniform.draw(np.random.default_rng([0, 5]), (3, 4, 4))
    assert a["t"] == b["t"] and torch.equal(a["noise"], b["noise"])
    ts = np.array([logit.draw(np.random.default_rng([0, i]), (1,))["t"] for i in range(4000)])
    us = np.array([uniform.draw(np.random.default_rng([0, i]), (1,))["t"] for i in range(4000)])
    assert abs(np.median(ts) - 0.5) < 0.02 and ((ts > 0.27) & (ts < 0.73)).mean() > 0.6  # sigmoid(+-1) = 0.27, 0.73
    assert abs(us.mean() - 0.5) < 0.02 and ((us > 0.27) & (us < 0.73)).mean() < 0.5
    shifted = FlowMatching(time_sampling="logit-normal", logit_mean=1.0)
    assert np.mean([shifted.draw(np.random.default_rng([0, i]), (1,))["t"] for i in range(2000)]) > 0.65  # towards data
    noisy = FlowMatching(prediction="noise")
    assert min(noisy.draw(np.random.default_rng([0, i]), (1,))["t"] for i in range(2000)) >= 1e-3


def test_samplers_refuse_what_does_not_fit():
    flow, sde_only = FlowMatching(), FlowMatching("gvp")
    with pytest.raises(UserError, match="no option 'eta'"):
        check_sampler(flow, "euler", 10, eta=0.5)
    with pytest.raises(UserError, match="unknown sampler 'ddpm' for the 'flow' process"):
        check_sampler(flow, "ddpm", 10)
    with pytest.raises(UserError, match="diffusers-euler is rectified flow"):
        check_sampler(sde_only, "diffusers-euler", 10)
    with pytest.raises(UserError, match="sde steps must be an int >= 2"):
        check_sampler(flow, "sde", 1)
    net = mixture_network(flow)
    with pytest.raises(UserError, match="shift must be a positive number"):
        run_sampler(net, flow, prior(4), "euler", 4, shift=0.0)
    with pytest.raises(UserError, match="unknown diffusion form"):
        run_sampler(net, flow, prior(4), "sde", 4, diffusion_form="cosine")
    assert math.isfinite(run_sampler(net, flow, prior(4), "heun", 3).sum().item())
