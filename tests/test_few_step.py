"""MeanFlow and shortcut models against closed forms and independent computations (issue 34's oracles).

(a) Gaussian data N(mu, s^2) has an exact velocity v(x, t) and an affine ODE flow, so the exact average
    velocity u(x, t, h) is known in closed form, and is also computed here by quadrature of v along the
    trajectory (RK4). MeanFlow's target v + h du/dt, taken by the process's own JVP code with a network
    fixed to the exact u, equals the quadrature;
(b) that exact network samples the data distribution exactly in one step of the few-step sampler;
(c) the JVP through the real DiT (span embedding, attention, adaLN) equals a float64 central difference,
    and on the CPU it runs on the math attention path (the fused kernel has no forward-mode rule);
(d) the shortcut's self-consistency target is exactly two Euler jumps of span d, composed;
(e) with no spans drawn and no adaptive weight, MeanFlow's loss is the flow's velocity loss.
"""

import math

import numpy as np
import pytest
import torch

from dit.errors import UserError
from dit.layout import SPAN
from dit.networks.dit import DiT
from dit.processes import FlowMatching, MeanFlow, Shortcut, jvp as fwd, process_from_meta
from dit.sampling import check_sampler, run_sampler
from dit.sampling.guidance import conditional, guided

MU, S = 1.5, 0.4  # data ~ N(MU, S^2) in every coordinate


def mean_std(t):
    """Mean and std of x_t = t x + (1 - t) noise."""
    return t * MU, torch.sqrt(t ** 2 * S ** 2 + (1 - t) ** 2)


def velocity(x, t):
    """E[x - noise | x_t = x], the exact marginal velocity of the Gaussian data."""
    m, sd = mean_std(t)
    return MU + (t * S ** 2 - (1 - t)) / sd ** 2 * (x - m)


def flow_to(x, t, s):
    """x_t carried by the ODE to time s: the standardised coordinate is conserved (affine flow map)."""
    (m, sd), (m2, sd2) = mean_std(t), mean_std(s)
    return m2 + sd2 / sd * (x - m)


def quadrature_u(x, t, h, n=400):
    """1/h * integral_t^(t+h) v dtau along the trajectory, by RK4 on the exact velocity (not flow_to)."""
    dt = h / n
    y, tau = x.clone(), t.clone()
    for _ in range(n):
        k1 = velocity(y, tau)
        k2 = velocity(y + dt / 2 * k1, tau + dt / 2)
        k3 = velocity(y + dt / 2 * k2, tau + dt / 2)
        k4 = velocity(y + dt * k3, tau + dt)
        y, tau = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4), tau + dt
    return torch.where(h > 0, (y - x) / h.clamp_min(1e-300), velocity(x, t))


class ExactAverageVelocity(torch.nn.Module):
    """A 'network' of (x, network time, cond) that outputs the exact u: what MeanFlow's optimum is."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x, t, cond):
        t = (t / self.scale).view(-1, 1, 1, 1).to(x.dtype)
        h = (cond.get(SPAN, torch.zeros(x.shape[0])) / self.scale).view(-1, 1, 1, 1).to(x.dtype)
        small = h.abs() < 1e-12
        jump = (flow_to(x, t, t + h) - x) / torch.where(small, torch.ones_like(h), h)
        return torch.where(small, velocity(x, t), jump)


def test_a_meanflow_target_is_the_exact_average_velocity():
    g = torch.Generator().manual_seed(0)
    x0, noise = MU + S * torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64), torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.2, 0.7], dtype=torch.float64)
    h = torch.tensor([1.0, 0.6, 0.5, 0.25, 0.0, 0.3], dtype=torch.float64)
    x_t = t.view(-1, 1, 1, 1) * x0 + (1 - t.view(-1, 1, 1, 1)) * noise
    want = quadrature_u(x_t, t.view(-1, 1, 1, 1), h.view(-1, 1, 1, 1))
    for scale in (1.0, 1000.0):
        process = MeanFlow(time_scale=scale)
        net = ExactAverageVelocity(scale)
        assert torch.allclose(process.average_velocity(net, x_t, t, h, {}), want, atol=1e-9)  # the closed form
        target = process.target(net, x_t, t, h, velocity(x_t, t.view(-1, 1, 1, 1)), {})
        torch.testing.assert_close(target, want, atol=1e-7, rtol=1e-7)
    # The target moves when the derivative is wrong: a network off by a t-dependent term is not at its optimum.
    off = lambda x, nt, cond: net(x, nt, cond) + 0.1 * (nt / scale).view(-1, 1, 1, 1)  # noqa: E731
    assert (process.target(off, x_t, t, h, velocity(x_t, t.view(-1, 1, 1, 1)), {}) - off(x_t, t * scale, {SPAN: h * scale})).abs().max() > 1e-3


def test_b_the_exact_network_samples_the_data_in_one_step():
    process = MeanFlow()
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(4000, 1, 2, 2, generator=g, dtype=torch.float64)
    out = run_sampler(conditional(ExactAverageVelocity(1.0), {}), process, x_T, "few-step", 1)
    torch.testing.assert_close(out, MU + S * x_T, atol=1e-6, rtol=1e-6)  # the exact transport map, sample by sample
    assert abs(out.mean().item() - MU) < 0.02 and abs(out.std().item() - S) < 0.01
    # Two jumps through t = 1/2 land on the same points (the exact u composes).
    torch.testing.assert_close(run_sampler(conditional(ExactAverageVelocity(1.0), {}), process, x_T, "few-step", 2),
                               MU + S * x_T, atol=1e-6, rtol=1e-6)


def random_dit(dtype=torch.float64):
    torch.manual_seed(0)
    net = DiT(input_size=8, patch_size=2, in_channels=2, hidden_size=32, depth=2, num_heads=2, num_classes=3,
              learn_sigma=False, span_embed=True).to(dtype)
    with torch.no_grad():  # DiT starts with zero gates and output: give every parameter a value
        for p in net.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def test_c_jvp_through_the_dit_equals_a_float64_finite_difference():
    net, process = random_dit(), MeanFlow(time_scale=1000.0)
    g = torch.Generator().manual_seed(2)
    x, v = torch.randn(3, 2, 8, 8, generator=g, dtype=torch.float64), torch.randn(3, 2, 8, 8, generator=g, dtype=torch.float64)
    t, h = torch.tensor([0.2, 0.5, 0.0], dtype=torch.float64), torch.tensor([0.3, 0.25, 1.0], dtype=torch.float64)
    cond = {"y": torch.tensor([0, 2, 3])}
    end = t + h

    def u_of(x_, t_):
        return net(x_, process.network_time(t_).double(), {**cond, SPAN: process.span_input(end - t_).double()})

    # process.network_time / span_input cast to float32: for a float64 check, feed float64 times directly
    process.network_time = lambda tt: tt * 1000.0
    process.span_input = lambda hh: hh * 1000.0
    _, dudt = fwd.jvp(u_of, (x, t), (v, torch.ones_like(t)))
    eps = 1e-7  # time is scaled by 1000: a smaller step keeps the difference's truncation error below 1e-6
    fd = (u_of(x + eps * v, t + eps) - u_of(x - eps * v, t - eps)) / (2 * eps)
    assert dudt.abs().max() > 1e-2  # a derivative that is there to be matched
    torch.testing.assert_close(dudt, fd, atol=1e-6, rtol=1e-5)
    # The target is v + h du/dt with this derivative.
    target = process.target(net, x, t, h, v, cond)
    torch.testing.assert_close(target, v + h.view(-1, 1, 1, 1) * dudt)


def test_c_the_cpu_jvp_runs_on_the_math_attention_path():
    net = random_dit(torch.float32)
    x = torch.randn(2, 2, 8, 8)
    t = torch.tensor([0.3, 0.6])
    fwd._CHOSEN.clear()
    out, _ = fwd.jvp(lambda x_, t_: net(x_, t_, {"y": torch.tensor([0, 1])}), (x, t), (torch.ones_like(x), torch.ones_like(t)))
    assert fwd.attention_path(x) == fwd.MATH  # chosen, not configured: the fused CPU kernel refused forward mode
    torch.testing.assert_close(out, net(x, t, {"y": torch.tensor([0, 1])}), atol=1e-5, rtol=1e-5)  # same function


def test_d_shortcut_target_is_two_euler_jumps_composed():
    net, process = random_dit(), Shortcut(base_steps=8)
    process.network_time = lambda tt: tt.double()
    process.span_input = lambda hh: hh.double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 8, 8, generator=g, dtype=torch.float64)
    t, d = torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64), torch.tensor([0.125, 0.25, 0.25], dtype=torch.float64)
    cond = {"y": torch.tensor([0, 1, 2])}
    target = process.consistency_target(net, x, t, d, cond)
    # Independently: two steps of the few-step rule x <- x + d s(x, t, d) (span 0 at the finest step 1/8).
    asked = torch.where(d == 0.125, torch.zeros_like(d), d)
    y = x
    for k in range(2):
        tk = t + k * d
        y = y + d.view(-1, 1, 1, 1) * net(y, tk, {**cond, SPAN: asked})
    torch.testing.assert_close(target, (y - x) / (2 * d).view(-1, 1, 1, 1), atol=1e-12, rtol=1e-12)
    assert not torch.allclose(process.consistency_target(net, x, t, d * 0 + 0.25, cond), target)  # d matters


def test_e_meanflow_without_spans_is_the_flow_loss():
    net = random_dit(torch.float32).train()
    rng = np.random.default_rng(0)
    mf = MeanFlow(share=0.0, power=0.0)
    draws = [mf.draw(rng, (2, 8, 8)) for _ in range(4)]
    assert all(d["span"] == 0 for d in draws)
    batch = {"x0": torch.randn(4, 2, 8, 8), "cond": {"y": torch.tensor([0, 1, 2, 0]), "drop": torch.zeros(4, dtype=torch.long)},
             "t": torch.tensor([d["t"] for d in draws]), "span": torch.zeros(4), "noise": torch.stack([d["noise"] for d in draws])}
    flow = FlowMatching().loss(net, {k: v for k, v in batch.items() if k != "span"})["loss"]
    torch.testing.assert_close(mf.loss(net, batch)["loss"], flow)
    batch["span"] = torch.full((4,), 0.3)  # a span changes the target (h du/dt) and the input
    assert not torch.allclose(mf.loss(net, batch)["loss"], flow)


def test_draws_follow_the_settings():
    rng = np.random.default_rng(0)
    mf = MeanFlow(share=0.25)
    spans = np.array([mf.draw(rng, (1, 2, 2))["span"] for _ in range(4000)])
    assert abs((spans > 0).mean() - 0.25) < 0.03 and spans.min() >= 0
    sc = Shortcut(base_steps=8, share=0.25)
    draws = [sc.draw(rng, (1, 2, 2)) for _ in range(4000)]
    consistent = [d for d in draws if d["span"] > 0]
    assert abs(len(consistent) / 4000 - 0.25) < 0.03
    assert {d["span"] for d in consistent} == {0.25, 0.5, 1.0}  # 2d on the grid, the finest 1/8 excluded
    assert all(d["t"] / d["span"] == int(d["t"] / d["span"]) and d["t"] + d["span"] <= 1 for d in consistent)


def test_meta_round_trip_and_refusals():
    from dit.processes import Reflow

    for p in (MeanFlow("logit-normal", 0.4, 1.0, 1000.0, 0.5, 0.0, 2.0), Shortcut(1.0, 64, 0.5), Reflow("t", 4, 2.0, 1.0, "ab")):
        back = process_from_meta({"process": p.key, "process_config": p.to_meta()})
        assert back.to_meta() == p.to_meta() and type(back) is type(p)
    with pytest.raises(UserError, match="unknown shortcut settings"):
        process_from_meta({"process": "shortcut", "process_config": {"base_steps": 8, "d": 1}})
    assert MeanFlow(cfg=2.0).guidance_refusal and MeanFlow().guidance_refusal is None
    with pytest.raises(UserError, match="power of two"):
        Shortcut(base_steps=12)
    with pytest.raises(UserError, match="power of two"):
        check_sampler(Shortcut(), "few-step", 3)
    check_sampler(Shortcut(), "few-step", 128)
    with pytest.raises(UserError, match=">= 1"):
        check_sampler(MeanFlow(), "few-step", 0)
    with pytest.raises(UserError, match="unknown sampler"):
        check_sampler(FlowMatching(), "few-step", 1)


def test_guidance_passes_the_span_to_both_halves():
    seen = []

    def model(x, t, cond):
        seen.append({k: v.clone() for k, v in cond.items()})
        return x * 0 + cond["y"].view(-1, 1).float() + cond[SPAN].view(-1, 1)

    den = guided(model, {"y": torch.tensor([1, 2])}, {"y": torch.tensor([5, 5])}, 2.0)
    out = den(torch.zeros(2, 1), torch.zeros(2), {SPAN: torch.tensor([0.5, 0.25])})
    assert seen[0][SPAN].tolist() == [0.5, 0.25, 0.5, 0.25]
    assert out[:, 0].tolist() == [5 + 2 * (1 - 5) + 0.5, 5 + 2 * (2 - 5) + 0.25]
    assert math.isclose(conditional(model, {"y": torch.tensor([1])})(torch.zeros(1, 1), torch.zeros(1), {SPAN: torch.tensor([0.5])}).item(), 1.5)


def test_shortcut_loss_mixes_flow_and_consistency_samples_per_sample():
    """A batch of both kinds: the flow rows' target is data - noise at span 0, the others' the two-jump
    target computed on their rows alone (with their labels)."""
    net, process = random_dit(torch.float32).train(), Shortcut(base_steps=8, share=0.5)
    rng = np.random.default_rng(2)  # 4 of 8 self-consistent
    draws = [process.draw(rng, (2, 8, 8)) for _ in range(8)]
    batch = {"x0": torch.randn(8, 2, 8, 8), "cond": {"y": torch.arange(8) % 3, "drop": torch.zeros(8, dtype=torch.long)},
             **{k: torch.stack([torch.as_tensor(d[k]) for d in draws]) for k in ("t", "span", "noise")}}
    h, t = batch["span"], batch["t"]
    assert 0 < (h > 0).sum() < 8
    x_t = t.view(-1, 1, 1, 1) * batch["x0"] + (1 - t.view(-1, 1, 1, 1)) * batch["noise"]
    want = []
    for i in range(8):
        cond_i = {k: v[i:i + 1] for k, v in batch["cond"].items()}
        if h[i] > 0:
            with torch.no_grad():
                target = process.consistency_target(net, x_t[i:i + 1], t[i:i + 1], h[i:i + 1] / 2, cond_i)
        else:
            target = (batch["x0"] - batch["noise"])[i:i + 1]
        pred = process.average_velocity(net, x_t[i:i + 1], t[i:i + 1], h[i:i + 1], cond_i)
        want.append(((pred - target) ** 2).mean())
    torch.testing.assert_close(process.loss(net, batch)["loss"], torch.stack(want).detach(), atol=1e-5, rtol=1e-5)


def test_reflow_couples_noise_with_the_teachers_ode_solution(monkeypatch):
    """A teacher fixed to the exact Gaussian velocity carries noise z to MU + S z (the exact transport map),
    so reflow's pairs are straight lines; with guidance, towards the label (the null label where dropped),
    as an Euler loop written here over the guided velocity. The teacher is attached as training attaches it
    (dit/training/companion.py), its checkpoint read replaced by this one."""
    from types import SimpleNamespace

    import dit.io.checkpoint as checkpoint
    from dit.networks.conditioning import null_class
    from dit.processes import Reflow
    from dit.training.companion import attach_companion

    class Teacher(torch.nn.Module):
        num_classes, input_shape = 3, (1, 2, 2)

        def forward(self, x, t, cond):  # the exact velocity at the null label (3), shifted for the others
            return velocity(x.double(), t.view(-1, 1, 1, 1).double()) + 0.05 * (3 - cond["y"]).view(-1, 1, 1, 1)

    monkeypatch.setattr(checkpoint, "load_model", lambda spec: (Teacher(), SimpleNamespace(meta={"process": "flow"})))
    monkeypatch.setattr(checkpoint, "weights_files", lambda spec: [])
    z = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(5))
    process = Reflow(teacher="t", teacher_steps=400)
    assert "euler-400, cfg 1" in attach_companion(process, SimpleNamespace(teacher="t"), "cpu", (1, 2, 2))
    dropped = {"y": torch.tensor([0, 1, 2, 1, 0]), "drop": torch.ones(5, dtype=torch.long)}
    torch.testing.assert_close(process._sample(z, dropped).double(), MU + S * z.double(), atol=5e-3, rtol=0)
    guided = Reflow(teacher="t", teacher_steps=20, teacher_cfg=2.0)
    attach_companion(guided, SimpleNamespace(teacher="t"), "cpu", (1, 2, 2))
    cond = {"y": torch.tensor([0, 1, 2, 1, 0]), "drop": torch.tensor([0, 0, 0, 1, 1])}
    null = null_class(Teacher.num_classes)
    y = torch.where(cond["drop"] == 1, null, cond["y"])
    x = z.double()
    for k in range(20):
        t = torch.full((5,), k / 20, dtype=torch.float64)
        v_y, v_null = Teacher()(x, t, {"y": y}), Teacher()(x, t, {"y": torch.full((5,), null)})
        x = x + (v_null + 2.0 * (v_y - v_null)) / 20
    torch.testing.assert_close(guided._sample(z, cond).double(), x, atol=1e-4, rtol=1e-4)
    assert guided.guidance_refusal and process.guidance_refusal is None
    with pytest.raises(UserError, match="pass a model of the same data"):
        attach_companion(Reflow(teacher="t"), SimpleNamespace(teacher="t"), "cpu", (3, 2, 2))
