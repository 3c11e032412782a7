"""Model size and forward compute, counted the way the DiT paper reports them.

The paper's "Gflops" (DiT Table 1, Table 4, Fig. 2) are forward-pass multiply-accumulates at
batch 1 for one conditional pass (no CFG doubling). torch's FlopCounterMode counts 2 FLOPs per
MAC, so paper GFLOPs = counted / 2 / 1e9. Training costs about 3x the forward.

FlopCounterMode sees matmuls and convolutions only, no FFT. A module that declares the
AnalyticCost capability (dit/networks/base.py: the S4D layers of DiffuSSM) is counted by its own
hook instead: `forward_cost` splits the forward into the part FlopCounterMode counts (every such
module stubbed out) and the modules' analytic terms (S4D: `s4d_macs`, kernel generation and FFT
convolution), reported separately and summed.

`PAPER` holds the published numbers, once; benchmarks/gflops/gflops.py and tests/test_flops.py read it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from dit.networks.base import AnalyticCost
from dit.networks.dit_config import MODEL_NAMES, ModelConfig, preset_config
from dit.networks.s4d import s4d_macs  # noqa: F401 - S4D's analytic cost, read here by tests and benchmarks


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


@dataclass(frozen=True)
class ForwardCost:
    """Forward MACs of a network: what FlopCounterMode counts plus the AnalyticCost modules' terms."""

    counted: int  # matmuls and convolutions seen by FlopCounterMode, with every AnalyticCost module stubbed out
    kernel: float = 0.0  # kernels built once per forward (S4D's kernel generation, s4d_macs)
    fft: float = 0.0  # the rest of their work (S4D's FFT convolutions, s4d_macs)

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
    calls: list[tuple[AnalyticCost, torch.Size]] = []
    counted = _count(model, batch, device, tuple(m for m in model.modules() if isinstance(m, AnalyticCost)), calls)
    terms = {"kernel": 0.0, "fft": 0.0}
    for layer, shape in calls:
        for name, macs in layer.analytic_macs(tuple(shape)).items():
            terms[name] = terms[name] + macs
    return ForwardCost(counted, **terms)
