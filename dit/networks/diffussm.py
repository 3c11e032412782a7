"""DiffuSSM (Yan, Gu & Rush, CVPR 2024, "Diffusion Models Without Attention"): `--arch diffussm`.

A DiT whose blocks hold no attention: a bidirectional S4D (s4d.py) mixes the tokens at the full
sequence length, and dense layers around it run at a length shortened by the hourglass factor M.
Everything else is DiT's: PatchEmbed (patch 1 by default, so the sequence is the H*W latent
positions in raster order; patch 2 for the ablation), the fixed 2-D sin-cos position table
(always on, DiT §3.1), the timestep and label embedders, c = t_emb + y_emb, adaLN-Zero, DiT's
final layer and unpatchify, learn_sigma.

The block (DiffuSSM §3.2), read so that the SSM runs at the network's sequence length L and the
dense parts at J = L/M. The block gets x (B, L, D) and FOLDS each run of M neighbouring tokens
into one: I_j = concat(x_{jM}, ..., x_{jM+M-1}) in R^{MD}, j = 0..J-1 (after adaLN's
modulate(norm(x))). Then, with sigma = GELU (tanh approximation, as DiT's MLP):

    U_l  = sigma(W_up_k sigma(W0 I_j)),  j = floor(l/M), k = l mod M   W0: MD -> D, W_up_k: D -> D
    Y    = BiSSM(U)                      at length L, width D          (s4d.S4D, bidirectional)
    I'_j = concat_k sigma(W_down_k Y_{jM+k})                           W_down_k: D -> 2D/M, I' in R^{2D}
    O_j  = W3 (sigma(W2 I'_j) * sigma(W1 I_j))                         W1: MD -> E, W2: 2D -> E, W3: E -> MD

and O (B, J, MD) is unfolded back to (B, L, D): out = x + gate * O (adaLN-Zero, DiT §3.2). One
up and one down weight per child k. E = expansion * D is the width of the BiGS-style
multiplicative gate (expansion 1.5: 15 D^2 dense weights + 3 D^2 adaLN = 18 D^2 per block, as
DiT's 12 D^2 + 6 D^2). In raster order with an even grid side a fold joins horizontal neighbours.
The paper's equations and its Figure 2 disagree on where the lengths change; we follow the
equations, whose input I has J = L/M tokens: folding is our reading of how the full-length
residual stream becomes that I. The fold concatenates (it loses nothing): the sequence length
must be a multiple of M (an odd token count with M = 2 is a UserError).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from dit.errors import UserError
from dit.networks.base import Blocks, GradCheckpointing
from dit.networks.blocks import FinalLayer
from dit.networks.conditioning import as_cond, null_class, table_rows
from dit.networks.dit_config import check_image_size, config_from_dict
from dit.networks.layers import (LN_EPS, FREQUENCY_EMBEDDING_SIZE, LabelEmbedder, PatchEmbed, TimestepEmbedder,
                                 get_2d_sincos_pos_embed, init_embedders, modulate, xavier_linears)
from dit.networks.catalog import Architecture
from dit.networks.s4d import S4D

# DiffuSSM-XL is the paper's (width 1152, depth 29); -S is DiT-S's width and depth; -CPU is sized to
# the CPU demo's DiT (DiT-S/2 at width 128, depth 4: 1.28M parameters at 16x16x3, 10 classes): at
# DiT's width 128 a DiffuSSM block is 9% larger, width 120 brings it to 1.24M (-3%).
PRESETS = {
    "DiffuSSM-CPU": dict(hidden_size=120, depth=4),
    "DiffuSSM-S": dict(hidden_size=384, depth=12),
    "DiffuSSM-XL": dict(hidden_size=1152, depth=29),
}
PATCH_SIZES = (1, 2)  # 1: no patchification (the paper); 2: the ablation
MODEL_NAMES = [f"{base}/{p}" for base in PRESETS for p in PATCH_SIZES]


def check_length(length: int, hourglass: int, where: str = "") -> None:
    """The hourglass folds runs of M tokens: a sequence that M does not divide is refused."""
    if length % hourglass:
        raise UserError(
            f"DiffuSSM's hourglass folds runs of M = {hourglass} neighbouring tokens, but {where or 'the sequence'} has "
            f"{length} tokens, not a multiple of {hourglass}: use an input whose token grid side (input side / patch "
            f"size) is even, e.g. one more or one fewer pixel per side, or hourglass 1")


@dataclass(frozen=True)
class DiffuSSMConfig:
    input_size: int = 32  # latent (or pixel) side
    patch_size: int = 1
    in_channels: int = 4
    hidden_size: int = 1152  # D
    depth: int = 29
    state_size: int = 64  # S4D's N: N/2 complex modes per channel and direction
    hourglass: int = 2  # M
    expansion: float = 1.5  # E = expansion * D, the gate's width
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v, want = getattr(self, f.name), {"int": int, "float": float, "bool": bool}[f.type]
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v))
            elif not isinstance(v, want) or (want is not bool and isinstance(v, bool)):
                raise UserError(f"DiffuSSM {f.name} must be of type {f.type}, got {v!r}")
            elif want is int and v < (0 if f.name == "num_classes" else 1):  # 0 classes: unconditional
                raise UserError(f"DiffuSSM {f.name} must be a positive integer, got {v}")
        if self.state_size % 2:
            raise UserError(f"DiffuSSM state_size must be even (N/2 complex modes), got {self.state_size}")
        if self.hidden_size % 4:
            raise UserError(f"DiffuSSM hidden_size must be a multiple of 4 (the 2-D sin-cos table), got {self.hidden_size}")
        if (2 * self.hidden_size) % self.hourglass:
            raise UserError(f"hourglass {self.hourglass} must divide 2 * hidden_size = {2 * self.hidden_size} "
                            f"(each child's down-projection is 2D/M wide)")
        if self.expansion <= 0 or int(self.expansion * self.hidden_size) < 1:
            raise UserError(f"DiffuSSM expansion must be positive, got {self.expansion}")
        if not 0.0 <= self.class_dropout_prob <= 1.0:
            raise UserError(f"class_dropout_prob must be in [0, 1] (1: unconditional), got {self.class_dropout_prob}")
        if self.input_size % self.patch_size:
            raise UserError(f"a {self.input_size}x{self.input_size} input is not divisible by patch size {self.patch_size}")
        side = self.input_size // self.patch_size
        check_length(self.num_tokens, self.hourglass, f"a {side}x{side} token grid")

    @property
    def num_tokens(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def gate_width(self) -> int:
        return int(self.expansion * self.hidden_size)

    @property
    def null_class(self) -> int:
        return null_class(self.num_classes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DiffuSSMConfig":
        return config_from_dict(cls, d, "DiffuSSM")


def preset_config(name: str, **overrides) -> DiffuSSMConfig:
    """Config of a named model, e.g. preset_config("DiffuSSM-XL/1", input_size=64)."""
    if name not in MODEL_NAMES:
        raise UserError(f"unknown DiffuSSM model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    base, _, patch = name.partition("/")
    return DiffuSSMConfig.from_dict({**PRESETS[base], "patch_size": int(patch), **overrides})


class DiffuSSMBlock(nn.Module):
    """The gated hourglass SSM block with adaLN-Zero. x (B, L, D), c (B, D) -> (B, L, D)."""

    def __init__(self, hidden_size: int, state_size: int = 64, hourglass: int = 2, expansion: float = 1.5):
        super().__init__()
        D, M, E = hidden_size, hourglass, int(expansion * hidden_size)
        self.hourglass = M
        self.norm = nn.LayerNorm(D, eps=LN_EPS, elementwise_affine=False)
        self.w0 = nn.Linear(M * D, D)
        self.up = nn.ModuleList(nn.Linear(D, D) for _ in range(M))
        self.ssm = S4D(D, state_size, bidirectional=True)
        self.down = nn.ModuleList(nn.Linear(D, 2 * D // M) for _ in range(M))
        self.w1, self.w2, self.w3 = nn.Linear(M * D, E), nn.Linear(2 * D, E), nn.Linear(E, M * D)
        self.act = nn.GELU(approximate="tanh")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 3 * D))  # shift, scale, gate
        nn.init.zeros_(self.adaLN_modulation[-1].weight)  # adaLN-Zero: the block starts as the identity
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def mix(self, h: torch.Tensor) -> torch.Tensor:
        """The hourglass SSM of §3.2 on modulated tokens h (B, L, D) -> O unfolded, (B, L, D)."""
        M, act = self.hourglass, self.act
        check_length(h.shape[1], M)
        I = rearrange(h, "b (j m) d -> b j (m d)", m=M)  # (B, J, MD): fold M neighbours
        a = act(self.w0(I))  # (B, J, D)
        U = torch.stack([act(up(a)) for up in self.up], dim=2)  # (B, J, M, D), child k at l = jM + k
        Y = self.ssm(rearrange(U, "b j m d -> b (j m) d"))  # (B, L, D): full length
        Y = rearrange(Y, "b (j m) d -> b j m d", m=M)
        I2 = torch.cat([act(down(Y[:, :, k])) for k, down in enumerate(self.down)], dim=-1)  # (B, J, 2D)
        O = self.w3(act(self.w2(I2)) * act(self.w1(I)))  # (B, J, MD)
        return rearrange(O, "b j (m d) -> b (j m) d", m=M)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(c).chunk(3, dim=1)  # each (B, D)
        return x + gate.unsqueeze(1) * self.mix(modulate(self.norm(x), shift, scale))


class DiffuSSM(nn.Module, GradCheckpointing, Blocks):
    """forward: x (N, C, H, W), t (N,), cond {"y": (N,) long} or labels -> (N, out_channels, H, W)."""

    def __init__(self, cfg: DiffuSSMConfig):
        super().__init__()
        self.config = cfg
        self.num_classes, self.null_class = cfg.num_classes, cfg.null_class
        self.out_channels = cfg.out_channels
        self.grad_checkpointing = False
        D = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.input_size, cfg.patch_size, cfg.in_channels, D, bias=True)
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = LabelEmbedder(cfg.num_classes, D, cfg.class_dropout_prob)
        side = cfg.input_size // cfg.patch_size
        self.register_buffer("pos_embed", get_2d_sincos_pos_embed(D, side).unsqueeze(0), persistent=False)
        self.blocks = nn.ModuleList(DiffuSSMBlock(D, cfg.state_size, cfg.hourglass, cfg.expansion)
                                    for _ in range(cfg.depth))
        self.final_layer = FinalLayer(D, cfg.patch_size, cfg.out_channels)
        self.initialize_weights()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c = self.config
        return (c.in_channels, c.input_size, c.input_size)

    def initialize_weights(self) -> None:
        """DiT's invariants: xavier-uniform Linears with zero bias, the embedders as DiT
        (layers.init_embedders), every block's modulation and the final layer zero, so each block
        is the identity and the untrained network outputs exactly 0. The S4D parameters keep their
        S4D-Lin initialisation (s4d.py), drawn when the blocks were built."""
        xavier_linears(self)
        init_embedders(self.x_embedder, self.t_embedder, self.y_embedder)
        zero = [b.adaLN_modulation[-1] for b in self.blocks]
        zero += [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]
        for linear in zero:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, p*p*C) -> (N, C, H, W), features ordered (p1, p2, c) as DiT's."""
        p, side = self.config.patch_size, self.config.input_size // self.config.patch_size
        return rearrange(x, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=side, w=side, p1=p, p2=p)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations (the Vandermonde matrices included) in the backward pass."""
        self.grad_checkpointing = enabled

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """cond: {"y": labels (N,), "drop": (N,) optional} or labels (N,), as DiT.forward."""
        cond = as_cond(cond)
        y, drop = cond["y"], cond.get("drop", force_drop_ids)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        h = self.x_embedder(x) + self.pos_embed  # (N, L, D), L = (H/p) * (W/p) in raster order
        c = self.t_embedder(t) + self.y_embedder(y, self.training, drop)  # (N, D)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, c, use_reentrant=False)
            else:
                h = block(h, c)
        return self.unpatchify(self.final_layer(h, c))  # (N, out_channels, H, W)


def params_formula(cfg: DiffuSSMConfig) -> int:
    """The parameter count of DiffuSSM(cfg), in closed form (the pos table is a buffer, not counted).

    With D = hidden, p = patch, C / C' = in / out channels, K classes, N state size, M hourglass,
    E = gate width, F = 256 timestep frequencies, Linear(a, b) = ab + b:
      embedders   patch conv C p^2 D + D; timestep MLP (F D + D) + (D^2 + D); label table (K + 1) D
      per block   adaLN Linear(D, 3D); W0 Linear(MD, D); M x Linear(D, D) up; M x Linear(D, 2D/M) down;
                  W1 Linear(MD, E), W2 Linear(2D, E), W3 Linear(E, MD);
                  S4D: two directions x (log Delta D + Re/Im lambda 2 D N/2 + C (re, im) 2 D N/2) + D skip
                  = 2 D (1 + 2N) + D
      final       adaLN Linear(D, 2D); Linear(D, p^2 C')
    """
    D, p, M, E, N = cfg.hidden_size, cfg.patch_size, cfg.hourglass, cfg.gate_width, cfg.state_size

    def linear(a: int, b: int) -> int:
        return a * b + b

    embed = cfg.in_channels * p * p * D + D + linear(FREQUENCY_EMBEDDING_SIZE, D) + linear(D, D)
    embed += table_rows(cfg.num_classes) * D
    block = (linear(D, 3 * D) + linear(M * D, D) + M * linear(D, D) + M * linear(D, 2 * D // M)
             + linear(M * D, E) + linear(2 * D, E) + linear(E, M * D) + 2 * D * (1 + 2 * N) + D)
    final = linear(D, 2 * D) + linear(D, p * p * cfg.out_channels)
    return embed + cfg.depth * block + final


# --- The registry entry: a training run's network, its early check and its one-line description ---

def config_for_run(run, data: dict) -> DiffuSSMConfig:
    """The DiffuSSM of a training run: a `--model` preset (DiffuSSM-XL/1, ...) resized by
    --hidden-size / --depth, on the data's channels, side and classes. The state size (64) and the
    hourglass (2) are the preset's. --num-heads is ignored (there is no attention); DiT's block options
    (--conditioning, --mlp, ...) are the dit architecture's flags, refused here (dit/training/config.py)."""
    if run.model not in MODEL_NAMES:
        raise UserError(f"unknown DiffuSSM model {run.model!r}; choose one of {', '.join(MODEL_NAMES)} "
                        f"(--arch diffussm takes a DiffuSSM --model)")
    overrides = {k: getattr(run, k) for k in ("hidden_size", "depth") if getattr(run, k) is not None}
    patch = int(run.model.rpartition("/")[2])
    if "image_size" in data:  # the message in pixels, the unit the user chose
        check_image_size(data["image_size"], data.get("downsample", 1), patch)
    return preset_config(run.model, input_size=data["input_size"], in_channels=data["in_channels"],
                         num_classes=data["num_classes"], class_dropout_prob=run.class_dropout_prob,
                         learn_sigma=run.learn_sigma, **overrides)


def check_run(run) -> None:
    """A run's network flags, before any data is read: any even token grid will do here."""
    patch = int(run.model.rpartition("/")[2]) if run.model in MODEL_NAMES else 1
    config_for_run(run, {"in_channels": 3, "input_size": 2 * patch, "num_classes": 10})


def describe(cfg: DiffuSSMConfig) -> str:
    name = next((n for n, p in PRESETS.items() if all(getattr(cfg, k) == v for k, v in p.items())), None)
    arch = f"{name}/{cfg.patch_size}" if name else f"DiffuSSM depth {cfg.depth}, hidden {cfg.hidden_size}, patch {cfg.patch_size}"
    return (f"{arch} (S4D state {cfg.state_size}, hourglass {cfg.hourglass}) on a "
            f"{cfg.input_size}x{cfg.input_size}x{cfg.in_channels} input with {cfg.num_classes} classes")


ARCH = Architecture(
    key="diffussm", config_from_dict=DiffuSSMConfig.from_dict, build=DiffuSSM, config_for_run=config_for_run,
    check_run=check_run, describe=describe,
    cpu_defaults=dict(model="DiffuSSM-CPU/1"),  # the CPU demo's DiT-S/2 is no DiffuSSM; its width and depth stay
)
