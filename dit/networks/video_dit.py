"""A video DiT (Latte, Ma et al. 2024; VDT, Lu et al. 2024): DiT's blocks over a clip's tokens.

forward(x, t, cond): x a clip (B, F, C, H, W) with F <= config.frames, t (B,), cond as DiT's plus,
for mask modelling, GIVEN (B, F, 1 or C, H, W; 1 where the position is given) and CLEAN (x's
shape: the given values), and for joint image-video training IMAGES (B,): x holds full-length clips
(config.frames) followed by independent images, kept out of every temporal part (dit/layout.py,
dit/data/joint.py).
It returns (B, F, out_channels, H, W).

Each frame is patchified as by DiT (same PatchEmbed, the same fixed 2-D sin-cos table), giving
tokens (B, F, N, D); a fixed 1-D sin-cos table over time (a buffer of `frames` rows, so any
shorter clip works) is added to the input of every temporal attention, not to the residual stream
(Latte adds it to the stream once): so while the temporal gates are 0 the network IS the image
DiT frame by frame, bit for bit, and `--init-from` starts from a working image model. Space and time mix
according to `factorization` (video_blocks.py). Conditioning is DiT's: c = t_emb + y_emb drives
adaLN-Zero in every block, the same vector for every frame and position.

Given frames (VDT's unified mask modelling, with its blind spot fixed): by default
(`given_conditioning` "replace") the network replaces x by CLEAN wherever GIVEN is 1, so every
process and sampler sees the given positions exactly without knowing about masks; the other
methods VDT compares (token concatenation, adaLN, cross-attention) are in video_given.py. Whatever
the method, the network is TOLD which tokens are given: a learned embedding `given_embed` is added
to every token whose patch is given (a token counts as given when all its elements are; training
masks are patch-aligned). VDT's released network gets the clean values but no flag, so a model
trained with 8 given frames cannot tell 4 given ones from noise.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from dit.networks.blocks import DiTBlock, FinalLayer
from dit.layout import CLEAN, GIVEN, IMAGES
from dit.networks.conditioning import as_cond
from dit.networks.layers import LabelEmbedder, PatchEmbed, TimestepEmbedder, get_1d_sincos_pos_embed, \
    get_2d_sincos_pos_embed, init_embedders, xavier_linears
from dit.networks.base import Blocks, GradCheckpointing, ImageInit
from dit.networks.dit import ARCH as DIT_ARCH
from dit.networks.catalog import Architecture
from dit.networks import video_config
from dit.networks.video_blocks import AttentionBlock, SplitHeadsBlock
from dit.networks.video_config import VideoConfig
from dit.networks.video_given import GivenConditioning

IMAGE_KEYS = ("x_embedder.", "t_embedder.", "y_embedder.", "pos_embed", "blocks.", "final_layer.")  # shared with DiT


class VideoDiT(nn.Module, GradCheckpointing, ImageInit, Blocks):
    image_arch = DIT_ARCH.key  # Latte's init (--init-from) reads an image DiT's checkpoint

    def __init__(self, config: VideoConfig):
        super().__init__()
        self.config = cfg = config
        D = cfg.hidden_size
        self.input_size, self.patch_size, self.frames = cfg.input_size, cfg.patch_size, cfg.frames
        self.in_channels, self.out_channels = cfg.in_channels, cfg.out_channels
        self.num_classes, self.null_class, self.learn_sigma = cfg.num_classes, cfg.null_class, cfg.learn_sigma
        self.grad_checkpointing = False

        self.x_embedder = PatchEmbed(cfg.input_size, cfg.patch_size, cfg.in_channels, D, bias=True)
        self.t_embedder = TimestepEmbedder(D, freq_shift=cfg.timestep_freq_shift)
        self.y_embedder = LabelEmbedder(cfg.num_classes, D, cfg.class_dropout_prob)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, D), requires_grad=False)  # as DiT's
        self.register_buffer("temporal_embed", get_1d_sincos_pos_embed(D, cfg.frames), persistent=False)
        self.given_embed = nn.Parameter(torch.zeros(D))
        self.given = GivenConditioning(cfg.given_conditioning, D, cfg.num_heads, cfg.depth, cfg.norm)

        options = dict(mlp=cfg.mlp, norm=cfg.norm, qk_norm=cfg.qk_norm)
        kind = cfg.factorization if cfg.temporal else None
        if kind == "split-heads":
            self.blocks = nn.ModuleList(
                SplitHeadsBlock(D, cfg.num_heads, cfg.mlp_ratio, **options) for _ in range(cfg.depth))
        else:
            self.blocks = nn.ModuleList(DiTBlock(D, cfg.num_heads, cfg.mlp_ratio, True, **options)
                                        for _ in range(cfg.depth))
        if kind in ("interleaved", "late-fusion"):
            self.temporal_blocks = nn.ModuleList(DiTBlock(D, cfg.num_heads, cfg.mlp_ratio, True, **options)
                                                 for _ in range(cfg.depth))
        elif kind == "factorized-attention":
            self.temporal_blocks = nn.ModuleList(AttentionBlock(D, cfg.num_heads, cfg.norm, cfg.qk_norm)
                                                 for _ in range(cfg.depth))
        else:
            self.temporal_blocks = nn.ModuleList()
        self.final_layer = FinalLayer(D, cfg.patch_size, self.out_channels, cfg.norm)
        self.initialize_weights()

    @classmethod
    def from_config(cls, cfg: VideoConfig) -> "VideoDiT":
        return cls(cfg)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """(F, C, H, W) of one clip at the full length: what the process's prior is drawn in."""
        return (self.frames, self.in_channels, self.input_size, self.input_size)

    def initialize_weights(self) -> None:
        """DiT's initialisation (dit.py: xavier Linears, N(0, 0.02) embeddings, the fixed tables) with
        every adaLN modulation and the final layer zero: each block, spatial or temporal, starts as
        the identity and the untrained network outputs 0. `given_embed` starts at 0 (no effect)."""
        xavier_linears(self)
        grid = self.input_size // self.patch_size
        self.pos_embed.data.copy_(get_2d_sincos_pos_embed(self.pos_embed.shape[-1], grid).unsqueeze(0))
        init_embedders(self.x_embedder, self.t_embedder, self.y_embedder)
        zero = [self.final_layer.linear, self.final_layer.adaLN_modulation[-1]]
        zero += [b.adaLN_modulation[-1] for b in (*self.blocks, *self.temporal_blocks)]
        for linear in zero:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
        self.given.zero_init()

    def image_state_dict_keys(self) -> list[str]:
        """The keys an image DiT of the same size provides exactly (Latte's init): all but the temporal parts."""
        if self.config.temporal and self.config.factorization == "split-heads":
            return []  # its blocks mix space and time in one attention: no image block maps onto them
        return [k for k in self.state_dict() if k.startswith(IMAGE_KEYS)]

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = enabled

    def _run(self, block, *args):
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def _spatial(self, block, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        B, Fr, N, D = x.shape  # sequences of the N tokens of one frame
        out = self._run(block, x.reshape(B * Fr, N, D), c.repeat_interleave(Fr, dim=0))
        return out.view(B, Fr, N, D)

    def _temporal(self, block, x: torch.Tensor, c: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > time.shape[0]:  # joint-training images after the clip: they skip time
            clip = self._temporal(block, x[:, :time.shape[0]], c, time)
            return torch.cat([clip, x[:, time.shape[0]:]], dim=1)
        B, Fr, N, D = x.shape  # sequences of the F tokens at one position; time (F, D)
        if isinstance(block, DiTBlock):
            args = (c.repeat_interleave(N, dim=0), None, time.unsqueeze(0))  # (c, rope, pos)
        else:
            args = (c.repeat_interleave(N, dim=0), time.unsqueeze(0))
        out = self._run(block, rearrange(x, "b f n d -> (b n) f d"), *args)
        return rearrange(out, "(b n) f d -> b f n d", b=B)

    def _given_tokens(self, given: torch.Tensor, shape) -> torch.Tensor:
        """(B, F, N) 1.0 where every element of the token's patch is given."""
        B, Fr = shape[:2]
        p = self.patch_size
        g = given.expand(shape).to(torch.float32).amin(dim=2)  # (B, F, H, W): given on every channel
        g = rearrange(g, "b f (h p1) (w p2) -> b f (h w) (p1 p2)", p1=p, p2=p).amin(-1)
        return g

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond, force_drop_ids: torch.Tensor | None = None):
        cond = as_cond(cond)
        y, drop = cond["y"], cond.get("drop", force_drop_ids)
        B, Fr = x.shape[:2]
        # Latte+IMG: a joint batch holds full-length clips with the images after them, so their count
        # is read off the shape; reading cond[IMAGES]'s values would cost a host sync every step.
        images = Fr - self.frames if IMAGES in cond else 0
        if IMAGES in cond and (images < 1 or cond[IMAGES].shape != (B,)):
            raise ValueError(f"a joint-training batch holds {self.frames}-frame clips plus at least one image and "
                             f"IMAGES (B,), got x {tuple(x.shape)} and IMAGES {tuple(cond[IMAGES].shape)}")
        if images and (not self.given.replaces or self.config.factorization == "split-heads"):
            raise ValueError("joint images pass the spatial blocks only: not with split-heads or given frames "
                             "entering by concat, adaLN or cross-attention (each would show them the clip)")
        if x.dim() != 5 or Fr - images > self.frames:
            raise ValueError(f"expected a clip (B, F <= {self.frames}, C, H, W), got {tuple(x.shape)}")
        given, clean = cond.get(GIVEN), cond.get(CLEAN)
        if given is not None:  # given positions never read the sampler's state (it drifts there, untrained):
            # in place they hold their clean values; the other methods see 0 there, so the given values
            # reach the network by the method compared alone, the same way in training and sampling
            held = clean.to(x.dtype) if self.given.replaces else x.new_zeros(())
            x = torch.where(given.expand(x.shape) > 0.5, held, x)
        if t.ndim == 0:
            t = t.expand(B)
        h = self._embed(x)  # (B, F, N, D)
        time = self.temporal_embed[:Fr - images].to(h.dtype)  # (F, D) of the clip's frames
        c = self.t_embedder(t) + self.y_embedder(y, self.training, drop)  # (B, D), DiT §3.2
        context = None
        if given is not None or not self.given.replaces:  # no GIVEN: nothing given, as training's unconditional masks
            flags = (torch.zeros(h.shape[:3], device=h.device) if given is None
                     else self._given_tokens(given, x.shape)).to(h.dtype)  # (B, F, N)
            h = h + flags.unsqueeze(-1) * self.given_embed
            if not self.given.replaces:
                every = torch.cat([time, time.new_zeros(images, time.shape[1])])  # joint images: no time
                context = self.given.context(self._embed(torch.zeros_like(x) if clean is None else clean.to(x.dtype)),
                                             flags, every)
                if self.given.mode == "concat":  # the context frames ride along time, at their frames' positions
                    h = torch.cat([h, context + flags.unsqueeze(-1) * self.given_embed], dim=1)  # (B, 2F, N, D)
                    time = torch.cat([time, time])
                elif self.given.mode == "adaln":
                    c = c + context
        h = self._blocks(h, c, time, context)
        h = h[:, :Fr]  # the main stream (concat: the context frames are dropped)
        N = h.shape[2]
        out = self.final_layer(h.reshape(B * Fr, N, -1), c.repeat_interleave(Fr, dim=0))  # (B*F, N, p*p*C_out)
        p, side = self.patch_size, self.input_size // self.patch_size
        return rearrange(out, "(b f) (h w) (p1 p2 c) -> b f c (h p1) (w p2)", b=B, h=side, w=side, p1=p, p2=p)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with DiT's 2-D table, frame by frame: (B, F, C, H, W) -> (B, F, N, D)."""
        h = self.x_embedder(rearrange(x, "b f c h w -> (b f) c h w")) + self.pos_embed  # (B*F, N, D)
        return rearrange(h, "(b f) n d -> b f n d", b=x.shape[0])

    def _blocks(self, h: torch.Tensor, c: torch.Tensor, time: torch.Tensor, context) -> torch.Tensor:
        cross = self.given.mode == "cross-attention"

        def spatial(i, h):
            h = self._spatial(self.blocks[i], h, c)
            return self.given.attend(i, h, context) if cross else h

        kind = self.config.factorization if self.config.temporal else None
        depth = len(self.blocks)
        if kind == "interleaved":  # Latte variant 1: spatial, temporal, spatial, ...
            for i in range(depth):
                h = self._temporal(self.temporal_blocks[i], spatial(i, h), c, time)
        elif kind == "late-fusion":  # variant 2: every spatial block, then every temporal block
            for i in range(depth):
                h = spatial(i, h)
            for temporal in self.temporal_blocks:
                h = self._temporal(temporal, h, c, time)
        elif kind == "factorized-attention":  # variant 3 (VDT): temporal attention, then a spatial block
            for i in range(depth):
                h = spatial(i, self._temporal(self.temporal_blocks[i], h, c, time))
        elif kind == "split-heads":  # variant 4: half the heads over space, half over time; its one
            # attention mixes both, so the time table joins the stream (as Latte's) and no image init applies
            h = h + time[None, :, None]
            for i, block in enumerate(self.blocks):
                h = self._run(block, h, c)
                h = self.given.attend(i, h, context) if cross else h
        else:  # no temporal parts: every frame alone through the image DiT
            for i in range(depth):
                h = spatial(i, h)
        return h


ARCH = Architecture(
    key="video-dit", config_from_dict=VideoConfig.from_dict, build=VideoDiT.from_config,
    config_for_run=video_config.config_for_run, check_run=video_config.check_run, describe=video_config.describe,
    data_kind="clip", section=video_config.VideoSection, cpu_defaults=video_config.CPU_DEFAULTS,
    saved_before=video_config.saved_before,
)
