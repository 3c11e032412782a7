"""Model size and forward compute, counted the way the DiT paper reports them.

The paper's "Gflops" (DiT Table 1, Table 4, Fig. 2) are forward-pass multiply-accumulates at
batch 1 for one conditional pass (no CFG doubling). torch's FlopCounterMode counts 2 FLOPs per
MAC, so paper GFLOPs = counted / 2 / 1e9. Training costs about 3x the forward.

FlopCounterMode sees matmuls and convolutions only, no FFT. For networks with S4D layers
(DiffuSSM) `forward_cost` splits the forward into the part FlopCounterMode counts (every S4D
layer stubbed out) and an analytic term for the S4D layers themselves (`s4d_macs`: kernel
generation and FFT convolution), reported separately and summed.

`PAPER` holds the published numbers, once; benchmarks/gflops.py and tests/test_flops.py read it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from dit.networks.dit_config import MODEL_NAMES, ModelConfig, preset_config
from dit.networks.s4d import S4D


@dataclass(frozen=True)
class PaperRow:
    label: str
    preset: str
    overrides: dict = field(default_factory=dict)
    params: int = 0  # exact where the public model gives it, else the paper's rounding (Table 4: "675M")
    params_exact: bool = True
    gflops: float = 0.0

    def config(self) -> ModelConfig:
        return preset_config(self.preset, **self.overrides)


# GFLOPs: DiT Table 1 / Fig. 2 at 256px (32x32x4 latent) and §5 for 512px; params: all parameters
# of the public models (incl. the frozen pos_embed), see REFERENCE.md. Variants: DiT Table 4, XL/2.
_GFLOPS_256 = {
    "DiT-S": (6.06, 1.41, 0.36), "DiT-B": (23.01, 5.56, 1.42),
    "DiT-L": (80.71, 19.70, 5.01), "DiT-XL": (118.64, 29.05, 7.39),
}
_PARAMS_256 = {
    "DiT-S": (32_963_360, 32_945_024, 33_148_160), "DiT-B": (130_512_416, 130_475_648, 130_881_536),
    "DiT-L": (458_102_816, 458_053_760, 458_594_816), "DiT-XL": (675_129_632, 675_074_432, 675_683_072),
}
PAPER: dict[str, PaperRow] = {}
for _name in MODEL_NAMES:
    _base, _p = _name.split("/")
    _i = (2, 4, 8).index(int(_p))
    PAPER[_name] = PaperRow(_name, _name, params=_PARAMS_256[_base][_i], gflops=_GFLOPS_256[_base][_i])
PAPER["DiT-XL/2 512px"] = PaperRow("DiT-XL/2 512px", "DiT-XL/2", {"input_size": 64}, 676_014_368, True, 524.60)
for _cond, _params, _gflops in [
    ("adaln-zero", 675_000_000, 118.64), ("adaln", 600_000_000, 118.56),
    ("cross-attention", 598_000_000, 137.62), ("in-context", 449_000_000, 119.37),
]:
    _label = f"DiT-XL/2 {_cond}"
    PAPER[_label] = PaperRow(_label, "DiT-XL/2", {"conditioning": _cond}, _params, False, _gflops)


def count_params(model: nn.Module) -> int:
    """All nn.Parameters, including the frozen pos_embed (the convention of the paper's counts)."""
    return sum(p.numel() for p in model.parameters())


def _example_inputs(model: nn.Module, batch: int, device, cond: dict | None = None) -> tuple:
    x = torch.zeros(batch, *model.input_shape, device=device)  # (C, H, W), or a clip's (F, C, H, W)
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    extra = {k: v.to(device).expand(batch, *v.shape[1:]) for k, v in (cond or {}).items()}
    return x, t, {"y": y, **extra}


def count_forward_macs(model: nn.Module, batch: int = 1, device: str | torch.device = "meta",
                       cond: dict | None = None) -> int:
    """Multiply-accumulates of one forward of `model` (a DiT, or any network of the registry) at
    `batch`, attention matmuls included. `cond`: entries beside the label, batch-1 tensors (a video
    network's GIVEN and CLEAN: dit/layout.py).

    By default this runs on the meta device (shapes only, no arithmetic, so XL/2 at 512px costs
    milliseconds): the model's tensors are swapped for meta stand-ins with
    torch.func.functional_call, so the model itself is not moved. FlopCounterMode counts matmuls
    and convolutions only (not norms, activations or softmax), like the paper's numbers.
    Attention is forced onto SDPA's math path (two bmm's, always counted): FlopCounterMode does
    not know every fused kernel (torch 2.14 counts nothing for the CPU flash kernel).
    `device` other than "meta" runs the real model where it is (for ops without meta kernels).

    This is all FlopCounterMode sees. Inside an S4D layer that is the kernel's complex contraction
    taken for a real bmm and no FFT at all, and S4D's autocast guard has no meta version: for
    networks with S4D layers use `forward_cost`.
    """
    return _count(model, batch, device, cond=cond)


def _count(model: nn.Module, batch: int, device, stubs: tuple[nn.Module, ...] = (), calls: list | None = None,
           cond: dict | None = None) -> int:
    """FlopCounterMode's MACs of one forward, the modules in `stubs` replaced by the identity (each
    call appended to `calls` as (module, input shape))."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    was_training = model.training
    model.eval()  # no label dropout: it would add a data-dependent branch
    try:
        with contextlib.ExitStack() as stack:
            for module in stubs:
                stack.enter_context(_identity(module, calls))
            stack.enter_context(torch.no_grad())
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
            counter = stack.enter_context(FlopCounterMode(display=False))
            if str(device) == "meta":
                # Buffers too: a non-persistent one (DiffuSSM's pos_embed) is not in the state dict.
                tensors = {**dict(model.named_buffers()), **model.state_dict(keep_vars=True)}
                stand_ins = {k: torch.empty_like(v, device="meta") for k, v in tensors.items()}
                torch.func.functional_call(model, stand_ins, _example_inputs(model, batch, "meta", cond))
            else:
                model(*_example_inputs(model, batch, next(model.parameters()).device, cond))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


@contextlib.contextmanager
def _identity(module: nn.Module, calls: list | None = None):
    """`module` returns its input for the duration (an instance attribute shadows the class's forward)."""
    def forward(u: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append((module, u.shape))
        return u

    module.forward = forward
    try:
        yield
    finally:
        del module.forward


# --- S4D layers: FFTs and kernel generation, which FlopCounterMode does not see ---------------------

REAL_FFT_FLOPS = 2.5  # x n log2 n: a real FFT (or inverse) of length n; see s4d_macs
COMPLEX_EXP_FLOPS = 5  # e^a (cos b + i sin b): 3 transcendentals at 1 FLOP each + 2 multiplies
COMPLEX_MUL_FLOPS = 6  # 4 multiplies + 2 adds
COMPLEX_MAC_FLOPS = 8  # a complex multiply plus a complex add


def real_fft_flops(n: int) -> float:
    """FLOPs of one real-input FFT (rfft) or real-output inverse (irfft) of length n."""
    return REAL_FFT_FLOPS * n * math.log2(n)


def s4d_macs(length: int, channels: int, state_size: int, bidirectional: bool = True,
             batch: int = 1) -> tuple[float, float]:
    """(kernel, fft): the analytic MACs of one forward of an S4D layer (dit/networks/s4d.py) on
    u (batch, length, channels), state size N (N/2 complex modes per channel and direction).
    FLOPs are counted as below and converted to MACs as the rest of this module: MACs = FLOPs / 2.

    Conventions. A real FFT of length n costs (5/2) n log2 n FLOPs: the radix-2 count of 5 n log2 n
    for a complex FFT (FFTW's benchmark convention, used for any n), halved because a real
    transform is about half a complex one of the same length (rfft and irfft alike). A
    transcendental (exp, cos, sin) counts as 1 FLOP, so exp(a + ib) = e^a (cos b + i sin b) is
    3 + 2 = 5; a complex multiply is 6 FLOPs (4 multiplies, 2 adds), a complex multiply-add 8.

    Kernel generation (S4DKernel.forward), per direction, with L = length, H = channels:
        z_hnl = (Delta lambda)_hn * l          complex x real         2 FLOPs  per (h, n, l)
        V_hnl = exp(z_hnl)                     the Vandermonde matrix 5 FLOPs  per (h, n, l)
        K_hl  = sum_n (C dB)_hn V_hnl          complex multiply-add   8 FLOPs  per (h, n, l)
        K_hl <- 2 Re K_hl                                             1 FLOP   per (h, l)
      = H L (15 N/2 + 1) FLOPs, times 2 directions when bidirectional. The kernel is built once per
      forward, whatever the batch: at batch B each image carries 1/B of it (this count is for the
      whole call). Left out: the discretisation (lambda, expm1, dB, C dB), O(H N) with no factor L.

    FFT convolution (fft_conv), n = 2L (zero padding, so the circular convolution is linear):
        rfft of the kernel, H transforms           H (5/2) n log2 n    (once per forward, as the kernel)
        rfft of the input, B H transforms          B H (5/2) n log2 n
        spectrum product, B H (L + 1) bins          B H (L + 1) 6
        irfft, B H transforms                      B H (5/2) n log2 n
      The bidirectional kernel [Kf, flip(Kb)] is one length-2L kernel: one convolution either way.
      Left out: the skip term D u (elementwise, as the norms and activations the paper's counts
      leave out) and the concatenation and flip (no arithmetic).
    """
    L, H, half = length, channels, state_size // 2
    directions = 2 if bidirectional else 1
    kernel = directions * H * L * ((2 + COMPLEX_EXP_FLOPS + COMPLEX_MAC_FLOPS) * half + 1)
    fft = real_fft_flops(2 * L)
    conv = H * fft + batch * H * (2 * fft + COMPLEX_MUL_FLOPS * (L + 1))
    return kernel / 2, conv / 2


@dataclass(frozen=True)
class ForwardCost:
    """Forward MACs of a network: what FlopCounterMode counts plus the analytic S4D terms."""

    counted: int  # matmuls and convolutions seen by FlopCounterMode, with every S4D layer stubbed out
    kernel: float = 0.0  # S4D kernel generation (s4d_macs)
    fft: float = 0.0  # S4D FFT convolutions (s4d_macs)

    @property
    def analytic(self) -> float:
        return self.kernel + self.fft

    @property
    def total(self) -> float:
        return self.counted + self.analytic


def forward_cost(model: nn.Module, batch: int = 1, device: str | torch.device = "meta") -> ForwardCost:
    """The forward cost of any registered image network at `batch`, in MACs (count_forward_macs's
    conventions). For a network without S4D layers (DiT) it is count_forward_macs, analytic 0.

    With S4D layers (DiffuSSM), each is replaced by the identity for the count: it maps (B, L, H)
    to (B, L, H), so every other op sees the shapes it sees in the real forward and FlopCounterMode
    counts them as it would. The stub records the shape it was called with, and s4d_macs adds
    the layer's analytic cost at that shape. (Left in, FlopCounterMode would count the kernel's
    complex contraction as one real bmm, 2 of its 8 FLOPs per complex multiply-add, and no FFT;
    and S4D's autocast guard does not run on the meta device.)
    """
    calls: list[tuple[S4D, torch.Size]] = []
    counted = _count(model, batch, device, tuple(m for m in model.modules() if isinstance(m, S4D)), calls)
    kernel = fft = 0.0
    for layer, shape in calls:
        B, L, H = shape
        k, f = s4d_macs(L, H, 2 * layer.forward_kernel.C.shape[1], layer.bidirectional, B)
        kernel, fft = kernel + k, fft + f
    return ForwardCost(counted, kernel, fft)
