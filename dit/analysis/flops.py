"""Model size and forward compute, counted the way the DiT paper reports them.

The paper's "Gflops" (DiT Table 1, Table 4, Fig. 2) are forward-pass multiply-accumulates at
batch 1 for one conditional pass (no CFG doubling). torch's FlopCounterMode counts 2 FLOPs per
MAC, so paper GFLOPs = counted / 2 / 1e9. Training costs about 3x the forward.

`PAPER` holds the published numbers, once; benchmarks/gflops.py and tests/test_flops.py read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from dit.networks.dit_config import MODEL_NAMES, ModelConfig, preset_config


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


def _example_inputs(model: nn.Module, batch: int, device) -> tuple[torch.Tensor, ...]:
    cfg: ModelConfig = model.config
    x = torch.zeros(batch, cfg.in_channels, cfg.input_size, cfg.input_size, device=device)
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    return x, t, y


def count_forward_macs(model: nn.Module, batch: int = 1, device: str | torch.device = "meta") -> int:
    """Multiply-accumulates of one forward of `model` (a DiT) at `batch`, attention matmuls included.

    By default this runs on the meta device (shapes only, no arithmetic, so XL/2 at 512px costs
    milliseconds): the model's tensors are swapped for meta stand-ins with
    torch.func.functional_call, so the model itself is not moved. FlopCounterMode counts matmuls
    and convolutions only (not norms, activations or softmax), like the paper's numbers.
    Attention is forced onto SDPA's math path (two bmm's, always counted): FlopCounterMode does
    not know every fused kernel (torch 2.14 counts nothing for the CPU flash kernel).
    `device` other than "meta" runs the real model where it is (for ops without meta kernels).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    was_training = model.training
    model.eval()  # no label dropout: it would add a data-dependent branch
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            if str(device) == "meta":
                stand_ins = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict(keep_vars=True).items()}
                torch.func.functional_call(model, stand_ins, _example_inputs(model, batch, "meta"))
            else:
                model(*_example_inputs(model, batch, next(model.parameters()).device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
