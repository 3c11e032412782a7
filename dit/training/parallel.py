"""How the network is spread over processes: replicated (DDP, through Accelerate) or sharded (FSDP2).

Both expose the same few operations to train.py: `model` (what the forward pass calls), `net`
(the DiT module whose parameters are trained), `optimizer`, `no_sync()`, `backward(loss)`,
`clip_grad_norm(max)`, `step(ok)`, the EMA (`ema_update`, `ema_model()`), and checkpoint
`save(dir)` / `load(dir)`. `step(ok)` and `ema_update(decay, ok)` take a device flag (dit/training/guard.py)
and skip the update where it is false without a host sync: through fused AdamW's `found_inf`
where the optimizer is fused (CPU and CUDA), with one sync otherwise. A checkpoint written by either is the same set of files:
    model.safetensors   training weights (full, public key layout)
    optimizer.bin       optimizer state (plain tensors: read with weights_only=True)
    ema.safetensors     EMA weights + model config (dit.io.checkpoint.save_export)
plus, for DDP, Accelerate's scaler and RNG files.

Sharded: every transformer block and then the whole DiT are wrapped with
`torch.distributed.fsdp.fully_shard`, so parameters, gradients and AdamW moments are split over
the processes (DiT-XL/2's fp32 weights + AdamW state + EMA take ~11 GB replicated). Its EMA is
kept sharded the same way and gathered, tensor by tensor, into CPU memory on the main process
only, to sample or save; the optimizer state is gathered the same way (cpu_offload). Works with the gloo backend too,
which is how the tests run it on CPU. fp16 (which needs a sharded loss scaler) is not offered
with it: use bf16.
"""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dit.errors import UserError
from dit.networks.base import Blocks, supports
from dit.training.ema import EMA, ema_lerp

MODEL_FILE, OPTIMIZER_FILE, EMA_FILE = "model.safetensors", "optimizer.bin", "ema.safetensors"


def make_parallel(kind: str, accelerator, model, ema_decay: float, optimizer_factory):
    if kind == "fsdp":
        return Sharded(accelerator, model, optimizer_factory, ema_decay)
    return Replicated(accelerator, model, optimizer_factory, ema_decay)


class Replicated:
    """DDP (or a single process) through Accelerate; the EMA is a full copy on every process."""

    def __init__(self, accelerator, model, optimizer_factory, ema_decay: float):
        self.accelerator = accelerator
        self.ema = EMA(model, ema_decay)
        self.model, self.optimizer = accelerator.prepare(model, optimizer_factory(model.parameters()))
        self.net = accelerator.unwrap_model(self.model)

    def no_sync(self):
        return self.accelerator.no_sync(self.model)

    def backward(self, loss):
        self.accelerator.backward(loss)

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        return self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)

    def step(self, ok: torch.Tensor) -> None:
        inner = self.optimizer.optimizer  # Accelerate's wrapper around the torch optimizer
        if self.accelerator.scaler is not None:  # fp16: the loss scaler sets found_inf itself
            self.optimizer.step()
        else:
            _guarded_step(inner, ok)
        self.optimizer.zero_grad(set_to_none=True)

    def ema_update(self, decay: float | None = None, ok: torch.Tensor | None = None) -> None:
        self.ema.update(self.net, decay, ok)

    def ema_model(self):
        """The EMA network (a plain DiT on this process's device); collective for Sharded."""
        return self.ema.model

    def save(self, directory: Path, export_meta: dict) -> None:
        from dit.io.checkpoint import save_export

        self.accelerator.save_state(str(directory), safe_serialization=True)
        if self.accelerator.is_main_process:
            save_export(Path(directory) / EMA_FILE, self.ema.model, **export_meta)

    def load(self, directory: Path) -> None:
        self.accelerator.load_state(str(directory))
        self.ema.load_state_dict(load_file(str(Path(directory) / EMA_FILE)))


def shard(model, mixed_precision: str) -> None:
    """FSDP2 in place: each of model.blocks, then the rest. Under bf16, weights are gathered in bf16 and
    gradients reduced in fp32. The root does NOT cast its forward inputs (FSDP2's default would): t
    rounded to bf16 is another timestep (999 -> 1000: 8 bits of mantissa) and a video network's CLEAN
    values, rounded, would no longer be the given frames; autocast casts what the matmuls need."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    bf16 = mixed_precision == "bf16"
    blocks = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    root = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False) \
        if bf16 else MixedPrecisionPolicy()
    # One all-gather per block (the Blocks capability, dit/networks/base.py): peak memory is one block's weights.
    for block in model.blocks if supports(model, Blocks) else []:
        fully_shard(block, mp_policy=blocks)
    fully_shard(model, mp_policy=root)


class Sharded:
    """FSDP2: parameters, gradients, optimizer state and EMA split across the processes."""

    def __init__(self, accelerator, model, optimizer_factory, ema_decay: float):
        if accelerator.mixed_precision == "fp16":
            raise UserError("--distributed fsdp supports --mixed-precision bf16 or no, not fp16 (use bf16)")
        if not torch.distributed.is_initialized():
            raise UserError("--distributed fsdp needs several processes: launch with `accelerate launch` or torchrun")
        self.accelerator = accelerator
        # The gathered EMA lands here: on the main process only, and in CPU memory (no process holds a
        # full copy of the weights on its GPU).
        self.full = copy.deepcopy(model).eval().requires_grad_(False) if accelerator.is_main_process else None
        model.to(accelerator.device)
        shard(model, accelerator.mixed_precision)
        self.model = self.net = model
        self.optimizer = optimizer_factory(model.parameters())
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = [p.detach().clone() for p in model.parameters()]  # sharded EMA (DTensors)
        self.decay = ema_decay

    @contextlib.contextmanager
    def no_sync(self):
        self.model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.model.set_requires_gradient_sync(True)

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm if max_norm else math.inf)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def step(self, ok: torch.Tensor) -> None:
        _guarded_step(self.optimizer, ok)
        self.optimizer.zero_grad(set_to_none=True)

    def ema_update(self, decay: float | None = None, ok: torch.Tensor | None = None) -> None:
        ema_lerp(self.shadow, list(self.model.parameters()), self.decay if decay is None else decay, ok)

    def _full(self, tensors) -> dict[str, torch.Tensor]:
        """Collective: gather sharded tensors one at a time into full CPU tensors, kept on the main
        process only (elsewhere: {}); at most one full tensor is on any GPU at a time."""
        main, out = self.accelerator.is_main_process, {}
        for n, t in zip(self.names, tensors):
            full = t.full_tensor()
            if main:
                out[n] = full.cpu()
            del full
        return out

    def ema_model(self):
        """Collective: the EMA network on the main process (in CPU memory), None on the others."""
        ema = self._full(self.shadow)
        if self.full is None:
            return None
        self.full.load_state_dict(ema, strict=True)
        return self.full

    def save(self, directory: Path, export_meta: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        from dit.io.checkpoint import save_export

        directory = Path(directory)
        weights = self._full(list(self.model.parameters()))
        ema = self.ema_model()
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=options)
        if self.accelerator.is_main_process:
            save_file({k: v.contiguous() for k, v in weights.items()}, str(directory / MODEL_FILE))
            torch.save(optim, directory / OPTIMIZER_FILE)
            save_export(directory / EMA_FILE, ema, **export_meta)

    def load(self, directory: Path) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, set_model_state_dict, set_optimizer_state_dict,
        )
        from torch.distributed.tensor import distribute_tensor

        directory = Path(directory)
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, load_file(str(directory / MODEL_FILE)), options=options)
        optim = torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        set_optimizer_state_dict(self.model, self.optimizer, optim, options=options)
        ema = load_file(str(directory / EMA_FILE))
        with torch.no_grad():
            for name, shard in zip(self.names, self.shadow):
                full = ema[name].to(shard.device, shard.dtype)
                shard.copy_(distribute_tensor(full, shard.device_mesh, shard.placements))


def _guarded_step(optimizer, ok: torch.Tensor) -> None:
    """optimizer.step() unless `ok` is false: on the device for fused optimizers, else one sync."""
    # The groups' flag, not the constructor's: a checkpoint of a non-fused optimizer loads as non-fused.
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = (~ok).float()  # read by the fused kernel: a skipped step changes nothing
        optimizer.step()
    elif bool(ok):
        optimizer.step()
