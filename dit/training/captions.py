"""Captions in a training run (`--arch text-dit`): which data has them, the vocabulary the network's tokenizer
is built with, each sample's caption as token ids in the data stream, and the preview's prompts.

Captioned data: the built-in scenes (`--data shapes-captions`, dit/data/shapes_captions.py: a caption drawn
from each scene's ground truth at every use); a Hugging Face dataset's caption column (--caption-column,
default "text": an imagefolder's metadata.jsonl, a saved dataset, parquet); WebDataset shards' .txt or json
"caption"; a latent cache written with `cache_latents.py --captions` (its chunks keep each image's caption).
A network that reads text trains on captions only, and captions train only a network that reads them: either
mismatch, a plain folder, a cache without captions or flips are refused in one line before anything is
written. Caption dropout for classifier-free guidance is the stream's label dropout (--class-dropout-prob):
the network reads a dropped caption as the empty one (dit/networks/text_dit.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from dit.errors import UserError
from dit.networks import get_architecture
from dit.networks.text_config import SHAPES_CAPTIONS
from dit.networks.video_config import SHAPES_VIDEO
from dit.training.config import SHAPES
from dit.networks.text_tokenizer import TextTokenizer, build_vocabulary

DEFAULT_CAPTION_COLUMN = "text"  # diffusers' training scripts' --caption_column default
PREVIEW_PROMPTS = 8


@dataclass
class Captions:
    """What a captioned run needs besides images: `text` for the network config ({"vocabulary": words}),
    and the preview's prompts."""

    text: dict
    prompts: list[str]
    stored: bool = False  # the data holds the frozen encoder's features of each caption (a latent cache): read them


def check_captions(config, cached=None) -> bool:
    """Whether the run trains on captions; the mismatches above are refused in one line. `cached`: the latent
    cache --data names (dit/data/latent_cache.py), or None."""
    reads = get_architecture(config.arch).reads_text
    if not reads:
        if config.data == SHAPES_CAPTIONS or config.caption_column:
            what = f"--data {config.data} holds captions, not classes" if config.data == SHAPES_CAPTIONS else \
                f"--caption-column {config.caption_column}: captions"
            raise UserError(f"{what}: train a text-conditioned network on them (--arch text-dit)")
        return False
    if cached is not None and not cached.captioned:
        raise UserError(f"--arch {config.arch} trains on captions, and latent cache {config.data} stores none: "
                        "re-encode it with `cache_latents.py --captions` (a caption column or shards' .txt)")
    if config.data in (SHAPES, SHAPES_VIDEO):
        raise UserError(f"--arch {config.arch} trains on captions, and --data {config.data} is the built-in "
                        f"{config.data} (classes): use --data {SHAPES_CAPTIONS}, a Hugging Face dataset with a "
                        "caption column (--caption-column), WebDataset shards with .txt captions, or a latent cache "
                        "written with --captions")
    if config.flip:
        raise UserError("--flip mirrors the images but not their captions ('on the left' would read wrong): add --no-flip")
    return True


def caption_column(config) -> str:
    """The caption column a text run reads from a Hugging Face dataset."""
    return config.caption_column or (DEFAULT_CAPTION_COLUMN if get_architecture(config.arch).reads_text else "")


def caption_settings(config, base=None) -> Captions:
    """The vocabulary and preview prompts of the run's captions: the built-in scenes' words and prompts, or
    every caption of `base` (read once, checked: a sample without one is refused) and its first prompts."""
    if config.data == SHAPES_CAPTIONS:
        from dit.data import shapes_captions

        words = " ".join(shapes_captions.vocabulary()) if config.text_tokenizer == "words" else ""
        return Captions(text={"vocabulary": words}, prompts=shapes_captions.preview_prompts())
    if base is None:  # before the data is read: any vocabulary sizes the network's probe
        return Captions(text={"vocabulary": "a"}, prompts=[])
    captions = base.captions()
    stored = stored_features(config, base)
    words = " ".join(build_vocabulary(captions)) if config.text_tokenizer == "words" and not config.text_encoder else ""
    longer = 0 if config.text_encoder else sum(  # a frozen encoder's tokenizer cuts its own
        len(TextTokenizer(config.text_tokenizer, words.split()).ids(c)) > config.text_length for c in captions)
    if longer:
        print(f"note: {longer} of {len(captions)} captions are longer than --text-length {config.text_length} tokens "
              "and are cut there", file=sys.stderr)
    return Captions(text={"vocabulary": words}, prompts=list(dict.fromkeys(c for c in captions if c))[:PREVIEW_PROMPTS],
                    stored=stored)


def stored_features(config, base) -> bool:
    """Whether the run reads a latent cache's stored encoder features (cache_latents.py --text-encoder): only with
    the very encoder (sha256) and length that wrote them; otherwise the captions are encoded as they are drawn,
    and a note says why the stored features are not used."""
    stored = getattr(base, "text_encoder", None)
    if not stored or not config.text_encoder:
        return False
    from dit.networks.frozen_text import describe_encoder

    same = describe_encoder(config.text_encoder)["text_encoder_sha256"] == stored["text_encoder_sha256"]
    if same and config.text_length == stored["text_length"]:
        return True
    why = "another encoder's" if not same else f"{stored['text_length']} tokens long, not --text-length {config.text_length}"
    print(f"note: the features stored in {config.data} are {why}; the captions are encoded during training instead",
          file=sys.stderr)
    return False


class CaptionIds:
    """The stream's caption hook (dit/data/stream.py TrainingItems): (index, rng) -> the network's cond entries
    for a caption of sample `index`, drawn with the sample's rng (a template and synonyms for the built-in
    scenes); with `stored`, the frozen encoder's reading kept in the latent cache (ids, mask and features)."""

    def __init__(self, base, encode_text, stored: bool = False):
        self.base, self.encode_text, self.stored = base, encode_text, stored

    def __call__(self, index: int, rng: np.random.Generator) -> dict:
        if self.stored:
            return self.base.text_features(index)
        return {k: v[0] for k, v in self.encode_text([self.base.caption(index, rng)]).items()}
