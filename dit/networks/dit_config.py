"""DiT's configuration: one typed, validated dataclass and the paper's named presets.

The paper's models (DiT Table 1) are a width/depth family {S, B, L, XL} crossed with a patch
size {2, 4, 8}: "DiT-XL/2" is XL with 2x2 patches. Everything else (latent size, channels,
classes, conditioning variant of §3.2) is a flat override of `ModelConfig`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from dit.errors import UserError
from dit.networks.conditioning import IMAGENET_CLASSES, classes_in_table, null_class

CONDITIONINGS = ("adaln-zero", "adaln", "cross-attention", "in-context")  # DiT §3.2, Table 4
# LightningDiT's block options (Yao et al. 2025); the first of each is the public DiT's.
MLPS = ("gelu", "swiglu")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("sincos", "rope2d", "sincos+rope2d")


@dataclass(frozen=True)
class DiTSection:
    """DiT's training flags (`--arch dit`; the video DiT's section extends it, so both declare them alike)."""

    conditioning: str = "adaln-zero"  # DiT §3.2: adaln-zero, adaln, cross-attention, in-context
    mlp: str = "gelu"  # gelu (DiT) or swiglu (LightningDiT, parameter-matched)
    norm: str = "layernorm"  # layernorm (DiT) or rmsnorm, for every norm of the blocks and final layer
    pos: str = "sincos"  # sincos (DiT's added table), rope2d (rotary on q, k) or sincos+rope2d (LightningDiT)
    qk_norm: bool = False  # per-head RMSNorm of q and k (LightningDiT)
    # A checkpoint, export or run whose weights start the network (dit/training/setup.py init_weights): a DiT
    # copies every tensor it has of the same shape (a span embedding a flow DiT lacks starts fresh: MeanFlow,
    # shortcut or reflow from a flow run); a video DiT its spatial blocks from an image DiT (Latte).
    init_from: str = ""


BLOCK_DEFAULTS = {k: getattr(DiTSection, k) for k in ("mlp", "norm", "pos", "qk_norm")}  # the public DiT's

# DiT Table 1. Values are ModelConfig fields, so `PRESETS[name]` can be compared with a config.
PRESETS = {
    "DiT-S": dict(depth=12, hidden_size=384, num_heads=6),
    "DiT-B": dict(depth=12, hidden_size=768, num_heads=12),
    "DiT-L": dict(depth=24, hidden_size=1024, num_heads=16),
    "DiT-XL": dict(depth=28, hidden_size=1152, num_heads=16),
}
PATCH_SIZES = (2, 4, 8)
MODEL_NAMES = [f"{base}/{p}" for base in PRESETS for p in PATCH_SIZES]



@dataclass(frozen=True)
class ModelConfig:
    conditionings: ClassVar[tuple[str, ...]] = CONDITIONINGS  # what `conditioning` may be (a subclass's own)

    input_size: int = 32  # latent side (256px images through the 8x SD VAE)
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1  # label dropout for classifier-free guidance; 1: an unconditional model
    num_classes: int = IMAGENET_CLASSES  # 0: unconditional, the null label only (conditioning.is_unconditional)
    learn_sigma: bool = True  # second half of output channels = variance interpolation (IDDPM)
    conditioning: str = "adaln-zero"
    # Timestep frequencies exp(-ln(1e4) k / (128 - shift)): 0 is DiT's (every file written before
    # this field existed), 1 is diffusers' DiTTransformer2DModel's, so weights read from diffusers
    # compute what diffusers computes (layers.timestep_embedding).
    timestep_freq_shift: int = 0
    # Block options, all off by default (the public DiT). mlp "swiglu": SiLU-gated MLP at
    # 2/3 the width, parameter-matched (layers.swiglu_hidden). norm "rmsnorm": every norm of the
    # blocks and final layer is an RMSNorm. pos: "sincos" adds DiT's fixed table to the tokens;
    # "rope2d" rotates q and k instead (rope.py) and pos_embed holds zeros; "sincos+rope2d" does
    # both, as LightningDiT. qk_norm: learnable per-head RMSNorm of q and k.
    mlp: str = "gelu"
    norm: str = "layernorm"
    pos: str = "sincos"
    qk_norm: bool = False
    # The latent's width where it differs from its height input_size (0: square, every file written
    # before this field existed). The network takes any H x W its patch tiles (pos tables are functions
    # of the grid); this is the size it is trained on and its pos_embed is stored for.
    input_width: int = 0
    # A second timestep embedder for the span (cond[SPAN]: MeanFlow's t - r, a shortcut model's step),
    # added to t's embedding; its output layer starts at zero, so at init (or started from a flow DiT) the
    # network is the one-time network. Set by the process (`Process.reads_span`), not a flag.
    span_embed: bool = False

    def __post_init__(self):
        self._check_types()
        for name in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.num_classes < 0:  # 0: unconditional (conditioning.is_unconditional)
            raise UserError(f"num_classes must be >= 0 (0: an unconditional model), got {self.num_classes}")
        if self.mlp_ratio <= 0:
            raise UserError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if self.hidden_size % self.num_heads:
            raise UserError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                f"choose a divisor such as {[h for h in range(1, 33) if self.hidden_size % h == 0][-3:]} "
                f"(the paper uses 64-wide heads: num_heads = hidden_size / 64)"
            )
        if self.input_width < 0:
            raise UserError(f"input_width must be >= 0 (0: square), got {self.input_width}")
        if self.width % self.patch_size:
            raise UserError(f"a latent {self.width} wide is not divisible by patch size {self.patch_size}; use an image "
                            f"width whose latent width is a multiple of {self.patch_size}")
        if self.input_size % self.patch_size:
            side = self.input_size
            ok = [p for p in PATCH_SIZES if side % p == 0] or [1]
            nearest = round(side / self.patch_size) * self.patch_size or self.patch_size
            raise UserError(
                f"a {side}x{side} latent (input_size {side}) is not divisible by patch size {self.patch_size}; "
                f"use an image size whose latent side is a multiple of {self.patch_size} (e.g. input_size "
                f"{nearest}) or patch size {ok[-1]}"
            )
        if self.conditioning not in self.conditionings:
            raise UserError(f"unknown conditioning '{self.conditioning}'; choose one of {', '.join(self.conditionings)}")
        for name, choices in (("mlp", MLPS), ("norm", NORMS), ("pos", POSITIONS)):
            if getattr(self, name) not in choices:
                raise UserError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(choices)}")
        if self.rope and (self.hidden_size // self.num_heads) % 4:
            raise UserError(f"pos {self.pos} needs a head width (hidden_size / num_heads = "
                            f"{self.hidden_size // self.num_heads}) divisible by 4: half the dims turn with the row, half with the column")
        if self.timestep_freq_shift not in (0, 1):
            raise UserError(f"timestep_freq_shift must be 0 (DiT's frequencies) or 1 (diffusers'), got {self.timestep_freq_shift}")
        if not 0.0 <= self.class_dropout_prob <= 1.0:  # 1: unconditional (layers.LabelEmbedder)
            raise UserError(f"class_dropout_prob must be in [0, 1] (1: an unconditional model), got {self.class_dropout_prob}")

    def _check_types(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            want = {"int": int, "float": float, "bool": bool, "str": str}[f.type]
            # bool is an int subclass in Python: reject True as a depth, accept 4 as mlp_ratio 4.0.
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v))
            elif not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise UserError(f"{f.name} must be of type {f.type}, got {v!r} ({type(v).__name__})")

    @property
    def out_channels(self) -> int:
        # learn_sigma: the model also predicts the variance interpolation (IDDPM), DiT §3.1
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def rope(self) -> bool:
        return "rope2d" in self.pos

    @property
    def null_class(self) -> int:
        return null_class(self.num_classes)

    @property
    def width(self) -> int:
        """The latent's width (input_size is its height)."""
        return self.input_width or self.input_size

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of patch tokens at the trained size."""
        return self.input_size // self.patch_size, self.width // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not self.input_width:  # square: the dict (and so every export's header) as before the field existed
            del d["input_width"]
        if not self.span_embed:  # likewise for one-time networks
            del d["span_embed"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return config_from_dict(cls, d, "model")

    def replace(self, **overrides) -> "ModelConfig":
        return ModelConfig.from_dict({**self.to_dict(), **overrides})


def config_from_dict(cls, d: dict, what: str):
    """A config dataclass from a checkpoint's dict; an unknown key is a UserError naming the valid
    ones (every architecture's config reads its dict through this)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise UserError(f"unknown {what} config keys {unknown}; valid keys are {sorted(known)}")
    return cls(**d)


def check_image_size(image_size: int, downsample: int, patch_size: int) -> int:
    """Latent side for `image_size` pixels through an autoencoder that shrinks by `downsample`
    (8 for the SD VAE, 1 in pixel space); a size the patch does not tile is a UserError."""
    if image_size <= 0 or image_size % downsample:
        raise UserError(f"image size {image_size} is not a positive multiple of the autoencoder's factor {downsample}")
    latent = image_size // downsample
    if latent % patch_size:
        step = patch_size * downsample
        raise UserError(
            f"image size {image_size} gives a {latent}x{latent} latent, which patch size {patch_size} does not divide; "
            f"use an image size that is a multiple of {step} (e.g. {max(step, image_size // step * step)})"
        )
    return latent


def preset_config(name: str, **overrides) -> ModelConfig:
    """Config of a paper model, e.g. preset_config("DiT-XL/2", input_size=64) for 512px images."""
    base, _, patch = name.partition("/")
    if name not in MODEL_NAMES:
        raise UserError(f"unknown model '{name}'; choose one of {', '.join(MODEL_NAMES)}")
    return ModelConfig.from_dict({**PRESETS[base], "patch_size": int(patch), **overrides})


def config_for_run(run, data: dict) -> ModelConfig:
    """The DiT of a training run: the `--model` preset, resized by --hidden-size / --depth /
    --num-heads, on the data's channels, latent side and classes (see networks/catalog.py)."""
    return preset_config(run.model, **run_fields(run, data))


def run_fields(run, data: dict) -> dict:
    """The ModelConfig fields a training run sets over its `--model` preset (config_for_run's)."""
    overrides = {k: getattr(run, k) for k in ("hidden_size", "depth", "num_heads") if getattr(run, k) is not None}
    if "hidden_size" in overrides and "num_heads" not in overrides:
        overrides["num_heads"] = max(1, overrides["hidden_size"] // 64)  # the paper's 64-wide heads
    if run.model not in MODEL_NAMES:
        raise UserError(f"unknown model '{run.model}'; choose one of {', '.join(MODEL_NAMES)}")
    patch = int(run.model.rpartition("/")[2])
    if "image_size" in data:  # the message in pixels, the unit the user chose
        check_image_size(data["image_size"], data.get("downsample", 1), patch)
    return dict(
        input_size=data["input_size"], input_width=data.get("input_width", 0),
        in_channels=data["in_channels"], num_classes=data["num_classes"],
        conditioning=run.conditioning, learn_sigma=run.learn_sigma, class_dropout_prob=run.class_dropout_prob,
        mlp=run.mlp, norm=run.norm, pos=run.pos, qk_norm=run.qk_norm, span_embed=bool(data.get("span")), **overrides,
    )


def check_run(run) -> None:
    """Validate a run's network flags (hidden size vs heads, preset, conditioning) before any data
    is read: any input side the patch divides, any channel and class count will do here."""
    patch = int(run.model.rpartition("/")[2]) if run.model in MODEL_NAMES else 1
    config_for_run(run, {"in_channels": 4, "input_size": patch, "num_classes": 10})


def _swiglu_ratio(hidden: int, swiglu_width: int) -> float:
    """An mlp_ratio whose SwiGLU width (layers.swiglu_hidden: 2 * int(D * r) // 3) is swiglu_width."""
    for ratio in (4.0, (3 * swiglu_width + 1) // 2 / hidden):
        if 2 * int(hidden * ratio) // 3 == swiglu_width:
            return ratio
    raise UserError(f"no mlp_ratio gives a SwiGLU of width {swiglu_width} at hidden size {hidden}; pass --model")


def infer_config(sd: dict) -> ModelConfig:
    """Architecture of a public-layout adaLN-Zero state dict, read off its tensor shapes.

    Of the block options, swiglu (mlp.fc1_g), qk_norm (attn.q_norm) and rope2d (an all-zero
    pos_embed) leave a trace; rmsnorm does not (adaLN norms have no weights) and sincos+rope2d
    reads as sincos: such files need their config.
    """
    try:
        _, tokens, hidden = sd["pos_embed"].shape
        _, in_ch, p, _ = sd["x_embedder.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        out_ch = sd["final_layer.linear.weight"].shape[0] // (p * p)
        swiglu = "blocks.0.mlp.fc1_g.weight" in sd
        mlp_hidden = sd["blocks.0.mlp.fc1_g.weight" if swiglu else "blocks.0.mlp.fc1.weight"].shape[0]
        classes = classes_in_table(sd["y_embedder.embedding_table.weight"].shape[0])
    except (KeyError, ValueError) as e:
        raise UserError(f"cannot tell the architecture from this state dict (missing {e}); pass --model") from None
    # Heads leave no trace in the weights: take the paper preset of this width, else 64-wide heads.
    heads = next((p_["num_heads"] for p_ in PRESETS.values() if p_["hidden_size"] == hidden), max(1, hidden // 64))
    return ModelConfig(
        input_size=int(round(tokens**0.5)) * p, patch_size=p, in_channels=in_ch, hidden_size=hidden,
        depth=depth, num_heads=heads, num_classes=classes, learn_sigma=out_ch == 2 * in_ch,
        mlp_ratio=_swiglu_ratio(hidden, mlp_hidden) if swiglu else mlp_hidden / hidden,
        mlp="swiglu" if swiglu else "gelu", qk_norm="blocks.0.attn.q_norm.weight" in sd,
        pos="sincos" if bool(sd["pos_embed"].any()) else "rope2d", span_embed="span_embedder.mlp.0.weight" in sd,
    )


def describe(cfg: ModelConfig) -> str:
    name = next((n for n, p in PRESETS.items() if all(getattr(cfg, k) == v for k, v in p.items())), None)
    arch = f"{name}/{cfg.patch_size}" if name else f"depth {cfg.depth}, hidden {cfg.hidden_size}, patch {cfg.patch_size}"
    options = [f"{k} {getattr(cfg, k)}" for k in ("mlp", "norm", "pos") if getattr(cfg, k) != BLOCK_DEFAULTS[k]]
    options += ["qk-norm"] * cfg.qk_norm + ["span-embedding"] * cfg.span_embed
    extra = f" ({', '.join(options)})" if options else ""
    shape = f"{cfg.input_size}x{cfg.width}x{cfg.in_channels}"
    return f"{arch}{extra} on a {shape} input with {cfg.num_classes} classes"
