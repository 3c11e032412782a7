"""The one precision vocabulary: Accelerate's `no | fp16 | bf16` (mixed precision off, or the
half type autocast computes in). Every script and config uses these names; `fp32` is accepted as
the older spelling of `no`."""

from __future__ import annotations

import torch

from dit.errors import UserError

PRECISIONS = ("no", "bf16", "fp16")
ALIASES = {"fp32": "no"}
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_precision(name: str) -> str:
    """The canonical name of `name` (an alias resolved), or a UserError listing the choices."""
    name = ALIASES.get(name, name)
    if name not in PRECISIONS:
        raise UserError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)} (no = float32)")
    return name


def autocast_dtype(name: str) -> torch.dtype:
    """The dtype autocast computes in (float32 for `no`: autocast off)."""
    return DTYPES[check_precision(name)]
