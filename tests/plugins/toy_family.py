"""A toy architecture and a toy process that live outside the package, registered on import.

tests/test_registry.py and tests/test_config_sections.py train, resume, sample and evaluate them
through train.py, sample.py and evaluate.py with DIT_PLUGINS pointing here, without any library file
naming them: the proof that the contracts in dit/networks/catalog.py and dit/processes/base.py are
enough to add a system, its training flags included.

- "token-mlp": an MLP over patch tokens (no attention), time and class added to every token. It
  declares no optional capability (dit/networks/base.py): --grad-checkpointing and --compile are
  refused in one line. Its config section adds one flag, --mlp-hidden-mult (the MLP's inner width).
- "toy-flow": rectified flow (x_t = (1 - t) x0 + t eps, t = u^p with u ~ U(0, 1), the network predicts
  the velocity eps - x0), sampled by a plain Euler integration from t = 1 to t = 0. Its time runs the
  other way from the library's flow process (data at t = 0 here): it says so in `time_range`. Its
  section adds --toy-time-power (p; 1: uniform t), a training setting only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch import nn

from dit.errors import UserError
from dit.networks import Architecture, register_architecture
from dit.networks.conditioning import as_cond, null_class, table_rows
from dit.networks.layers import timestep_embedding
from dit.processes import Process, register_process
from dit.sampling import register_sampler


@dataclass(frozen=True)
class TokenMLPSection:
    """token-mlp's training flags."""

    mlp_hidden_mult: int = 1  # the MLP's inner width, in multiples of the token width


@dataclass(frozen=True)
class TokenMLPConfig:
    in_channels: int = 3
    input_size: int = 8
    patch_size: int = 2
    hidden: int = 32
    num_classes: int = 10
    mlp_hidden_mult: int = 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class TokenMLP(nn.Module):
    def __init__(self, config: TokenMLPConfig):
        super().__init__()
        self.config = config
        c, p, h = config.in_channels, config.patch_size, config.hidden
        self.num_classes, self.null_class = config.num_classes, null_class(config.num_classes)
        self.input_shape = (c, config.input_size, config.input_size)
        self.embed = nn.Linear(c * p * p, h)
        self.time = nn.Linear(64, h)
        self.label = nn.Embedding(table_rows(config.num_classes), h)
        inner = h * config.mlp_hidden_mult
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(h, inner), nn.GELU(), nn.Linear(inner, c * p * p))

    def forward(self, x, t, cond):
        cond = as_cond(cond)
        y = cond["y"]
        if "drop" in cond:
            y = torch.where(cond["drop"] == 1, self.null_class, y)
        p = self.config.patch_size
        tokens = rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)
        h = self.embed(tokens) + (self.time(timestep_embedding(t, 64)) + self.label(y)).unsqueeze(1)
        out = self.mlp(h)
        side = self.config.input_size // p
        return rearrange(out, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=side, w=side, p1=p, p2=p)


def _config_for_run(run, data: dict) -> TokenMLPConfig:
    if run.mlp_hidden_mult < 1:
        raise UserError(f"--mlp-hidden-mult must be positive, got {run.mlp_hidden_mult}")
    return TokenMLPConfig(in_channels=data["in_channels"], input_size=data["input_size"],
                          hidden=run.hidden_size or 32, num_classes=data["num_classes"],
                          mlp_hidden_mult=run.mlp_hidden_mult)


register_architecture(Architecture(
    key="token-mlp", config_from_dict=lambda d: TokenMLPConfig(**d), build=TokenMLP, config_for_run=_config_for_run,
    section=TokenMLPSection,
), replace=True)


@dataclass(frozen=True)
class ToyFlowSection:
    """toy-flow's training flags."""

    toy_time_power: float = 1.0  # t = u^p, u ~ U(0, 1): p > 1 draws more times near the data


class ToyFlow(Process):
    """Its state (has_state): how many loss calls it has made, which weights the loss 1 + 1 / (1 + calls)
    (a warm-up a run must restore exactly on resume: the checkpoint carries it)."""

    key = "toy-flow"
    section = ToyFlowSection
    has_state = True
    time_range = (0.0, 1.0)  # (data end, noise end)
    outputs = ("velocity", "x0", "eps")
    inversion_refusal = None

    def __init__(self, time_power: float = 1.0):
        if not time_power > 0:
            raise UserError(f"--toy-time-power must be positive, got {time_power}")
        self.time_power = time_power
        self.calls = torch.zeros((), dtype=torch.int64)

    def state_dict(self):
        return {"calls": self.calls.clone()}

    def load_state_dict(self, state):
        self.calls = state["calls"].clone()

    @classmethod
    def from_run(cls, run):
        return cls(run.toy_time_power)

    @classmethod
    def from_meta(cls, meta):
        return cls()

    def to_meta(self):
        return {"kind": "rectified-flow"}

    def draw(self, rng, shape):
        t = float(rng.random()) ** self.time_power
        return {"t": t, "noise": torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))}

    def loss(self, network, batch):
        x0, noise, t = batch["x0"], batch["noise"], batch["t"].float()
        tb = t.view(-1, *[1] * (x0.dim() - 1))
        x_t = (1 - tb) * x0 + tb * noise
        v = network(x_t, self.network_time(t), batch["cond"])
        weight = 1 + 1 / (1 + self.calls.item())
        self.calls += 1
        return {"loss": weight * ((v - (noise - x0)) ** 2).mean(dim=tuple(range(1, x0.dim())))}

    def prior(self, noise, batch, shape, device):
        return noise(torch.empty(batch, *shape, device=device))

    def network_time(self, t):
        return t * 1000  # the sinusoidal embedding was made for 0..999

    def convert(self, output, x_t, t, to):
        if to == "velocity":
            return output
        tb = t.view(-1, *[1] * (x_t.dim() - 1))
        if to == "x0":
            return x_t - tb * output
        if to == "eps":
            return x_t + (1 - tb) * output
        raise ValueError(to)

    def marginal(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return 1 - t, t

    def marginal_rates(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return -torch.ones_like(t), torch.ones_like(t)


register_process(ToyFlow, replace=True)


@torch.no_grad()
def euler(denoiser, process, x_T, steps, noise=None, progress=False, eta=0.0, **options):
    x = x_T
    ts = torch.linspace(1.0, 0.0, steps + 1)
    for a, b in zip(ts[:-1], ts[1:]):
        t = torch.full((x.shape[0],), float(a), device=x.device)
        x = x + (b - a) * denoiser(x, process.network_time(t))
    return x


register_sampler("toy-flow", "euler", euler, replace=True)
