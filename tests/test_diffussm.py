"""DiffuSSM and its S4D layer against their definitions: the FFT convolution against the
step-by-step recurrence, the bidirectional convention against the other one, the S4D-Lin init,
precision under autocast, adaLN-Zero, the parameter formula, the registry entry.
"""

from types import SimpleNamespace

import pytest
import torch

from dit.errors import UserError
from dit.networks import get_architecture
from dit.networks import s4d
from dit.networks.diffussm import (MODEL_NAMES, DiffuSSM, DiffuSSMBlock, DiffuSSMConfig, config_for_run, describe,
                                   params_formula, preset_config)
from dit.networks.dit import DiT
from dit.networks.s4d import S4D, fft_conv, reference

CPU = dict(input_size=16, in_channels=3, num_classes=10, learn_sigma=True)  # the CPU demo's data
TINY = DiffuSSMConfig(input_size=8, patch_size=1, in_channels=3, hidden_size=32, depth=2, state_size=16,
                      num_classes=10)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def perturbed(model, seed=0, std=0.05):
    """Random values added to every Linear, so the zero-initialised parts (adaLN, final layer) compute
    something; the S4D parameters keep their S4D-Lin values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                for p in m.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def inputs(cfg, n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    return x, torch.tensor([10.0, 900.0][:n]), torch.tensor([3, cfg.num_classes - 1][:n])


# --- S4D: the convolution is the recurrence -------------------------------------------------------


@pytest.mark.parametrize("length", [64, 196])  # a power of two and not
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_convolution_equals_the_recurrence(length, bidirectional):
    torch.manual_seed(0)
    layer = S4D(8, state_size=16, bidirectional=bidirectional)
    u = torch.randn(2, length, 8, dtype=torch.float64)
    exact = reference(layer, u)  # float64 recurrence
    skip = u * layer.skip.double()
    assert rel(layer(u), exact) <= 1e-12
    assert rel(layer(u) - skip, exact - skip) <= 1e-12  # the long-range part alone, without D u
    y32 = layer(u.float())
    assert y32.dtype == torch.float32
    assert rel(y32 - skip, exact - skip) <= 1e-5


def test_the_bidirectional_convention_is_causal_plus_strictly_anticausal():
    """y[n] = sum_{m<=n} Kf[n-m] u[m] + sum_{m>n} Kb[m-n-1] u[m] + D u[n], by a direct double loop;
    "flip, causal conv, flip" (u[n] counted twice) is a different function."""
    torch.manual_seed(0)
    layer = S4D(4, state_size=16)
    L = 11
    u = torch.randn(1, L, 4, dtype=torch.float64)
    kf, kb = layer.forward_kernel(L, torch.float64), layer.backward_kernel(L, torch.float64)  # (H, L)
    direct = torch.stack([sum(kf[:, n - m] * u[0, m] for m in range(n + 1))
                          + sum((kb[:, m - n - 1] * u[0, m] for m in range(n + 1, L)), torch.zeros(4, dtype=u.dtype))
                          + layer.skip.double() * u[0, n] for n in range(L)])
    assert rel(layer(u)[0], direct) <= 1e-12

    u = torch.randn(2, 196, 4, dtype=torch.float64)
    skip = u * layer.skip.double()
    kf, kb = layer.forward_kernel(196, torch.float64), layer.backward_kernel(196, torch.float64)
    other = fft_conv(u, kf) + fft_conv(u.flip(1), kb).flip(1) + skip
    assert rel(other, layer(u)) > 0.3
    assert rel(other - skip, layer(u) - skip) > 0.3


def test_the_default_kernel_decays():
    """S4D-Lin: Re lambda = -1/2 and Delta in [1e-3, 1e-1], so over 1024 steps most channels forget:
    the kernel's tail is a few percent of its head (measured 0.02 over 256 channels)."""
    torch.manual_seed(0)
    layer = S4D(256, bidirectional=False)
    kernel = layer.kernel(1024).abs().detach()  # (H, 1024)
    assert kernel[:, -16:].mean() < 0.1 * kernel[:, :16].mean()
    fastest = kernel[layer.forward_kernel.log_dt.argmax()]  # Delta near 0.1: |dA|^l = exp(-0.05 l)
    assert fastest[-16:].max() < 1e-6 * fastest[:16].max()


def test_gradients_reach_delta_lambda_and_c():
    torch.manual_seed(0)
    layer = S4D(8, state_size=16)
    layer(torch.randn(2, 64, 8)).square().sum().backward()
    for kernel in (layer.forward_kernel, layer.backward_kernel):
        for name in ("log_dt", "log_neg_real", "imag", "C"):
            grad = getattr(kernel, name).grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert layer.skip.grad.abs().sum() > 0


def test_the_kernel_is_complex64_for_float32_input():
    layer = S4D(4, state_size=16)
    assert all(t.dtype == torch.complex64 for t in layer.forward_kernel.discrete(torch.float32))
    assert all(t.dtype == torch.complex128 for t in layer.forward_kernel.discrete(torch.float64))
    assert layer.kernel(32, torch.float32).dtype == torch.float32
    assert layer(torch.randn(1, 32, 4)).dtype == torch.float32


# --- the block and the network --------------------------------------------------------------------


def test_an_odd_sequence_is_refused_with_the_fix():
    block = DiffuSSMBlock(16, state_size=8, hourglass=2)
    with pytest.raises(UserError, match="multiple of 2.*even"):
        block(torch.randn(1, 25, 16), torch.randn(1, 16))
    with pytest.raises(UserError, match="5x5 token grid has 25 tokens.*even"):
        DiffuSSMConfig(input_size=5, patch_size=1)
    DiffuSSMConfig(input_size=5, patch_size=1, hourglass=1, hidden_size=32)  # no folding: any length
    assert block(torch.randn(1, 24, 16), torch.randn(1, 16)).shape == (1, 24, 16)


def test_the_block_is_the_identity_at_init_and_not_after():
    torch.manual_seed(0)
    block = DiffuSSMBlock(32, state_size=16)
    x, c = torch.randn(2, 64, 32), torch.randn(2, 32)
    assert torch.equal(block(x, c), x)
    perturbed(block)
    assert rel(block(x, c), x) > 1e-3


def test_the_untrained_network_outputs_exactly_zero():
    torch.manual_seed(0)
    model = DiffuSSM(preset_config("DiffuSSM-CPU/1", **CPU))
    x, t, y = inputs(model.config)
    out = model(x, t, {"y": y, "drop": torch.tensor([0, 1])})
    assert out.shape == (2, 6, 16, 16) and model.input_shape == (3, 16, 16)
    assert torch.count_nonzero(out) == 0
    for block in model.blocks:
        h = torch.randn(2, 256, 120)
        assert torch.equal(block(h, torch.randn(2, 120)), h)
    assert model.null_class == 10 and model.config.to_dict()["hidden_size"] == 120


def test_the_network_conditions_on_t_and_y():
    torch.manual_seed(0)
    model = perturbed(DiffuSSM(TINY))
    x, t, y = inputs(TINY)
    out = model(x, t, y)
    assert out.shape == (2, 6, 8, 8) and torch.isfinite(out).all()
    assert rel(model(x, t + 100, y), out) > 1e-3
    assert rel(model(x, t, {"y": y, "drop": torch.ones(2, dtype=torch.long)}), out) > 1e-3
    assert torch.equal(model(x, t, {"y": y}), out)  # a bare label tensor is the same cond
    assert DiffuSSM(DiffuSSMConfig(**{**TINY.to_dict(), "learn_sigma": False}))(x, t, y).shape == (2, 3, 8, 8)


def test_bf16_autocast_runs_the_fft_in_float32(monkeypatch):
    seen = []

    def recording(u, k):
        seen.append((u.dtype, k.dtype, torch.is_autocast_enabled("cpu")))
        return fft_conv(u, k)

    monkeypatch.setattr(s4d, "fft_conv", recording)
    torch.manual_seed(0)
    model = perturbed(DiffuSSM(TINY))
    x, t, y = inputs(TINY)
    expected = model(x, t, y)
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y)
    assert len(seen) == TINY.depth and all(s == (torch.float32, torch.float32, False) for s in seen)
    assert torch.isfinite(out).all() and rel(out, expected) < 0.05  # measured 0.004
    layer, u = S4D(8, state_size=16), torch.randn(2, 64, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = layer(u.bfloat16())  # what the blocks' bf16 Linears hand it
    assert v.dtype == torch.bfloat16 and seen[-1] == (torch.float32, torch.float32, False)
    assert rel(v, layer(u)) < 0.02

    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, t, y).float().square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.blocks[0].ssm.forward_kernel.log_dt.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = perturbed(DiffuSSM(TINY)).train()
    x, t, y = inputs(TINY)
    drop = {"y": y, "drop": torch.zeros(2, dtype=torch.long)}  # no random label dropout
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enabled)
        model(x, t, drop).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_per_seed_determinism():
    x, t, y = inputs(TINY)
    built = []
    for _ in range(2):
        torch.manual_seed(7)
        model = DiffuSSM(TINY)
        built.append((model.state_dict(), perturbed(model)(x, t, y)))
    (sd_a, out_a), (sd_b, out_b) = built
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert torch.equal(out_a, out_b)


# --- sizes, config, registry ----------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [
    TINY,
    DiffuSSMConfig(**{**TINY.to_dict(), "patch_size": 2, "learn_sigma": False, "hourglass": 4, "expansion": 2.0}),
    DiffuSSMConfig(**{**TINY.to_dict(), "hourglass": 1, "num_classes": 1000, "state_size": 64}),
    preset_config("DiffuSSM-CPU/1", **CPU),
    preset_config("DiffuSSM-CPU/2", **CPU),
])
def test_the_parameter_formula_counts_the_module(cfg):
    assert params_formula(cfg) == sum(p.numel() for p in DiffuSSM(cfg).parameters())


def test_the_cpu_preset_matches_the_cpu_demo_dit():
    dit = DiT(input_size=16, patch_size=2, in_channels=3, hidden_size=128, depth=4, num_heads=2, num_classes=10,
              learn_sigma=True)
    dit_params = sum(p.numel() for p in dit.parameters())  # 1,284,120
    ours = params_formula(preset_config("DiffuSSM-CPU/1", **CPU))
    assert abs(ours / dit_params - 1) <= 0.10, (ours, dit_params)
    xl = params_formula(preset_config("DiffuSSM-XL/1", input_size=32, in_channels=4, num_classes=1000))
    assert 600e6 < xl < 750e6  # DiT-XL/2's scale (675M)


def run(**overrides):
    fields = dict(model="DiffuSSM-CPU/1", hidden_size=None, depth=None, num_heads=None, learn_sigma=True,
                  class_dropout_prob=0.1)
    return SimpleNamespace(**{**fields, **overrides})


def test_config_for_run_and_the_registry_entry():
    arch = get_architecture("diffussm")
    data = dict(in_channels=3, input_size=16, num_classes=10, image_size=16, downsample=1)
    cfg = arch.config_for_run(run(), data)
    assert cfg == preset_config("DiffuSSM-CPU/1", **CPU)
    assert arch.config_from_dict(cfg.to_dict()) == cfg
    assert isinstance(arch.build(cfg), DiffuSSM)
    assert describe(cfg).startswith("DiffuSSM-CPU/1 ")
    wide = config_for_run(run(model="DiffuSSM-S/2", hidden_size=64, depth=2), data)
    assert (wide.hidden_size, wide.depth, wide.patch_size) == (64, 2, 2)
    arch.check_run(run())
    with pytest.raises(UserError, match="DiffuSSM-CPU/1"):
        arch.check_run(run(model="DiT-S/2"))
    # DiT's block options are the dit (and video-dit) architecture's flags: refused by the training config
    from dit.training.config import from_preset

    assert from_preset("cpu-demo", arch="diffussm").model == "DiffuSSM-CPU/1"  # its cpu_defaults over the CPU demo
    for flag, value in (("mlp", "swiglu"), ("conditioning", "in-context")):
        with pytest.raises(UserError, match=f"^--{flag} is a setting of the dit, text-dit and video-dit architectures: "
                                            "add --arch dit or --arch text-dit or --arch video-dit$"):
            from_preset("cpu-demo", arch="diffussm", **{flag: value})
    with pytest.raises(UserError, match="multiple of 2"):
        config_for_run(run(), {**data, "image_size": 15, "input_size": 15})
    with pytest.raises(UserError, match="unknown DiffuSSM config keys"):
        DiffuSSMConfig.from_dict({"num_heads": 2})
    assert "DiffuSSM-XL/1" in MODEL_NAMES and "DiffuSSM-XL/2" in MODEL_NAMES


def test_an_export_loads_back_and_computes_the_same(tmp_path):
    from dit.io.checkpoint import load_model, save_export

    torch.manual_seed(0)
    model = perturbed(DiffuSSM(TINY))
    save_export(tmp_path / "dssm.safetensors", model, arch="diffussm")
    loaded, ckpt = load_model(str(tmp_path / "dssm.safetensors"))
    assert ckpt.arch == "diffussm" and loaded.config == TINY
    x, t, y = inputs(TINY)
    assert torch.equal(loaded(x, t, y), model(x, t, y))


# --- through train.py: exact resume, per-seed determinism, bf16 ------------------------------------

# test_train.py's TINY (16 px shapes, batch 8, pinned optimisation) with a DiffuSSM at width 16, depth
# 1 and patch 1 (256 tokens); TINY's --num-heads 2 is ignored by DiffuSSM (no attention).
SSM_FLAGS = ["--arch", "diffussm", "--model", "DiffuSSM-CPU/1", "--hidden-size", 16, "--depth", 1]


def test_train_py_resumes_exactly_and_is_deterministic_per_seed(tmp_path):
    import json

    from safetensors.torch import load_file
    from test_train import check_exact_resume, metrics, train_run

    full = check_exact_resume(tmp_path, *SSM_FLAGS)  # 4 steps vs cut at 2 and resumed: same weights, EMA, losses
    assert json.loads((full / "config.json").read_text())["arch"] == "diffussm"
    again = train_run(tmp_path, *SSM_FLAGS, "--max-steps", 4, "--ckpt-every", 2, "--keep-last", 0, name="again")
    other = train_run(tmp_path, *SSM_FLAGS, "--max-steps", 4, "--ckpt-every", 2, "--keep-last", 0, "--seed", 1,
                      name="other")
    weights = {run: load_file(str(run / "checkpoints" / "step_000000004" / "model.safetensors"))
               for run in (full, again, other)}
    key = "blocks.0.ssm.forward_kernel.C"
    assert key in weights[full]
    assert all(torch.equal(weights[full][k], weights[again][k]) for k in weights[full])  # the same seed
    assert [m["loss"] for m in metrics(again)] == [m["loss"] for m in metrics(full)]
    assert not torch.equal(weights[full][key], weights[other][key])  # another seed


_BF16 = """
import sys
import torch
import train
from dit.cli import run_cli
from dit.networks.s4d import S4D

seen, forward = set(), S4D.forward

def recording(self, u):
    seen.add((str(u.dtype), torch.is_autocast_enabled("cpu")))
    return forward(self, u)

S4D.forward = recording
code = run_cli(train.main, sys.argv[1:])
print("SEEN", sorted(seen))
sys.exit(code)
"""


def test_train_py_bf16_runs_the_blocks_in_bf16_and_logs_a_finite_loss(tmp_path):
    """--mixed-precision bf16 on the CPU: accelerate's autocast hands the S4D layers bf16 inputs (the
    blocks' Linears ran in bf16; the layer itself computes in float32, see
    test_bf16_autocast_runs_the_fft_in_float32) and the logged losses are finite. A subprocess:
    accelerate's precision is fixed once per process."""
    import math
    import subprocess
    import sys

    from test_train import ENV, metrics, tiny_argv

    argv = tiny_argv(tmp_path, "bf16", *SSM_FLAGS, "--max-steps", 2, "--mixed-precision", "bf16")
    res = subprocess.run([sys.executable, "-c", _BF16, *argv], env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    log = metrics(tmp_path / "bf16")
    assert [m["step"] for m in log] == [1, 2] and all(math.isfinite(m["loss"]) for m in log)
    assert "('torch.bfloat16', True)" in res.stdout.splitlines()[-1]  # the training steps ran under bf16 autocast


def test_two_processes_train_diffussm_like_one(tmp_path):
    """`accelerate launch train.py --arch diffussm` (torchrun, 2 processes, gloo): the replicas agree with
    each other and with one process on the same global batch."""
    from safetensors.torch import load_file
    from conftest import free_port
    from test_train import same_tensors, torchrun, train_run

    one = train_run(tmp_path, *SSM_FLAGS, "--max-steps", 2, name="one")
    out = torchrun(tmp_path, "dist", *SSM_FLAGS, "--run-name", "two", "--max-steps", 2, port=free_port())
    r0, r1 = load_file(str(out / "rank0_model.safetensors")), load_file(str(out / "rank1_model.safetensors"))
    same_tensors(r0, r1)
    same_tensors(r0, load_file(str(one / "checkpoints" / "step_000000002" / "model.safetensors")), atol=1e-5)
