"""Forward compute and size against the paper (DiT Table 1, Fig. 2, Table 4) and a hand count."""

import math

import pytest
import torch

from dit.networks.dit_config import ModelConfig
from dit.analysis.flops import PAPER, count_forward_macs, count_params
from dit.networks.dit import DiT

REL_TOL = 0.005
SMALL = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)


def meta_model(row):
    with torch.device("meta"):
        return DiT.from_config(row.config())


@pytest.mark.parametrize("label", list(PAPER))
def test_gflops_match_paper(label):
    row = PAPER[label]
    gflops = count_forward_macs(meta_model(row)) / 1e9
    # The paper prints 2 decimals: S/8 is 0.358 counted, printed 0.36 (-0.56%), so allow half a unit too.
    assert abs(gflops - row.gflops) <= max(REL_TOL * row.gflops, 0.005), f"{gflops:.3f} vs paper {row.gflops}"


@pytest.mark.parametrize("label", [label for label, row in PAPER.items() if not row.params_exact])
def test_variant_params_match_paper(label):
    row = PAPER[label]
    params = count_params(meta_model(row))
    assert abs(params / row.params - 1) < REL_TOL
    # Table 4's "M" agree with truncation (adaLN: 600.75M printed as 600M).
    assert math.floor(params / 1e6) == row.params // 1_000_000


def hand_count(cfg: ModelConfig) -> int:
    """MACs of one adaLN-Zero forward at batch 1, matmuls and the patch conv only."""
    D, T, p = cfg.hidden_size, cfg.num_tokens, cfg.patch_size
    mlp = int(D * cfg.mlp_ratio)
    patch = T * D * cfg.in_channels * p * p
    t_mlp = 256 * D + D * D
    block = 6 * D * D + T * (3 * D * D + D * D + 2 * D * mlp) + 2 * T * T * D  # adaLN, qkv, proj, mlp, QK^T & AV
    final = 2 * D * D + T * D * p * p * cfg.out_channels
    return patch + t_mlp + cfg.depth * block + final


def test_count_includes_attention_and_scales_with_batch():
    model = DiT(**SMALL)
    macs = count_forward_macs(model)
    assert macs == hand_count(model.config)
    assert count_forward_macs(model, batch=3) == 3 * macs
    assert model.training  # the count restores the mode it found


def test_meta_and_cpu_counts_agree():
    """The count on real tensors (for ops without meta kernels) equals the meta count, attention included."""
    model = DiT(**SMALL)
    assert count_forward_macs(model, device="cpu") == count_forward_macs(model) == hand_count(model.config)


# --- DiffuSSM: the counted matmuls plus the analytic S4D terms -------------------------------------

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from dit.analysis.flops import forward_cost, s4d_macs  # noqa: E402
from dit.networks.diffussm import DiffuSSM, DiffuSSMConfig  # noqa: E402
from dit.networks.s4d import S4D  # noqa: E402

SSM_TINY = DiffuSSMConfig(input_size=8, patch_size=1, in_channels=3, hidden_size=32, depth=2, state_size=16,
                          num_classes=10)


def test_s4d_analytic_term_matches_a_hand_count():
    """L = 4, H = 2, N = 4 (2 complex modes), both directions, batch 1; n = 2L = 8, log2 n = 3.
    Kernel, per direction and (h, l): 2 modes x (2 scale + 5 exp + 8 multiply-add) + 1 (2 Re) = 31
    FLOPs; x 2 channels x 4 positions x 2 directions = 496 FLOPs = 248 MACs.
    FFT: a real FFT of length 8 is 2.5 * 8 * 3 = 60 FLOPs: rfft of the kernel 2 x 60, of the input
    2 x 60, irfft 2 x 60, spectrum product 2 channels x 5 bins x 6 = 60: 420 FLOPs = 210 MACs."""
    assert s4d_macs(4, 2, 4) == (248, 210)
    assert s4d_macs(4, 2, 4, bidirectional=False) == (124, 210)  # one kernel, the same convolution
    # batch 3: the kernel and its rfft are computed once; the input rfft, product and irfft per sample.
    assert s4d_macs(4, 2, 4, batch=3) == (248, (120 + 3 * (120 + 120 + 60)) / 2)


def dense_hand_count(cfg: DiffuSSMConfig) -> int:
    """MACs of DiffuSSM's matmuls and patch conv at batch 1 (diffussm.py's block, §3.2)."""
    D, L, M, E, p = cfg.hidden_size, cfg.num_tokens, cfg.hourglass, cfg.gate_width, cfg.patch_size
    J = L // M
    patch = L * D * cfg.in_channels * p * p
    t_mlp = 256 * D + D * D
    block = (3 * D * D + J * M * D * D + L * D * D + L * D * 2 * D // M  # adaLN, W0, up, down
             + J * M * D * E + J * 2 * D * E + J * E * M * D)  # W1, W2, W3
    final = 2 * D * D + L * D * p * p * cfg.out_channels
    return patch + t_mlp + cfg.depth * block + final


def test_diffussm_total_is_counted_plus_analytic():
    model = DiffuSSM(SSM_TINY)
    cost = forward_cost(model)
    assert cost.counted == dense_hand_count(SSM_TINY)
    kernel, fft = s4d_macs(SSM_TINY.num_tokens, SSM_TINY.hidden_size, SSM_TINY.state_size)
    assert cost.kernel == SSM_TINY.depth * kernel and cost.fft == SSM_TINY.depth * fft
    assert cost.analytic == cost.kernel + cost.fft and cost.total == cost.counted + cost.kernel + cost.fft
    assert forward_cost(model, device="cpu") == cost  # meta and real tensors agree
    three = forward_cost(model, batch=3)  # kernels once per forward, everything else per sample
    assert three.counted == 3 * cost.counted and three.kernel == cost.kernel and three.fft > 2 * cost.fft
    assert model.training
    dit = DiT(**SMALL)  # no S4D: the analytic term is 0 and the count is count_forward_macs's
    assert forward_cost(dit) == type(cost)(count_forward_macs(dit))
    assert forward_cost(dit).total == hand_count(dit.config)


def test_diffussm_counted_part_is_what_flopcountermode_sees_outside_s4d():
    """On the real model FlopCounterMode sees the dense layers and, inside each S4D, only the
    kernel's complex contraction taken for a real bmm (H L N/2 MACs per direction) and no FFT;
    forward_cost's counted part is FlopCounterMode's total less exactly that."""
    model = DiffuSSM(SSM_TINY).eval()
    cfg = SSM_TINY
    x, t, y = torch.zeros(1, 3, 8, 8), torch.full((1,), 500), torch.zeros(1, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t, y)
    per_module = counter.get_flop_counts()
    s4d_names = [f"DiffuSSM.{name}" for name, m in model.named_modules() if isinstance(m, S4D)]
    inside = sum(sum(per_module[name].values()) for name in s4d_names) // 2
    assert len(s4d_names) == cfg.depth
    assert inside == cfg.depth * 2 * cfg.hidden_size * cfg.num_tokens * cfg.state_size // 2
    assert counter.get_total_flops() // 2 == count_forward_macs(model, device="cpu")
    assert forward_cost(model).counted == count_forward_macs(model, device="cpu") - inside


def test_diffussm_xl_counts_on_the_meta_device():
    from dit.networks.diffussm import preset_config

    with torch.device("meta"):
        model = DiffuSSM(preset_config("DiffuSSM-XL/1", input_size=32, in_channels=4, num_classes=1000))
    cost = forward_cost(model)
    assert cost.counted == dense_hand_count(model.config)
    assert cost.kernel == 29 * s4d_macs(1024, 1152, 64)[0] and 0 < cost.fft < cost.kernel < 0.1 * cost.counted
