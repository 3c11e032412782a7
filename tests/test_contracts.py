"""The contracts of dit/networks/base.py and dit/processes/base.py hold for every registered entry, the toy plugin's
(tests/plugins/toy_family.py) included.
Architectures: each declares a role and its capabilities truthfully: a declared capability exists and works on a tiny
instance, an undeclared one is absent (nothing is left for a probe to find) and a run that asks for it is refused in
one line (exit 2) before anything is written. Processes: each declares its members, and its marginal coefficients
match its own forward process (the x_t its loss feeds the network) and the published formulas (DDPM eq. 4; SiT's
paths, data at t = 1; the toy's rectified flow, data at t = 0), so inversion and the flow samplers run on it.
"""

import math, os, subprocess, sys  # noqa: E401

import numpy as np
import pytest
import torch
from conftest import ROOT

import train
import train_classifier
import train_vq
from dit.cli import run_cli
from dit.errors import UserError
from dit.layout import CONTINUOUS, TOKENS
from dit.networks import ARCHITECTURES, CLASSIFIER, Architecture, get_architecture
from dit.networks.base import (PROTOCOLS, ROLES, TOKENIZER, AnalyticCost, Blocks, Capability, CompileBlocks,
                               GradCheckpointing, ImageInit, supports)
from dit.processes import PROCESSES, FlowMatching, GaussianDiffusion, MeanFlow, Process, Reflow, Shortcut, VQDiffusion
from dit.processes.base import DEFAULT_SAMPLING_STEPS
from dit.processes.paths import coefficients
from dit.registry import load_plugins
from dit.sampling.flow import euler
from dit.segmentation import inversion
from dit.training import state as train_state
from dit.training.classifier_objective import NoisyClassification

PLUGIN = ROOT / "tests" / "plugins" / "toy_family.py"
load_plugins(str(PLUGIN))  # "token-mlp" and "toy-flow" join the registries: they keep the same contracts
from dit_plugin_toy_family import ToyFlow  # noqa: E402 - registered by the line above

CAPABILITIES = (GradCheckpointing, CompileBlocks, ImageInit, Blocks)
K = 8  # codebook size of the token networks and process

# One tiny config per registered architecture, through the registry's own config_from_dict and build.
TINY = {
    "dit": dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=3),
    "video-dit": dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=3,
                      frames=2),
    "diffussm": dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, state_size=4, num_classes=3),
    "noisy-classifier": dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                             num_classes=3),
    "token-dit": dict(input_size=4, codebook_size=K, hidden_size=32, depth=2, num_heads=2, num_classes=3),
    "vq-tokenizer": dict(image_size=16, block_out_channels=(8, 8), latent_channels=4, codebook_dim=3, codebook_size=K,
                         norm_num_groups=4, mid_attention=False),
    "token-mlp": dict(in_channels=4, input_size=8, hidden=16, num_classes=3),
    "text-dit": dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, vocabulary="a b"),
}


def tiny(key: str) -> torch.nn.Module:
    arch = get_architecture(key)
    torch.manual_seed(0)
    return arch.build(arch.config_from_dict(TINY[key]))


def example(key: str, net, batch: int = 2):
    """(x, t, cond) a network of this architecture takes: ids for token data, else N(0, 1) values."""
    g = torch.Generator().manual_seed(1)
    if get_architecture(key).data_kind == TOKENS:
        x = torch.randint(0, K + 1, (batch, *net.input_shape), generator=g)
    else:
        x = torch.randn(batch, *net.input_shape, generator=g)
    return x, torch.tensor([3.0, 700.0][:batch]), {"y": torch.arange(batch) % 3, "drop": torch.zeros(batch, dtype=torch.long)}


def test_every_architecture_has_a_tiny_instance_here():
    assert set(TINY) == set(ARCHITECTURES.keys()), "add a tiny config for the new architecture"


@pytest.mark.parametrize("key", sorted(TINY))
def test_architecture_keeps_the_contract_of_its_role(key):
    arch, net = get_architecture(key), tiny(key)
    assert arch.role in ROLES
    assert isinstance(net, PROTOCOLS[arch.role]), f"{key} does not keep the {arch.role} protocol"
    assert isinstance(net.config.to_dict(), dict)
    x, t, cond = example(key, net)
    with torch.no_grad():
        if arch.role == TOKENIZER:
            ids = net.encode(x)
            assert ids.dtype == torch.long and ids.shape[0] == 2
            assert net.decode(ids).shape == x.shape
            with pytest.raises(UserError, match="not by a diffusion process"):  # it takes no time
                net(x, t, cond)
        elif arch.role == CLASSIFIER:
            assert net(x, t, None).shape == (2, net.num_classes)
        else:
            out = net(x, t, cond)
            assert out.shape[0] == 2 and torch.isfinite(out).all()
            assert 0 <= net.null_class <= net.num_classes


def test_roles_are_declared_where_the_scripts_need_them():
    roles = {k: ARCHITECTURES.get(k).role for k in ARCHITECTURES.keys()}
    assert roles.pop("noisy-classifier") == CLASSIFIER and roles.pop("vq-tokenizer") == TOKENIZER
    assert set(roles.values()) == {"generator"}
    with pytest.raises(ValueError, match="role must be one of"):
        Architecture(key="x", config_from_dict=dict, build=dict, config_for_run=dict, role="critic")


@pytest.mark.parametrize("key", sorted(TINY))
def test_capabilities_are_declared_truthfully(key, monkeypatch):
    """Declared -> implemented (not the mixin's stub) and working; undeclared -> absent altogether,
    so the declarations agree with what the old hasattr probes found."""
    net = tiny(key)
    for cap in CAPABILITIES:
        declared = supports(net, cap)
        assert hasattr(net, cap.provides) == declared, f"{key}: {cap.__name__} declared {declared}"
        if declared and cap is not Blocks:
            assert getattr(type(net), cap.provides) is not getattr(cap, cap.provides), f"{key}: {cap.provides} is the stub"
    if supports(net, Blocks):
        assert isinstance(net.blocks, torch.nn.ModuleList) and len(net.blocks) == TINY[key]["depth"]
    if supports(net, GradCheckpointing):  # the same output and gradients, recomputed
        x, t, cond = example(key, net)
        results = []
        for enabled in (False, True):
            net.set_grad_checkpointing(enabled)
            net.train()
            net.zero_grad()
            out = net(x, t, cond)
            out.float().square().mean().backward()
            results.append((out.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]))
        torch.testing.assert_close(results[0][0], results[1][0])
        for a, b in zip(results[0][1], results[1][1]):
            torch.testing.assert_close(a, b)
    if supports(net, CompileBlocks):  # the wiring; the real compiler runs in tests/test_fast_paths.py (a minute on CPU)
        compiled = []
        monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(self))
        assert net.compile_blocks(backward=True) is True and net.compile_error is None
        assert compiled == list(net.blocks)
    if supports(net, ImageInit):
        keys = net.image_state_dict_keys()
        assert keys and set(keys) <= set(net.state_dict()) and net.image_arch in ARCHITECTURES


def test_analytic_cost_modules_keep_their_shape_and_count_themselves():
    from dit.analysis.flops import forward_cost, s4d_macs
    from dit.networks.s4d import S4D
    layer = S4D(4, state_size=4)
    assert supports(layer, AnalyticCost)
    u = torch.randn(2, 16, 4)
    assert layer(u).shape == u.shape  # the FLOP counter may stand the identity in for it
    assert layer.analytic_macs((2, 16, 4)) == dict(zip(("kernel", "fft"), s4d_macs(16, 4, 4, True, 2)))
    for key in ("dit", "diffussm"):
        net = tiny(key)
        hooks = [m for m in net.modules() if supports(m, AnalyticCost)]
        assert (forward_cost(net).analytic > 0) == bool(hooks) == (key == "diffussm")


def toy_argv(tmp_path, *extra):
    return ["cpu-demo", "--arch", "token-mlp", "--process", "toy-flow", "--data", "shapes", "--image-size", "8",
            "--vae", "none", "--shapes-images", "16", "--global-batch-size", "4", "--max-steps", "2",
            "--sample-sampler", "euler", "--sample-steps", "2", "--results-dir", str(tmp_path), "--run-name", "toy",
            "--no-progress", *extra]


def test_an_undeclared_capability_is_refused_in_one_line_through_train_py(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIT_PLUGINS", str(PLUGIN))
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), *toy_argv(tmp_path, "--grad-checkpointing")],
                       capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0] == ("error: --grad-checkpointing: this TokenMLP network has no set_grad_checkpointing(); "
                        "run it without --grad-checkpointing")
    capsys.readouterr()
    assert run_cli(train.main, toy_argv(tmp_path, "--compile")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --compile: this TokenMLP network has no compile_blocks(); run it without --compile"]
    assert not (tmp_path / "toy").exists()  # refused before the run directory was written


def test_the_scripts_choose_by_role_not_by_key(monkeypatch):
    """A classifier the library never named is refused by train.py as noisy-classifier is."""
    base = get_architecture("noisy-classifier")
    monkeypatch.setitem(ARCHITECTURES._entries, "toy-classifier",
                        Architecture("toy-classifier", base.config_from_dict, base.build, base.config_for_run,
                                     role=CLASSIFIER))
    with pytest.raises(UserError, match=r"^--arch toy-classifier trains a classifier for guidance: use train_classifier.py$"):
        train.parse_args(["--arch", "toy-classifier"])
    with pytest.raises(UserError, match=r"^train_classifier.py trains --arch noisy-classifier or toy-classifier, got "
                                        r"--arch dit; train generators with train.py$"):
        train_classifier.parse_args(["--arch", "dit", "--model", "DiT-S/8"])
    with pytest.raises(UserError, match=r"^train_vq.py trains --arch vq-tokenizer, got --arch dit; "):
        train_vq.parse_args(["--arch", "dit", "--model", "DiT-S/8", "--vae", "none", "--process", "gaussian",
                             "--latent-norm", "scalar"])


# --- processes ----------------------------------------------------------------------------------------
def _ddpm_alphabar(name: str, T: int) -> np.ndarray:
    """DDPM's linear betas (1e-4..0.02 over 1000 steps) and Improved DDPM's cosine (eq. 17), in numpy."""
    if name == "linear":
        betas = np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T, dtype=np.float64)
    else:
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)])
    return np.cumprod(1 - betas)


def _sit(path: str, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SiT's paths (Table 1), data at t = 1."""
    if path == "linear":
        return t, 1 - t
    if path == "gvp":
        return np.sin(np.pi * t / 2), np.cos(np.pi * t / 2)
    alpha = np.exp(-0.25 * (1 - t) ** 2 * (20 - 0.1) - 0.5 * (1 - t) * 0.1)
    return alpha, np.sqrt(1 - alpha**2)


# key -> (instances, the published (alpha, sigma) at t, the loss's target for (x0, eps, t))
def _flow_target(p, x0, eps, t):
    _, d_alpha, _, d_sigma = (c.view(-1, *[1] * (x0.dim() - 1)).to(x0.dtype) for c in coefficients(p.path, t.double()))
    return d_alpha * x0 + d_sigma * eps


PROCESS_CASES = {
    "gaussian": ([GaussianDiffusion.from_schedule("linear", 1000), GaussianDiffusion.from_schedule("cosine", 100)],
                 lambda p, t: (np.sqrt(_ddpm_alphabar(p.schedule, p.num_timesteps)[t]),
                               np.sqrt(1 - _ddpm_alphabar(p.schedule, p.num_timesteps)[t])),
                 lambda p, x0, eps, t: eps),
    "flow": ([FlowMatching(), FlowMatching("gvp"), FlowMatching("vp")], lambda p, t: _sit(p.path, t), _flow_target),
    "toy-flow": ([ToyFlow()], lambda p, t: (1 - t, t), lambda p, x0, eps, t: eps - x0),
    # Constant-output networks: du/dt = 0, their own consistency targets (mixed batches: test_few_step.py).
    "meanflow": ([MeanFlow(), MeanFlow("logit-normal", 0.4, share=1.0)], lambda p, t: _sit("linear", t), _flow_target),
    "shortcut": ([Shortcut(share=0.0), Shortcut(base_steps=8, share=1.0)], lambda p, t: _sit("linear", t), _flow_target),
    "reflow": ([Reflow()], lambda p, t: _sit("linear", t), None),  # its loss reads a teacher: test_few_step.py
    "vq-diffusion": ([VQDiffusion(K, 10)], None, None),
}


def test_every_process_has_cases_here():
    assert set(PROCESS_CASES) == set(PROCESSES.keys()), "add the new process's cases"


def _cases():
    return [(key, i) for key, (procs, _, _) in sorted(PROCESS_CASES.items()) for i in range(len(procs))]


def _batch(p, x0: torch.Tensor, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    draws = [p.draw(rng, x0.shape[1:]) for _ in range(x0.shape[0])]
    batch = {k: torch.stack([torch.as_tensor(d[k]) for d in draws]) for k in draws[0]}
    return {**batch, "x0": x0, "cond": {"y": torch.zeros(x0.shape[0], dtype=torch.long)}}


@pytest.mark.parametrize("key,i", _cases())
def test_process_declares_its_members(key, i):
    p = PROCESS_CASES[key][0][i]
    assert type(p).data_kind in (CONTINUOUS, TOKENS)  # on the class: training reads it before building one
    assert (p.codebook_size is None) == (p.data_kind == CONTINUOUS)
    data_end, noise_end = p.time_range
    assert data_end != noise_end and isinstance(p.discrete_time, bool)
    if p.discrete_time:
        assert all(isinstance(v, int) for v in p.time_range)
    steps = p.default_sampling_steps
    expected = {"vq-diffusion": getattr(p, "T", None), "flow": 50, "meanflow": 1, "shortcut": 1, "reflow": 1}  # else DiT's
    assert type(steps) is int and steps == expected.get(key, DEFAULT_SAMPLING_STEPS)
    # time direction: the process's own noise level rises from the data end to the noise end
    if type(p).noise_level is not Process.noise_level:
        ends = p.noise_level(torch.tensor([data_end, noise_end]))
        assert ends[0] < ends[1]
    # outputs: every name declared converts, an undeclared one does not
    if p.data_kind == TOKENS:
        x_t, out = torch.randint(0, K + 1, (2, 4, 4)), torch.randn(2, K, 4, 4)
    else:
        x_t, out = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([noise_end, data_end]) if p.discrete_time else torch.tensor([0.3, 0.7])
    assert p.outputs
    for name in p.outputs:
        assert p.convert(out, x_t, t, name).shape[0] == 2
    with pytest.raises(ValueError):
        p.convert(out, x_t, t, "nonsense")


@pytest.mark.parametrize("key,i", [c for c in _cases() if c[0] not in ("vq-diffusion", "reflow")])
def test_marginal_matches_the_process_own_noising_and_the_published_formulas(key, i):
    procs, published, target = PROCESS_CASES[key]
    p = procs[i]
    assert p.inversion_refusal is None
    x0 = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    batch = _batch(p, x0)
    seen = []

    def network(x_t, network_t, cond):  # answers what the loss trains it towards, and records x_t
        seen.append(x_t)
        return target(p, x0, batch["noise"], batch["t"])

    losses = p.loss(network, batch)
    assert losses["loss"].abs().max() < 1e-5  # the target above is the loss's: the check below reads its x_t
    alpha, sigma = p.marginal(batch["t"])
    view = (-1, 1, 1, 1)
    torch.testing.assert_close(seen[0].double(), alpha.view(view) * x0.double() + sigma.view(view) * batch["noise"].double(),
                               atol=1e-5, rtol=1e-5)
    # the published formulas (DDPM eq. 4 / SiT Table 1 / rectified flow), t over the whole range
    lo, hi = sorted(p.time_range)
    t = torch.arange(lo, hi + 1) if p.discrete_time else torch.linspace(lo + 1e-3, hi - 1e-3, 50, dtype=torch.float64)
    a, s = p.marginal(t)
    pa, ps = published(p, t.numpy())
    np.testing.assert_allclose(a.numpy(), pa, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s.numpy(), ps, rtol=1e-9, atol=1e-12)
    # ends: the data at the data end, (nearly) pure noise at the noise end
    (a0, s0), (a1, s1) = (p.marginal(torch.tensor([v], dtype=torch.long if p.discrete_time else torch.float64))
                          for v in p.time_range)
    assert abs(float(a0) - 1) < 1e-3 and float(s0) < 0.03 and float(a1) < 0.01 and abs(float(s1) - 1) < 1e-3
    if not p.discrete_time:  # the rates are the marginal's derivatives
        h, tm = 1e-6, torch.tensor([0.3, 0.5, 0.8], dtype=torch.float64)
        (ap, sp), (am, sm) = p.marginal(tm + h), p.marginal(tm - h)
        d_alpha, d_sigma = p.marginal_rates(tm)
        torch.testing.assert_close(d_alpha, (ap - am) / (2 * h), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(d_sigma, (sp - sm) / (2 * h), atol=1e-6, rtol=1e-6)
    else:
        with pytest.raises(UserError, match="declares no time derivatives"):
            p.marginal_rates(t[:1])


@pytest.mark.parametrize("key,i", [c for c in _cases() if c[0] not in ("vq-diffusion", "reflow")])
def test_a_deterministic_inversion_step_follows_the_marginal(key, i):
    """From the exact noise estimate (convert(..., "eps") of the loss's target), segmentation's DDIM
    step lands on alpha' x0 + sigma' eps at the next level, in either direction."""
    procs, _, target = PROCESS_CASES[key]
    p = procs[i]
    data, noise = p.time_range
    src_t, dst_t = [data + (noise - data) * f for f in (0.3, 0.6)]
    src, dst = inversion.level(p, src_t), inversion.level(p, dst_t)
    x0, eps = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)
    tt = torch.full((2,), src.t, dtype=torch.long if p.discrete_time else torch.float64)
    x = src.a * x0 + src.s * eps
    est = p.convert(target(p, x0, eps, tt).double(), x, tt, "eps")
    torch.testing.assert_close(est, eps)
    torch.testing.assert_close(inversion.step(x, est, src, dst), dst.a * x0 + dst.s * eps)
    inversion.check_time(p, src.t, "--t-m")


def test_a_process_without_a_marginal_says_so_in_one_line():
    p = VQDiffusion(K, 10)
    assert p.inversion_refusal and "\n" not in p.inversion_refusal
    with pytest.raises(UserError, match=r"^the vq-diffusion process cannot be inverted: its x_t are token ids"):
        p.marginal(torch.tensor([1]))
    with pytest.raises(UserError, match="segmentation inverts the image deterministically"):
        inversion.check_time(p, 5, "--t-m")
    # its time range, read off its own schedule: t = 0 keeps x0, t = T masks every token
    abar, _, gbar = p.schedule.cumulative(torch.tensor(p.time_range))
    assert float(abar[0]) == 1 and float(gbar[1]) > 0.99
    assert (p.prior(None, 2, (4, 4), "cpu") == p.mask_id).all()


def test_state_is_declared_and_a_checkpoint_without_it_is_refused(tmp_path):
    vq = VQDiffusion(K, 10, time_sampling="importance")
    assert vq.has_state and set(vq.state_dict()) == {"history", "count"}
    toy = ToyFlow()  # a plugin's process with state of its own
    assert toy.has_state and set(toy.state_dict()) == {"calls"}
    stateless = [GaussianDiffusion.from_schedule("linear", 100), FlowMatching(), NoisyClassification(FlowMatching())]
    for objective in stateless:
        assert not objective.has_state and objective.state_dict() == {}
        objective.load_state_dict({})
        with pytest.raises(ValueError, match="keeps no state"):
            objective.load_state_dict({"history": torch.zeros(1)})
        train_state._save_objective(objective, tmp_path, 0)
        train_state._load_objective(objective, tmp_path, 0)  # nothing to restore: no file needed
    assert not list(tmp_path.iterdir())
    with pytest.raises(UserError, match=r"holds no objective_state_0.safetensors \(the state of the vq-diffusion objective\)"):
        train_state._load_objective(vq, tmp_path, 0)
    vq.history += 3
    train_state._save_objective(vq, tmp_path, 0)
    again = VQDiffusion(K, 10, time_sampling="importance")
    train_state._load_objective(again, tmp_path, 1)  # another process count: the main process's file
    assert torch.equal(again.history, vq.history)


def test_flow_samplers_need_a_velocity_in_continuous_time_not_a_class():
    """The toy process (data at t = 0) is sampled by flow's Euler sampler in its own direction: with the
    exact velocity of a point mass at c, straight paths end exactly on c."""
    c = torch.full((1, 4, 2, 2), 0.5)
    for p in (ToyFlow(), FlowMatching()):
        euler.check(p, 4)
        data, _ = p.time_range

        def denoiser(x, network_t, p=p):
            t = (network_t / 1000 if isinstance(p, ToyFlow) else network_t).view(-1, 1, 1, 1).double()
            if isinstance(p, ToyFlow):  # x = (1 - t) c + t eps: v = eps - c
                return ((x - (1 - t) * c) / t - c).float()
            return (c - (x - t * c) / (1 - t)).float()  # x = t c + (1 - t) eps: v = c - eps

        out = euler(denoiser, p, torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0)), 4)
        torch.testing.assert_close(out, c)
    for p in (GaussianDiffusion.from_schedule("linear", 100), VQDiffusion(K, 10)):
        with pytest.raises(UserError, match="integrates over continuous time"):
            euler.check(p, 4)


def test_capability_base_names_what_it_provides():
    assert all(issubclass(c, Capability) and c.provides for c in (*CAPABILITIES, AnalyticCost))
