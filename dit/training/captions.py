"""Captions in a training run (`--arch text-dit`): which data has them, the vocabulary the network's tokenizer
is built with, each sample's caption as token ids in the data stream, and the preview's prompts.

Captioned data is the built-in scenes (`--data shapes-captions`, dit/data/shapes_captions.py: a caption drawn
from each scene's ground truth at every use). A network that reads text trains on captions only, and
captions train only a network that reads them: either mismatch is refused in one line before anything is
read. Caption dropout for classifier-free guidance is the stream's label dropout (--class-dropout-prob):
the network reads a dropped caption as the empty one (dit/networks/text_dit.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dit.errors import UserError
from dit.networks import get_architecture
from dit.networks.text_config import SHAPES_CAPTIONS


@dataclass
class Captions:
    """What a captioned run needs besides images: `text` for the network config ({"vocabulary": words}),
    and the preview's prompts."""

    text: dict
    prompts: list[str]


def check_captions(config) -> bool:
    """Whether the run trains on captions; a network that reads text without them, or captions with a network
    that does not read them, or flips that would contradict them, is refused in one line."""
    captioned = config.data == SHAPES_CAPTIONS
    reads = get_architecture(config.arch).reads_text
    if config.caption_column:
        raise UserError("--caption-column: captions of folders, Hugging Face datasets and shards are not read yet; "
                        f"train on the built-in captioned scenes with --data {SHAPES_CAPTIONS}")
    if captioned and not reads:
        raise UserError(f"--data {config.data} holds captions, not classes: train a text-conditioned network on it "
                        "(--arch text-dit)")
    if reads and not captioned:
        raise UserError(f"--arch {config.arch} trains on captions: use --data {SHAPES_CAPTIONS} (the built-in captioned "
                        "scenes)")
    if captioned and config.flip:
        raise UserError("--flip mirrors the images but not their captions ('on the left' would read wrong): add --no-flip")
    return captioned


def caption_settings(config) -> Captions:
    """The vocabulary and preview prompts of the run's captioned data."""
    from dit.data import shapes_captions

    words = " ".join(shapes_captions.vocabulary()) if config.text_tokenizer == "words" else ""
    return Captions(text={"vocabulary": words}, prompts=shapes_captions.preview_prompts())


class CaptionIds:
    """The stream's caption hook (dit/data/stream.py TrainingItems): (index, rng) -> the network's cond entries
    for a caption of sample `index`, drawn with the sample's rng (a template and synonyms for the built-in
    scenes)."""

    def __init__(self, base, encode_text):
        self.base, self.encode_text = base, encode_text

    def __call__(self, index: int, rng: np.random.Generator) -> dict:
        return {k: v[0] for k, v in self.encode_text([self.base.caption(index, rng)]).items()}
