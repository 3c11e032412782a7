"""The vq-diffusion process, its sampler and token-dit against brute force and closed forms (issue #19).

- the cumulative q(x_t | x_0) and every skip q(x_t | x_s) equal products of explicit per-step
  (K + 1) x (K + 1) transition matrices;
- the posterior p(x_s | x_t) = sum q(x_s | x_t, x0) p(x0) equals Bayes' rule on those matrices
  (K = 3, T = 6, strides 1 and 2 and straight to 0) at 1e-6 in float64, and diffusers'
  VQDiffusionScheduler.q_posterior on the released schedule at 1e-5; these matrices come from the
  code's own `transition` and tables, so tests/test_vq_posterior_oracle.py checks the same objects
  against matrices written from the paper alone (schedule included, any replace_max);
- an oracle network that knows x_0 makes the reverse chain return x_0 exactly, full and strided;
- the Bayes-optimal network of a known joint over two tokens samples that joint (TV <= 0.05), and
  the sampler's output matches the exact distribution of the factorised chain computed by brute force;
- token-dit's output is a log-softmax over K, uniform at init (adaLN-Zero);
- the loss is finite, zero for an oracle network, deterministic per draw; importance sampling
  follows its history; draws, samples (per seed, whatever the batching) and meta round trips.
"""

import itertools
import math

import numpy as np
import pytest
import torch

from dit.errors import UserError
from dit.networks import get_architecture
from dit.networks.conditioning import as_cond
from dit.networks.token_dit import TokenDiT, TokenDiTConfig
from dit.processes import VQDiffusion, process_from_meta
from dit.processes.vq_schedule import LOG_ZERO, log_onehot, mask_id
from dit.sampling import check_sampler, default_sampler, run_sampler
from dit.sampling.noise import PerSampleNoise
from dit.sampling.vq_diffusion import guided_log_probs, sample_categorical, truncate

K, T = 3, 6


def step_matrix(schedule, s, t):
    """Explicit q(x_t = j | x_s = i) as a (K + 1) x (K + 1) matrix, from the skip's (a, b, c)."""
    a, b, c = (float(v) for v in schedule.transition(torch.tensor(s), torch.tensor(t)))
    Kk = schedule.K
    Q = torch.full((Kk + 1, Kk + 1), b, dtype=torch.float64)
    Q[:, Kk] = c
    Q[range(Kk), range(Kk)] += a
    Q[Kk] = 0
    Q[Kk, Kk] = 1
    return Q


def product(schedule, s, t):
    """Q_{s+1} ... Q_t from one-step matrices (the identity for s == t)."""
    Q = torch.eye(schedule.K + 1, dtype=torch.float64)
    for i in range(s + 1, t + 1):
        Q = Q @ step_matrix(schedule, i - 1, i)
    return Q


@pytest.mark.parametrize("replace_max", [0.0, 0.1, 0.5])
def test_cumulative_and_skips_are_products_of_steps(replace_max):
    S = VQDiffusion(K, T, replace_max=replace_max).schedule
    for t in range(1, T + 1):
        Q = step_matrix(S, t - 1, t)
        assert (Q >= 0).all() and torch.allclose(Q.sum(1), torch.ones(K + 1, dtype=torch.float64))  # a valid step
        Qbar = product(S, 0, t)
        log_q = S.log_q(torch.arange(K).view(K, 1), torch.full((K,), t))[..., 0]  # (K, K + 1): rows x0
        assert torch.allclose(log_q.exp(), Qbar[:K], atol=1e-12, rtol=0)
        for s in range(t):
            assert torch.allclose(step_matrix(S, s, t), product(S, s, t), atol=1e-12, rtol=0)
    # The named replace mass: K bbar_T = r 0.99999 + the released 1e-6 (r up to 1e-5),
    # gbar_T = (1 - r) 0.99999.
    abar, bbar, gbar = S.cumulative(torch.tensor(T))
    assert abs(float(K * bbar) - (replace_max * 0.99999 + 1e-6)) < 1e-12
    assert abs(float(gbar) - (1 - replace_max) * 0.99999) < 1e-12


def brute_posterior(S, p_x0, x_t, t, s):
    """p(x_s = j | x_t) = sum_i p(i) Q_{s->t}[j, x_t] Qbar_s[i, j] / Qbar_t[i, x_t] (Bayes), (K + 1,)."""
    Q_st, Qbar_s, Qbar_t = product(S, s, t), product(S, 0, s), product(S, 0, t)
    out = torch.zeros(S.K + 1, dtype=torch.float64)
    for i in range(S.K):
        if Qbar_t[i, x_t] > 0:
            out += p_x0[i] * Q_st[:, x_t] * Qbar_s[i] / Qbar_t[i, x_t]
    return out


@pytest.mark.parametrize("replace_max", [0.0, 0.1])
@pytest.mark.parametrize("stride", [1, 2, "to-zero"])
def test_posterior_is_bayes_rule_on_explicit_matrices(replace_max, stride):
    S = VQDiffusion(K, T, replace_max=replace_max).schedule
    torch.manual_seed(0)
    p = torch.distributions.Dirichlet(torch.ones(K, dtype=torch.float64)).sample((K + 1,))  # one p(x0) per x_t
    p[0] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # a one-hot p(x0): the true posterior q
    x_t = torch.arange(K + 1).view(1, K + 1)  # every value of x_t, [MASK] included
    log_p = p.T.log().clamp_min(LOG_ZERO).unsqueeze(0)  # (1, K, K + 1)
    for t in range(1, T + 1):
        s = 0 if stride == "to-zero" else t - stride
        if s < 0:
            continue
        ours = S.posterior(log_p, x_t, torch.tensor([t]), torch.tensor([s])).exp()[0]  # (K + 1, K + 1)
        for k in range(K + 1):
            want = brute_posterior(S, p[k], k, t, s)
            assert torch.allclose(ours[:, k], want, atol=1e-6, rtol=0), (t, s, k, ours[:, k], want)
            assert abs(float(ours[:, k].sum()) - 1) < 1e-6


def test_posterior_matches_diffusers_on_the_released_schedule():
    from diffusers import VQDiffusionScheduler

    for Kk, Tt in ((3, 6), (7, 100)):
        ours = VQDiffusion(Kk, Tt, replace_max=0.0).schedule
        theirs = VQDiffusionScheduler(num_vec_classes=Kk + 1, num_train_timesteps=Tt)
        g = torch.Generator().manual_seed(1)
        N = 40
        x_t = torch.randint(0, Kk + 1, (2, N), generator=g)
        x_t[0, :10] = Kk  # masked positions for sure
        log_p = torch.log_softmax(3 * torch.randn(2, Kk, N, generator=g), 1)
        for i in range(Tt):  # diffusers' index i is our t = i + 1, its "t - 1 = -1" our s = 0
            want = theirs.q_posterior(log_p, x_t, i).exp()
            got = ours.posterior(log_p.double(), x_t, torch.full((2,), i + 1), torch.full((2,), i)).exp()
            assert torch.allclose(got.float(), want, atol=1e-5, rtol=0), i


def oracle(x0):
    """A network that knows x_0: log p(x~0 | x_t) = log one-hot(x0), whatever x_t and t."""
    def denoiser(x, t):
        return log_onehot(x0, K_ORACLE, torch.float32).clamp_min(LOG_ZERO)
    return denoiser


K_ORACLE = 8


@pytest.mark.parametrize("replace_max", [0.0, 0.3])
@pytest.mark.parametrize("steps", [20, 10, 7, 1])
def test_oracle_network_returns_x0_exactly(replace_max, steps):
    process = VQDiffusion(K_ORACLE, 20, replace_max=replace_max)
    x0 = torch.randint(0, K_ORACLE, (4, 5, 5), generator=torch.Generator().manual_seed(2))
    x_T = process.prior(None, 4, (5, 5), "cpu")
    assert (x_T == mask_id(K_ORACLE)).all()
    seen = []
    out = run_sampler(oracle(x0), process, x_T, "ancestral", steps, PerSampleNoise(range(4)),
                      callback=lambda s, x, _: seen.append(s))
    assert torch.equal(out, x0)
    assert seen == process.time_points(steps)[1:]


def joint_toy(Tt):
    """K = 3, two tokens, a correlated joint p(x0) (3 x 3), and the Bayes-optimal network: the exact
    marginals p(x0_i | x_t) of the joint posterior, tabulated per (t, x_t) over the 16 states."""
    p = torch.tensor([[0.30, 0.05, 0.05], [0.05, 0.25, 0.02], [0.03, 0.05, 0.20]], dtype=torch.float64)
    p /= p.sum()
    process = VQDiffusion(K, Tt)
    S = process.schedule
    table = torch.zeros(Tt + 1, (K + 1) ** 2, K, 2, dtype=torch.float64)
    for t in range(1, Tt + 1):
        Q = product(S, 0, t)[:K]  # (K, K + 1) q(x_t | x0)
        for a, b in itertools.product(range(K + 1), repeat=2):
            w = p * Q[:, a][:, None] * Q[:, b][None, :]
            w /= w.sum()
            table[t, a * (K + 1) + b] = torch.stack([w.sum(1), w.sum(0)], 1)

    def denoiser(x, t):
        return table[t.long(), x[:, 0] * (K + 1) + x[:, 1]].log().clamp_min(LOG_ZERO)  # (B, K, 2)

    return p, process, denoiser


def exact_chain(process, denoiser, steps):
    """The exact output distribution of the sampler (each token drawn independently given x_t), by
    propagating the distribution over the 16 states of two tokens: (K + 1, K + 1)."""
    states = torch.tensor(list(itertools.product(range(K + 1), repeat=2)))  # (16, 2)
    dist = torch.zeros((K + 1) ** 2, dtype=torch.float64)
    dist[-1] = 1.0  # all [MASK]
    times = process.time_points(steps)
    for t, s in zip(times[:-1], times[1:]):
        tt = torch.full((len(states),), t)
        log_x0 = denoiser(states, tt.double())
        P = log_x0.exp() if s == 0 else process.schedule.posterior(log_x0, states, tt, torch.full_like(tt, s)).exp()
        if s == 0:
            P = torch.cat([P, torch.zeros_like(P[:, :1])], 1)
        trans = torch.einsum("na,nb->nab", P[:, :, 0], P[:, :, 1]).reshape(len(states), -1)  # (16, 16)
        dist = dist @ trans
    return dist.view(K + 1, K + 1)


def empirical(samples):
    counts = torch.zeros(K + 1, K + 1, dtype=torch.float64)
    for a, b in samples.tolist():
        counts[a, b] += 1
    return counts / len(samples)


def tv(p, q):
    return 0.5 * float((p - q).abs().sum())


@pytest.mark.parametrize("Tt,steps", [(50, 50), (50, 25), (6, 6), (6, 3)])
def test_bayes_optimal_network_samples_the_joint(Tt, steps):
    p, process, denoiser = joint_toy(Tt)
    n = 4000
    g = torch.Generator().manual_seed(3)
    samples = run_sampler(denoiser, process, process.prior(None, n, (2,), "cpu"), "ancestral", steps,
                          lambda like: torch.randn(like.shape, generator=g, dtype=like.dtype))
    exact = exact_chain(process, denoiser, steps)
    # The sampler draws what the factorised reverse chain gives, whatever T and the stride ...
    assert tv(empirical(samples), exact) <= 0.05
    assert (samples < K).all()
    target = torch.zeros(K + 1, K + 1, dtype=torch.float64)
    target[:K, :K] = p
    if Tt == 50:  # ... which is the joint once few tokens are unmasked in the same step (bias ~ 0.4 / steps)
        assert tv(exact, target) <= 0.02
        assert tv(empirical(samples), target) <= 0.05


def test_truncation_and_log_space_guidance():
    lp = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).view(1, 4, 1)
    assert torch.equal(truncate(lp, 1.0), lp)
    kept = truncate(lp, 0.75).exp()[0, :, 0]  # 0.5 < 0.75 keeps the 2nd id; 0.8 >= 0.75 drops the 3rd
    assert torch.allclose(kept, torch.tensor([0.625, 0.375, 0, 0]), atol=1e-6)
    assert torch.allclose(truncate(lp, 0.1).exp()[0, :, 0], torch.tensor([1.0, 0, 0, 0]), atol=1e-6)
    cond, uncond = torch.tensor([1, 2]), torch.tensor([9, 9])

    def model(x, t, c):  # log-probabilities that depend on the label
        y = as_cond(c)["y"].double().view(-1, 1)
        return torch.log_softmax(torch.stack([y * 0.1, -y * 0.2, y * 0.05 + 1], 1).expand(-1, 3, 2), 1)  # (B, 3, 2)

    x, t = torch.zeros(2, 2, dtype=torch.long), torch.ones(2)
    lc, lu = model(x, t, {"y": cond}), model(x, t, {"y": uncond})
    for s in (0.0, 1.0, 3.0):
        got = guided_log_probs(model, cond, uncond, s)(x, t)
        assert torch.allclose(got.double(), torch.log_softmax(lu + s * (lc - lu), 1), atol=1e-6)
    with pytest.raises(UserError):
        guided_log_probs(model, cond, uncond, -1.0)


def test_sample_categorical_is_inverse_cdf():
    log_p = torch.log(torch.tensor([0.2, 0.0, 0.5, 0.3], dtype=torch.float64)).clamp_min(LOG_ZERO).view(1, 4, 1)
    u = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    ids = sample_categorical(log_p.expand(1000, 4, 1), u.view(1000, 1))[:, 0]
    assert torch.equal(torch.bincount(ids, minlength=4), torch.tensor([200, 0, 500, 300]))


def test_q_sample_follows_q():
    process = VQDiffusion(4, 10, replace_max=0.3)
    M, t = 20000, 7
    u = ((torch.arange(M, dtype=torch.float64) + 0.5) / M).view(1, M)
    x_t = process.schedule.q_sample(torch.full((1, M), 2), torch.tensor([t]), u)
    freq = torch.bincount(x_t[0], minlength=5).double() / M
    want = process.schedule.log_q(torch.tensor([[2]]), torch.tensor([t]))[0, :, 0].exp()
    assert torch.allclose(freq, want, atol=2 / M)
    # Coupled over t: a token masked at t is masked at every later t for the same u.
    m7 = x_t == 4
    m9 = process.schedule.q_sample(torch.full((1, M), 2), torch.tensor([9]), u) == 4
    assert (m9 | ~m7).all()


def tiny_net(K_=8, side=4, seed=0):
    torch.manual_seed(seed)
    net = TokenDiT(TokenDiTConfig(input_size=side, codebook_size=K_, hidden_size=32, depth=2, num_heads=2, num_classes=3))
    return net


def test_token_dit_outputs_normalised_log_probs_uniform_at_init():
    net = tiny_net().eval()
    x = torch.randint(0, 9, (2, 4, 4))
    out = net(x, torch.tensor([1.0, 50.0]), torch.tensor([0, 3]))
    assert out.shape == (2, 8, 4, 4)
    assert torch.allclose(out, torch.full_like(out, -math.log(8)))  # adaLN-Zero: blocks are the identity, logits 0
    for p in net.parameters():  # break the zero init: outputs differ but stay normalised
        p.data.add_(0.05 * torch.randn_like(p))
    out = net(x, torch.tensor([1.0, 50.0]), {"y": torch.tensor([0, 1]), "drop": torch.tensor([0, 1])})
    assert torch.allclose(out.logsumexp(1), torch.zeros(2, 4, 4), atol=1e-5)
    flat = net(x.view(2, 16), torch.tensor([1.0, 50.0]), {"y": torch.tensor([0, 1]), "drop": torch.tensor([0, 1])})
    assert torch.allclose(flat.view(2, 8, 4, 4), out, atol=1e-6)
    assert net.input_shape == (4, 4) and net.null_class == 3


def test_token_dit_registry_entry():
    arch = get_architecture("token-dit")

    class Run:
        model, hidden_size, depth, num_heads, class_dropout_prob, codebook_size = "TokenDiT-CPU", None, None, None, 0.1, 16
    cfg = arch.config_for_run(Run, {"input_size": 8, "num_classes": 5})
    assert (cfg.codebook_size, cfg.input_size, cfg.depth) == (16, 8, 4)
    assert arch.config_from_dict(cfg.to_dict()) == cfg
    assert arch.build(cfg).input_shape == (8, 8)


def batch_of(process, x0, seeds, y=None):
    draws = [process.draw(np.random.default_rng([0, s]), x0.shape[1:]) for s in seeds]
    out = {k: (torch.stack([d[k] for d in draws]) if torch.is_tensor(draws[0][k]) else torch.tensor([d[k] for d in draws]))
           for k in draws[0]}
    y = torch.zeros(len(seeds), dtype=torch.long) if y is None else y
    return {"x0": x0, "cond": {"y": y, "drop": torch.zeros_like(y)}, **out}


def test_loss_finite_zero_for_an_oracle_and_deterministic():
    process = VQDiffusion(8, 20)
    x0 = torch.randint(0, 8, (6, 4, 4), generator=torch.Generator().manual_seed(4))
    batch = batch_of(process, x0, range(6))
    batch["t"] = torch.tensor([1, 2, 5, 10, 19, 20])  # both ends
    net = tiny_net()
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    losses = process.loss(net, batch)
    assert set(losses) >= {"loss", "vlb", "aux"} and losses["loss"].shape == (6,)
    assert torch.isfinite(losses["loss"]).all() and (losses["vlb"] >= -1e-6).all()
    losses["loss"].mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    again = process.loss(net, batch)
    assert torch.equal(again["loss"], losses["loss"])
    # An oracle network: the posterior is exact, so L_t and L_x0 vanish (up to the 1e-30 floor).
    exact = process.loss(lambda x, t, c: log_onehot(x0, 8, torch.float32), batch)
    assert exact["loss"].abs().max() < 1e-4
    # t = 1 is the decoder NLL -log p(x0 | x_1): with a uniform network, log K per token.
    uniform = process.loss(lambda x, t, c: torch.zeros(6, 8, 4, 4), {**batch, "t": torch.ones(6, dtype=torch.long)})
    assert torch.allclose(uniform["vlb"], torch.full((6,), math.log(8)), atol=1e-5)


def test_draw_is_per_sample_deterministic():
    process = VQDiffusion(8, 20)
    a = process.draw(np.random.default_rng([7, 3]), (4, 4))
    b = process.draw(np.random.default_rng([7, 3]), (4, 4))
    assert a["t"] == b["t"] and torch.equal(a["u"], b["u"]) and a["t_u"] == b["t_u"]
    assert 1 <= a["t"] <= 20 and a["u"].shape == (4, 4)


def test_meta_round_trip_and_registry():
    process = VQDiffusion(16, 50, replace_max=0.1, aux_weight=1e-3, time_sampling="importance")
    back = process_from_meta({"process": "vq-diffusion", "process_config": process.to_meta()})
    assert isinstance(back, VQDiffusion) and back.to_meta() == process.to_meta()
    assert torch.equal(back.schedule.gbar, process.schedule.gbar)
    with pytest.raises(UserError):
        process_from_meta({"process": "vq-diffusion", "process_config": {**process.to_meta(), "bogus": 1}})
    with pytest.raises(UserError):
        VQDiffusion(16, 50, replace_max=1.0)
    assert default_sampler("vq-diffusion") == "ancestral"
    check_sampler(process, "ancestral", 50)
    check_sampler(process, "ancestral", 7, truncation=0.9)
    with pytest.raises(UserError):
        check_sampler(process, "ancestral", 51)  # more steps than T


def test_sampling_is_per_seed_whatever_the_batching():
    process = VQDiffusion(8, 10)
    net = tiny_net().eval()
    for p in net.parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    y = torch.tensor([0, 1, 2, 1])

    def run(idx):
        d = guided_log_probs(net, y[idx], torch.full_like(y[idx], 3), 2.0)
        return run_sampler(d, process, process.prior(None, len(idx), (4, 4), "cpu"), "ancestral", 5,
                           PerSampleNoise.for_samples(11, idx), truncation=0.9)

    whole = run([0, 1, 2, 3])
    assert torch.equal(torch.cat([run([0, 1]), run([2, 3])]), whole)
    assert torch.equal(run([0, 1, 2, 3]), whole)
    assert (whole < 8).all()
