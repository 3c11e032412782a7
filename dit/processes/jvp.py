"""Forward-mode derivatives through a network: the Jacobian-vector product MeanFlow's target needs.

`torch.func.jvp(fn, primals, tangents)` returns fn(primals) and its directional derivative along
`tangents` in one pass of dual numbers, at about the cost of two forwards. Every op on the way needs
a forward-mode rule. The fused attention kernels of `F.scaled_dot_product_attention` do not all have
one (PyTorch 2.x: the CPU flash kernel raises NotImplementedError, and so do flash kernels on GPUs),
while its math path is made of matmuls and a softmax, which do. `jvp` below therefore tries the
default kernels and, once they refuse forward mode on a (device type, dtype), runs every later JVP
there under the math path (`sdpa_kernel(SDPBackend.MATH)`); `attention_path` says which was
chosen (training logs it; benchmarks/few_step/ reports the step cost with it).
"""

from __future__ import annotations

import torch

FUSED, MATH = "fused", "math"
_CHOSEN: dict[tuple[str, torch.dtype], str] = {}


def _key(x: torch.Tensor) -> tuple[str, torch.dtype]:
    """The device type and the dtype attention will run in (autocast's where it is on)."""
    kind = x.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
    return kind, dtype


def attention_path(x: torch.Tensor) -> str | None:
    """FUSED or MATH where a JVP has run on x's device and dtype, None before the first."""
    return _CHOSEN.get(_key(x))


def _math():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def jvp(fn, primals: tuple, tangents: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(*primals), d/de fn(*(primals + e tangents)) at e = 0), through attention on whichever path
    has a forward-mode rule here (module docstring). The first tensor of `primals` names the device."""
    key = _key(primals[0])
    if _CHOSEN.get(key) != MATH:  # not yet refused here (a network without attention says nothing about it)
        try:
            out = torch.func.jvp(fn, primals, tangents)
        except NotImplementedError as e:
            if "forward AD" not in str(e):
                raise
            _CHOSEN[key] = MATH
        else:
            _CHOSEN.setdefault(key, FUSED)
            return out
    with _math():
        return torch.func.jvp(fn, primals, tangents)


def bare(network):
    """The module a data-parallel wrapper holds (DDP's .module), whose forward the JVP runs: the gradient
    pass goes through the wrapper so that its all-reduce happens; the JVP is a target, taken without one."""
    from torch.nn.parallel import DistributedDataParallel

    return network.module if isinstance(network, DistributedDataParallel) else network
