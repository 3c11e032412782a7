"""Process-group setup shared by the scripts (train.py, sample.py, cache_latents.py).

Accelerate only starts a CPU process group (gloo) when asked for the CPU explicitly: launched by
torchrun or `accelerate launch` on a machine without a GPU and without `cpu=True`, every process
would silently run alone and repeat the whole job. `force_cpu` asks for the CPU in that case,
and `check_world` refuses to go on if the process group still does not match the launcher's.
"""

from __future__ import annotations

import os

import torch


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def force_cpu(requested: bool) -> bool:
    """cpu=... for Accelerator / PartialState: as requested, or forced when several processes were
    launched and there is no GPU to give each one."""
    return requested or (launched_world_size() > 1 and not torch.cuda.is_available())


def check_world(state) -> None:
    if state.num_processes != launched_world_size():
        raise RuntimeError(
            f"launched as {launched_world_size()} processes but the process group has {state.num_processes}: "
            "every process would repeat the whole job"
        )


def accelerate_state(device: str = "auto"):
    """accelerate's PartialState for a script's --device (auto, cuda, mps, cpu), refused in one line
    when the device asked for is not there; checked against the launched world size."""
    from accelerate import PartialState

    from dit.errors import UserError

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but no CUDA device is visible; use --device auto or cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps, but MPS is not available; use --device auto or cpu")
    state = PartialState(cpu=force_cpu(device == "cpu"))
    check_world(state)
    return state
