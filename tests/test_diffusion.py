"""The diffusion process: schedules, forward process, respacing, posterior, variance, hybrid loss."""

import math

import pytest
import torch

from dit.processes.gaussian import GaussianDiffusion, beta_schedule, discretized_gaussian_log_likelihood, space_timesteps
from dit.errors import UserError

T = 1000


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion.from_schedule("linear", T)


def test_linear_schedule_endpoints(diffusion):
    b = diffusion.betas
    assert b.dtype == torch.float64 and b.shape == (T,)
    assert b[0].item() == pytest.approx(1e-4, abs=1e-12)
    assert b[-1].item() == pytest.approx(0.02, abs=1e-12)
    abar = diffusion.alphas_cumprod
    assert (abar[1:] < abar[:-1]).all()  # strictly decreasing: t = T-1 is the noisiest
    assert abar[0].item() == pytest.approx(1 - 1e-4)
    assert abar[-1].item() < 1e-4  # x_{T-1} is almost pure noise (DDPM: ~4e-5)


def test_cosine_schedule():
    b = beta_schedule("cosine", T)
    assert b.max().item() <= 0.999 and b.min().item() > 0
    abar = torch.cumprod(1 - b, 0)
    # Improved DDPM eq. 17: abar_t = f(t)/f(0), f(t) = cos^2(((t+1)/T + s)/(1+s) * pi/2) at step t.
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    assert abar[499].item() == pytest.approx(f(500 / T) / f(0), rel=1e-9)
    with pytest.raises(UserError):
        beta_schedule("quadratic", T)


def test_q_sample_statistics(diffusion):
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 2), 0.7)
    noise = torch.randn(x0.shape, generator=g)
    for t in (0, 500, T - 1):
        xt = diffusion.q_sample(x0, torch.full((len(x0),), t), noise)
        abar = diffusion.alphas_cumprod[t].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=0.02)
        assert xt.std().item() == pytest.approx(math.sqrt(1 - abar), abs=0.02)
    # x_{T-1} ~ N(0, 1) whatever x_0 is.
    xT = diffusion.q_sample(torch.full((20000, 2), 3.0), torch.full((20000,), T - 1), noise)
    assert abs(xT.mean().item()) < 0.03 and xT.std().item() == pytest.approx(1.0, abs=0.02)


def test_respacing_250(diffusion):
    kept = space_timesteps(T, 250)
    assert kept[0] == 0 and kept[-1] == T - 1 and len(set(kept)) == 250
    assert space_timesteps(T, "250") == kept
    spaced = diffusion.respace(250)
    assert spaced.num_timesteps == 250 and spaced.is_respaced and not diffusion.is_respaced
    assert spaced.timestep_map.tolist() == kept
    # abar of the respaced process equals the original abar at the kept timesteps.
    torch.testing.assert_close(spaced.alphas_cumprod, diffusion.alphas_cumprod[kept], rtol=1e-12, atol=0)
    assert spaced.model_timesteps(torch.tensor([0, 249])).tolist() == [0.0, 999.0]
    # Respacing composes: the map always points into the original process.
    assert spaced.respace(2).timestep_map.tolist() == [0, 999]


def test_space_timesteps_forms():
    assert space_timesteps(T, "ddim25") == list(range(0, T, 40))
    assert space_timesteps(T, "ddim250") == list(range(0, T, 4))
    sections = space_timesteps(300, "10,15,20")
    assert len(sections) == 45 and sections[0] == 0 and sections[-1] == 299
    assert sum(t < 100 for t in sections) == 10 and sum(100 <= t < 200 for t in sections) == 15
    assert space_timesteps(T, 1000) == list(range(T))
    for bad in (0, -3, 1001, "0", "ddim0", "ddim999", "abc", "10,,5", "1000,1"):
        with pytest.raises(UserError):
            space_timesteps(T, bad)


def _closed_form_posterior(abar_t, abar_prev, x0, xt):
    """q(x_{t-1} | x_t, x_0) by Gaussian conditioning of the joint of (x_{t-1}, x_t) given x_0,
    independent of the DDPM formulas: x_{t-1} = a' x0 + s' e1, x_t = sqrt(alpha) x_{t-1} + sqrt(beta) e2."""
    alpha = abar_t / abar_prev
    var_prev = 1 - abar_prev
    cov = math.sqrt(alpha) * var_prev  # Cov(x_{t-1}, x_t | x0)
    var_t = 1 - abar_t
    mean = math.sqrt(abar_prev) * x0 + cov / var_t * (xt - math.sqrt(abar_t) * x0)
    return mean, var_prev - cov ** 2 / var_t


@pytest.mark.parametrize("steps", [None, 250])
def test_posterior_matches_gaussian_conditioning(diffusion, steps):
    d = diffusion if steps is None else diffusion.respace(steps)
    x0 = torch.linspace(-1, 1, 7, dtype=torch.float64)
    xt = torch.linspace(2, -2, 7, dtype=torch.float64)
    for t in (1, 2, d.num_timesteps // 2, d.num_timesteps - 1):
        abar, abar_prev = d.alphas_cumprod[t].item(), d.alphas_cumprod[t - 1].item()
        mean, var = _closed_form_posterior(abar, abar_prev, x0, xt)
        ours = d.posterior_mean_coef1[t] * x0 + d.posterior_mean_coef2[t] * xt
        torch.testing.assert_close(ours, mean, rtol=1e-9, atol=1e-12)
        assert d.posterior_variance[t].item() == pytest.approx(var, rel=1e-9)
    # And p_mean_variance with the true eps recovers x0 and the posterior mean (float32 path).
    t = torch.full((7,), d.num_timesteps // 2)
    abar = d.alphas_cumprod[d.num_timesteps // 2].item()
    eps = (xt - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
    out = d.p_mean_variance(eps.float().view(7, 1), xt.float().view(7, 1), t)
    torch.testing.assert_close(out["pred_xstart"].double().view(-1), x0, atol=1e-5, rtol=0)
    mean, _ = _closed_form_posterior(abar, d.alphas_cumprod[t[0] - 1].item(), x0, xt)
    torch.testing.assert_close(out["mean"].double().view(-1), mean, atol=1e-5, rtol=0)


def test_learned_range_variance_endpoints(diffusion):
    x = torch.zeros(3, 2, 4)
    for ti in (0, 1, 500, T - 1):
        t = torch.full((3,), ti)
        lo = diffusion.p_mean_variance(torch.cat([x, -torch.ones_like(x)], 1), x, t)["log_variance"]
        hi = diffusion.p_mean_variance(torch.cat([x, torch.ones_like(x)], 1), x, t)["log_variance"]
        pv = diffusion.posterior_variance[max(ti, 1)].item()  # clipped at t = 0
        assert torch.allclose(lo, torch.full_like(lo, math.log(pv)), rtol=1e-6)
        assert torch.allclose(hi, torch.full_like(hi, math.log(diffusion.betas[ti].item())), rtol=1e-6)
        fixed = diffusion.p_mean_variance(x, x, t)["variance"]  # C channels: fixed large
        expect = pv if ti == 0 else diffusion.betas[ti].item()
        assert torch.allclose(fixed, torch.full_like(fixed, expect), rtol=1e-6)
    with pytest.raises(ValueError):
        diffusion.p_mean_variance(torch.zeros(3, 3, 4), x, torch.zeros(3, dtype=torch.long))


class _TinyNet(torch.nn.Module):
    """Stand-in network with 2C outputs: a 1x1 conv mixing x with a time feature."""

    def __init__(self, C=2):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(C + 1, 2 * C, 1)
        self.seen_t = None

    def forward(self, x, t, y=None):
        self.seen_t = t
        tfeat = (t / 1000).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return torch.tanh(self.conv(torch.cat([x, tfeat], 1)))


def test_hybrid_loss(diffusion):
    net = _TinyNet()
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 2, 3, 3, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 1, 500, T - 1])
    terms = diffusion.training_losses(net, x0, t, noise=noise)
    assert net.seen_t.dtype == torch.float32 and net.seen_t.tolist() == [0.0, 1.0, 500.0, 999.0]
    for k in ("loss", "mse", "vb"):
        assert terms[k].shape == (4,) and torch.isfinite(terms[k]).all()
    assert (terms["vb"] >= 0).all()  # KL and a discrete NLL are both non-negative
    # mse part equals the manual eps MSE.
    eps = net(diffusion.q_sample(x0, t, noise), t.float())[:, :2]
    torch.testing.assert_close(terms["mse"], ((noise - eps) ** 2).mean((1, 2, 3)))
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])

    # vb at t > 0 is KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) in bits per dim: recompute it with
    # torch.distributions from the closed-form posterior and the learned-range variance.
    from torch.distributions import Normal, kl_divergence

    xt = diffusion.q_sample(x0, t, noise)
    out = net(xt, t.float())
    for row in (1, 2, 3):
        ti = t[row].item()
        abar, abar_prev = diffusion.alphas_cumprod[ti].item(), diffusion.alphas_cumprod[ti - 1].item()
        q_mean, q_var = _closed_form_posterior(abar, abar_prev, x0[row].double(), xt[row].double())
        eps_hat, v = out[row, :2].double(), out[row, 2:].double()
        x0_hat = (xt[row].double() - math.sqrt(1 - abar) * eps_hat) / math.sqrt(abar)
        p_mean, _ = _closed_form_posterior(abar, abar_prev, x0_hat, xt[row].double())
        beta = 1 - abar / abar_prev
        frac = (v + 1) / 2
        p_logvar = frac * math.log(beta) + (1 - frac) * math.log(diffusion.posterior_variance[max(ti, 1)].item())
        kl = kl_divergence(Normal(q_mean, math.sqrt(q_var)), Normal(p_mean, (0.5 * p_logvar).exp()))
        assert terms["vb"][row].item() == pytest.approx(kl.mean().item() / math.log(2), rel=1e-3, abs=1e-6)

    # The vb term must not train the mean: its gradient through the eps channels is zero.
    out = net(diffusion.q_sample(x0, t, noise), t.float()).detach().requires_grad_(True)
    diffusion.training_losses(lambda *a, **k: out, x0, t, noise=noise)["vb"].sum().backward()
    assert out.grad[:, :2].abs().max() == 0 and out.grad[:, 2:].abs().max() > 0
    out.grad = None
    diffusion.training_losses(lambda *a, **k: out, x0, t, noise=noise)["mse"].sum().backward()
    assert out.grad[:, 2:].abs().max() == 0 and out.grad[:, :2].abs().max() > 0


def test_loss_without_learned_sigma_and_respaced(diffusion):
    spaced = diffusion.respace(10)
    net = lambda x, t, y=None: torch.zeros_like(x) + t.view(-1, 1) / 1000  # C channels
    x0 = torch.zeros(2, 3)
    terms = spaced.training_losses(net, x0, torch.tensor([9, 0]), noise=torch.ones(2, 3))
    assert (terms["vb"] == 0).all()
    # The network saw the ORIGINAL timesteps (999 and 0), so eps = 0.999 and 0.
    torch.testing.assert_close(terms["mse"], torch.tensor([0.001 ** 2, 1.0]))


def test_discretized_decoder_likelihood():
    """Bin masses of the decoder (DDPM eq. 13) vs the exact normal CDF; the tanh approximation of
    Phi is good to ~1e-3, and the 256 bins of [-1, 1] must carry all the probability."""
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    mean, log_scale = torch.tensor(0.1, dtype=torch.float64), torch.tensor(math.log(0.05), dtype=torch.float64)
    probs = discretized_gaussian_log_likelihood(levels, mean, log_scale).exp()
    phi = lambda z: 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    exact = phi((levels + 1 / 255 - mean) / 0.05) - phi((levels - 1 / 255 - mean) / 0.05)
    exact[0], exact[-1] = phi((levels[0] + 1 / 255 - mean) / 0.05), 1 - phi((levels[-1] - 1 / 255 - mean) / 0.05)
    assert (probs - exact).abs().max().item() < 2e-3
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
