"""The text-conditioned DiT's configuration (`--arch text-dit`, text_dit.py): DiT's config plus the caption path.

Presets are DiT's names (DiT-S/2 ... DiT-XL/8, Table 1) with the same resizing flags. What `--conditioning`
means for captions (TEXT_CONDITIONINGS):
    adaln-zero       the baseline: the pooled caption (mean of its token features) is added to t's embedding
                     and drives adaLN-Zero, as DiT's class embedding does (DiT §3.2)
    cross-attention  PixArt-α: cross-attention to the caption's tokens in every block, after the
                     self-attention; t drives adaLN-single (one projection shared by all blocks)
    joint            SD3's MMDiT: caption and image tokens attend jointly, each with its own weights; t plus
                     the pooled caption drive both streams' adaLN
The caption path (text_encoder.py): a trainable transformer of `text_depth` blocks at width `text_width`
(0: the DiT's) over `text_length` tokens of the `text_tokenizer` (text_tokenizer.py: "words", whose
`vocabulary` is recorded here as space-separated words, or "bytes"). Caption dropout for classifier-free
guidance is the label dropout (`class_dropout_prob`, train.py --class-dropout-prob): a dropped caption is
the empty one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from dit.errors import UserError
from dit.networks import dit_config
from dit.networks.conditioning import NO_CLASSES
from dit.networks.dit_config import PRESETS, DiTSection, ModelConfig
from dit.networks.text_tokenizer import TOKENIZERS, TextTokenizer

TEXT_CONDITIONINGS = ("adaln-zero", "cross-attention", "joint")
SHAPES_CAPTIONS = "shapes-captions"  # --data of the built-in captioned scenes (dit/data/shapes_captions.py)
# `train.py --arch text-dit` over the CPU demo: the captioned scenes at 32 px (a 3 x 3 grid of ~11 px cells)
# in 4 x 4 patches (the demo's 64 tokens), no flips (they would swap "left" and "right"), one preview per prompt.
CPU_DEFAULTS = dict(data=SHAPES_CAPTIONS, image_size=32, model="DiT-S/4", flip=False, samples_per_class=1)


@dataclass(frozen=True)
class TextSection(DiTSection):
    """The text DiT's training flags (`--arch text-dit`): DiT's, with --conditioning read as above."""

    text_tokenizer: str = "words"  # words (a vocabulary of the training captions) or bytes (UTF-8)
    text_length: int = 32  # tokens a caption is cut to (the encoder's position table)
    text_depth: int = 2  # blocks of the trainable text encoder
    text_width: int = 0  # its width (0: the DiT's hidden size)
    # A local transformers text encoder directory (CLIP's text model, T5's encoder), frozen, instead of the
    # trainable one: its tokenizer, --text-length tokens (dit/networks/frozen_text.py)
    text_encoder: str = ""

    def __post_init__(self):
        if self.text_tokenizer not in TOKENIZERS:
            raise UserError(f"--text-tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.text_tokenizer!r}")
        if self.text_length < 1 or self.text_depth < 0 or self.text_width < 0:
            raise UserError("--text-length >= 1, --text-depth >= 0 and --text-width >= 0 (0: the DiT's width), please")


@dataclass(frozen=True)
class TextConfig(ModelConfig):
    conditionings: ClassVar[tuple[str, ...]] = TEXT_CONDITIONINGS

    num_classes: int = NO_CLASSES  # captions, not labels
    text_tokenizer: str = "words"
    vocabulary: str = ""  # the word tokenizer's words, space-separated, in id order
    text_length: int = 32
    text_depth: int = 2
    text_width: int = 0  # 0: hidden_size
    text_heads: int = 0  # 0: num_heads
    # A frozen transformers encoder instead (frozen_text.py): its directory, features' width and weights' sha256.
    text_encoder: str = ""
    text_dim: int = 0
    text_encoder_sha256: str = ""

    def __post_init__(self):
        super().__post_init__()
        if self.num_classes != NO_CLASSES:
            raise UserError(f"a text DiT conditions on captions, not classes: num_classes must be 0, got {self.num_classes}")
        if self.pos != "sincos" or self.span_embed:
            raise UserError("the text DiT takes --pos sincos and one time (no few-step process) for now")
        if self.text_length < 1 or self.text_depth < 0 or self.text_width < 0 or self.text_heads < 0:
            raise UserError("text_length >= 1, text_depth >= 0, text_width >= 0 and text_heads >= 0, please")
        if self.text_encoder:
            if self.text_dim < 1:
                raise UserError("a frozen text encoder's config records its features' width (text_dim >= 1)")
        elif self.encoder_width % self.encoder_heads:
            raise UserError(f"text width {self.encoder_width} is not divisible by {self.encoder_heads} heads")
        else:
            self.tokenizer  # noqa: B018 - a word tokenizer without words is refused here

    @property
    def encoder_width(self) -> int:
        """The width of the caption features the DiT reads."""
        return self.text_dim if self.text_encoder else self.text_width or self.hidden_size

    @property
    def encoder_heads(self) -> int:
        return self.text_heads or self.num_heads

    @property
    def tokenizer(self) -> TextTokenizer:
        return TextTokenizer(self.text_tokenizer, self.vocabulary.split())

    def replace(self, **overrides) -> "TextConfig":
        return TextConfig.from_dict({**self.to_dict(), **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> "TextConfig":
        return dit_config.config_from_dict(cls, d, "text DiT")


def config_for_run(run, data: dict) -> TextConfig:
    """The text DiT of a training run: DiT's `--model` preset and resizing on the data, with the caption path;
    data["text"] holds what the captions decided ({"vocabulary": ...} for the word tokenizer)."""
    fields = dit_config.run_fields(run, {**data, "num_classes": NO_CLASSES})
    base, _, patch = run.model.partition("/")
    text = data.get("text") or {}
    frozen = {}
    if run.text_encoder:
        from dit.networks.frozen_text import describe_encoder

        frozen = {"text_encoder": run.text_encoder, **describe_encoder(run.text_encoder)}
    return TextConfig.from_dict({**PRESETS[base], "patch_size": int(patch), **fields,
                                 "text_tokenizer": run.text_tokenizer, "vocabulary": "" if frozen else text.get(
                                     "vocabulary", ""), "text_length": run.text_length, "text_depth": run.text_depth,
                                 "text_width": run.text_width, **frozen})


def check_run(run) -> None:
    """The network flags, before any caption is read (any vocabulary will do here)."""
    patch = int(run.model.rpartition("/")[2]) if run.model in dit_config.MODEL_NAMES else 1
    config_for_run(run, {"in_channels": 3, "input_size": patch, "text": {"vocabulary": "a"}})


def describe(cfg: TextConfig) -> str:
    image = dit_config.describe(ModelConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(ModelConfig)}))
    image = image.replace(" with 0 classes", "")
    if cfg.text_encoder:
        return (f"text-conditioned ({cfg.conditioning}) {image}; frozen text encoder {cfg.text_encoder} (width "
                f"{cfg.text_dim}) over {cfg.text_length} tokens")
    words = f"{len(cfg.vocabulary.split())} words" if cfg.text_tokenizer == "words" else "bytes"
    return (f"text-conditioned ({cfg.conditioning}) {image}; text encoder of {cfg.text_depth} blocks at width "
            f"{cfg.encoder_width} over {cfg.text_length} tokens ({words})")
