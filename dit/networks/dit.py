"""The DiT network (Peebles & Xie 2022): a pure function (x_t, t, cond) -> network output.

It knows nothing about the process: t is whatever time value the process feeds it (the Gaussian
process: the timestep index in the original 0..999 space) and the output is whatever the process
trained it to predict (for DiT's Gaussian diffusion: epsilon and, with learn_sigma, the variance
interpolation). `cond` is a dict (dit/networks/conditioning.py) or, as in the public code, labels. Module names and the
constructor keywords match the public release, so `DiT_models["DiT-XL/2"]()` loads the
published `DiT-XL-2-256x256.pt` with strict=True.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from dit.networks.blocks import DiTBlock, FinalLayer, PlainFinalLayer, ViTBlock
from dit.layout import SPAN
from dit.networks.conditioning import IMAGENET_CLASSES, as_cond
from dit.networks import dit_config
from dit.networks.base import CompileBlocks, GradCheckpointing, PatchAttention
from dit.networks.dit_config import MODEL_NAMES, PRESETS, ModelConfig
from dit.networks.layers import LabelEmbedder, PatchEmbed, TimestepEmbedder, get_2d_sincos_pos_embed, init_embedders, \
    xavier_linears
from dit.networks.catalog import Architecture
from dit.networks.rope import rope_2d


class DiT(nn.Module, GradCheckpointing, CompileBlocks, PatchAttention):
    """Diffusion Transformer. forward: x (N, C, H, W), t (N,), cond {"y": (N,) long} -> (N, out_channels, H, W)."""

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = IMAGENET_CLASSES,
        learn_sigma: bool = True,
        conditioning: str = "adaln-zero",
        timestep_freq_shift: int = 0,
        mlp: str = "gelu",
        norm: str = "layernorm",
        pos: str = "sincos",
        qk_norm: bool = False,
        input_width: int = 0,
        span_embed: bool = False,
    ):
        super().__init__()
        self.config = cfg = ModelConfig(
            input_size=input_size, patch_size=patch_size, in_channels=in_channels, hidden_size=hidden_size,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, class_dropout_prob=class_dropout_prob,
            num_classes=num_classes, learn_sigma=learn_sigma, conditioning=conditioning,
            timestep_freq_shift=timestep_freq_shift, mlp=mlp, norm=norm, pos=pos, qk_norm=qk_norm,
            input_width=input_width, span_embed=span_embed,
        )
        self.input_size, self.patch_size = input_size, patch_size
        self.in_channels, self.out_channels = in_channels, cfg.out_channels
        self.num_heads, self.num_classes, self.learn_sigma = num_heads, num_classes, learn_sigma
        self.null_class = cfg.null_class
        self.conditioning = conditioning
        self.grad_checkpointing = False

        # Any H x W the patch tiles (strict_img_size off): the pos tables are functions of the token grid.
        self.x_embedder = PatchEmbed((input_size, cfg.width), patch_size, in_channels, hidden_size, bias=True,
                                     strict_img_size=False)
        self.t_embedder = TimestepEmbedder(hidden_size, freq_shift=timestep_freq_shift)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        # MeanFlow / shortcut models: the second time (cond[SPAN]) through its own timestep embedder, summed
        # with t's (MeanFlow §4.3 embeds (t, t - r); shortcut models embed the step d alike).
        self.span_embedder = TimestepEmbedder(hidden_size, freq_shift=timestep_freq_shift) if span_embed else None
        # Fixed 2-D sin-cos table (DiT §3.1), a frozen Parameter rather than a buffer only because
        # that is where the public checkpoints keep it. With pos "rope2d" it holds zeros (positions
        # enter through q and k only) but stays, so every DiT has the same top-level keys.
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, hidden_size), requires_grad=False)

        options = dict(mlp=mlp, norm=norm, qk_norm=qk_norm)
        if conditioning in ("adaln-zero", "adaln"):
            gated = conditioning == "adaln-zero"
            self.blocks = nn.ModuleList(
                DiTBlock(hidden_size, num_heads, mlp_ratio, gated, **options) for _ in range(depth))
            self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, norm)
        else:
            cross = conditioning == "cross-attention"
            self.blocks = nn.ModuleList(
                ViTBlock(hidden_size, num_heads, mlp_ratio, cross, **options) for _ in range(depth))
            self.final_layer = PlainFinalLayer(hidden_size, patch_size, self.out_channels, norm)
        self.initialize_weights()

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "DiT":
        return cls(**cfg.to_dict())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input: what the process's prior is drawn in."""
        return (self.in_channels, self.input_size, self.config.width)

    def initialize_weights(self) -> None:
        """Initialise as the public DiT. Invariants:

        - every nn.Linear: xavier-uniform weight, zero bias (ViT/JAX convention);
        - patch-embed conv: xavier-uniform on its (out, in*p*p) view, i.e. initialised like the linear it is;
        - pos_embed: the fixed sin-cos table (zeros with pos "rope2d"), never trained;
        - affine norm weights (ViT blocks, qk-norm) 1 and biases 0, PyTorch's defaults; SwiGLU's
          three Linears xavier like every other (LightningDiT; not timm's near-zero gate init);
        - label table and both timestep-MLP weights: N(0, 0.02);
        - adaLN-Zero (DiT §3.2): each block's modulation Linear is zero, so all gates are 0 and every
          block is the identity; the final layer (modulation and linear) is zero, so the untrained
          network outputs exactly 0 for any input. The other variants keep a zero final linear
          (same zero output) but their block modulation (adaLN) keeps the xavier init.
        """

        xavier_linears(self)
        if self.config.pos == "rope2d":
            self.pos_embed.data.zero_()
        else:
            self.pos_embed.data.copy_(get_2d_sincos_pos_embed(self.pos_embed.shape[-1], self.config.grid).unsqueeze(0))

        init_embedders(self.x_embedder, self.t_embedder, self.y_embedder)
        if self.span_embedder is not None:  # after DiT's draws, so a one-time DiT initialises as before
            nn.init.normal_(self.span_embedder.mlp[0].weight, std=0.02)
            zero_span = [self.span_embedder.mlp[2]]  # the span adds nothing at init (config's span_embed)
        else:
            zero_span = []

        zero = [self.final_layer.linear, *zero_span]
        if self.conditioning == "adaln-zero":
            zero += [block.adaLN_modulation[-1] for block in self.blocks] + [self.final_layer.adaLN_modulation[-1]]
        for linear in zero:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """(N, T, p*p*C) -> (N, C, H, W) for a token grid (rows, columns), default the trained one;
        per-token features are ordered (p1, p2, c) as in the public DiT."""
        p, (h, w) = self.patch_size, grid or self.config.grid
        return rearrange(x, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=h, w=w, p1=p, p2=p)

    def pos_table(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position table of a token grid, added to the tokens: the stored (1, T, D) one at the trained
        grid (where public checkpoints keep it: bit-identical), else the same fixed sin-cos function of the
        grid (DiT §3.1), or 0 with rope2d (positions enter through q and k only)."""
        if tuple(grid) == self.config.grid:
            return self.pos_embed
        if self.config.pos == "rope2d":
            return self.pos_embed.new_zeros(())
        return get_2d_sincos_pos_embed(self.pos_embed.shape[-1], grid).unsqueeze(0).to(self.pos_embed)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass: less memory, ~1/3 more compute."""
        self.grad_checkpointing = enabled

    def compile_blocks(self, mode: str | None = None, backward: bool = False) -> bool:
        """torch.compile every transformer block in place (state-dict keys unchanged); True if it works.

        Compilation happens at the first call, so one dummy forward (and backward, for training) is
        run here; where no compiler works (no C++ toolchain, an unsupported platform) the blocks go
        back to eager and False is returned.
        """
        import warnings

        for block in self.blocks:
            block.compile(mode=mode)
        device = self.pos_embed.device
        x = torch.zeros(2, *self.input_shape, device=device)
        t, y = torch.zeros(2, device=device), torch.zeros(2, dtype=torch.long, device=device)
        try:
            with torch.set_grad_enabled(backward):
                out = self(x, t, y)
                if backward:
                    out.sum().backward()
            return True
        except Exception as e:  # noqa: BLE001 - any compiler problem means: run eager
            for block in self.blocks:
                block._compiled_call_impl = None
            self.compile_error = f"{type(e).__name__}: {str(e)[:200]}"
            warnings.warn(f"torch.compile failed ({self.compile_error}); running eagerly", stacklevel=2)
            return False
        finally:
            self.zero_grad(set_to_none=True)

    def rope_tables(self, device: torch.device, grid: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """rope.rope_2d's (cos, sin) for a patch grid (default the trained one), or None without RoPE.
        Recomputed per forward (a few thousand trig ops) rather than kept, so the state dict and devices
        stay as they are."""
        if not self.config.rope:
            return None
        h, w = grid or self.config.grid
        return rope_2d(h, w, self.config.hidden_size // self.num_heads, device=device)

    def _run(self, block, *args):
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """cond: {"y": labels (N,), "drop": (N,) optional} or labels (N,). "drop" (or the public
        code's force_drop_ids) is 1 where the label is replaced by the null class: training passes
        it (drawn per sample by the data stream) instead of the embedder's own random dropout."""
        cond = as_cond(cond)
        y, drop = cond["y"], cond.get("drop", force_drop_ids)
        if t.ndim == 0:  # allow one shared timestep
            t = t.expand(x.shape[0])
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        x = self.x_embedder(x) + self.pos_table(grid)  # (N, T, D), T = (H/p) * (W/p); 0 for rope2d
        rope = self.rope_tables(x.device, grid)
        t_emb = self.t_embedder(t)  # (N, D)
        if self.span_embedder is not None:  # no span given: 0, the instantaneous velocity (conditioning.SPAN)
            span = cond.get(SPAN)
            t_emb = t_emb + self.span_embedder(torch.zeros_like(t) if span is None else span.expand(t.shape))
        y_emb = self.y_embedder(y, self.training, drop)  # (N, D); random dropout only in train mode
        if self.conditioning in ("adaln-zero", "adaln"):
            c = t_emb + y_emb  # DiT §3.2: adaLN regresses from the sum of the two embeddings
            for block in self.blocks:
                x = self._run(block, x, c, rope)
            x = self.final_layer(x, c)
        elif self.conditioning == "in-context":
            n_img = x.shape[1]
            # DiT §3.2 in-context: t and y are two more tokens, like ViT's cls token ...
            x = torch.cat([x, t_emb.unsqueeze(1), y_emb.unsqueeze(1)], dim=1)  # (N, T+2, D)
            for block in self.blocks:
                x = self._run(block, x, None, rope)  # rope turns the first n_img tokens only
            x = self.final_layer(x[:, :n_img])  # ... removed before the final layer
        else:  # cross-attention
            context = torch.stack([t_emb, y_emb], dim=1)  # (N, 2, D)
            for block in self.blocks:
                x = self._run(block, x, context, rope)
            x = self.final_layer(x)
        return self.unpatchify(x, grid)  # (N, out_channels, H, W)


# --- Public-repo registry: DiT_models["DiT-XL/2"](**kwargs) as in facebookresearch/DiT -------------


def _constructor(name: str):
    base, patch = name.split("/")

    def make(**kwargs) -> DiT:
        return DiT(**{**PRESETS[base], "patch_size": int(patch), **kwargs})

    make.__name__ = make.__qualname__ = name.replace("-", "_").replace("/", "_")
    make.__doc__ = f"{name} (DiT Table 1); keyword arguments override DiT's constructor defaults."
    return make


DiT_S_2, DiT_S_4, DiT_S_8 = (_constructor(f"DiT-S/{p}") for p in (2, 4, 8))
DiT_B_2, DiT_B_4, DiT_B_8 = (_constructor(f"DiT-B/{p}") for p in (2, 4, 8))
DiT_L_2, DiT_L_4, DiT_L_8 = (_constructor(f"DiT-L/{p}") for p in (2, 4, 8))
DiT_XL_2, DiT_XL_4, DiT_XL_8 = (_constructor(f"DiT-XL/{p}") for p in (2, 4, 8))

DiT_models = {name: globals()[name.replace("-", "_").replace("/", "_")] for name in MODEL_NAMES}

# --- The registry entry: the key "dit" and how to configure and recognise it ----------------------

ARCH = Architecture(
    key="dit", config_from_dict=ModelConfig.from_dict, build=DiT.from_config,
    config_for_run=dit_config.config_for_run, check_run=dit_config.check_run,
    infer_config=dit_config.infer_config, describe=dit_config.describe, section=dit_config.DiTSection,
    any_size=True, takes_span=True,
)
