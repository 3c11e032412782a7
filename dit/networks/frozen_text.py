"""A frozen `transformers` text encoder from a local directory (`train.py --arch text-dit --text-encoder DIR`): CLIP's
text model or T5's encoder, as PixArt-α reads T5 and SD3 reads CLIP and T5.

The directory is what `save_pretrained` writes for the model (config.json, model.safetensors) and its tokenizer
(tokenizer.json, ...); nothing is fetched. The text DiT's config records the directory, the features' width
and the weights' sha256, and a checkpoint whose encoder is gone or changed is refused in one line when it is
read. The encoder is never part of the network's state dict or optimiser: it is loaded once per process and
shared (a network and its EMA copy hold only the directory's name), and its features are kept per caption
(FEATURE_CACHE captions, least recently used out), so each caption is encoded once in a run, as PixArt
caches T5's.

Features: the last hidden state at the real tokens, zero at padding. The tokenizer pads to the config's
`text_length` with its attention mask (conditioning.TEXT_MASK); the empty caption has no real token at all
(not even BOS/EOS): the null text of the text DiT.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import torch

from dit.digest import sha256_of
from dit.errors import UserError

ENCODERS = {"clip_text_model": "CLIPTextModel", "clip": "CLIPTextModel", "t5": "T5EncoderModel",
            "umt5": "UMT5EncoderModel"}  # config.json's model_type -> the transformers class read
WEIGHTS = ("model.safetensors",)
FEATURE_CACHE = 4096
_LOADED: dict[tuple[str, int], "FrozenTextEncoder"] = {}


def describe_encoder(path: str) -> dict:
    """{"text_dim", "text_encoder_sha256"} of the encoder directory `path`, checked: a transformers text encoder
    of a known kind with safetensors weights and a tokenizer."""
    root = Path(path).expanduser()
    config = root / "config.json"
    if not config.is_file():
        raise UserError(f"--text-encoder {path}: no config.json there; give a directory written by save_pretrained "
                        "(a CLIP text model or a T5 encoder, with its tokenizer)")
    meta = json.loads(config.read_text())
    kind = meta.get("model_type")
    if kind not in ENCODERS:
        raise UserError(f"--text-encoder {path}: model_type {kind!r} is not a text encoder read here; one of "
                        f"{', '.join(sorted(ENCODERS))}")
    weights = next((root / w for w in WEIGHTS if (root / w).is_file()), None)
    if weights is None:
        raise UserError(f"--text-encoder {path}: no model.safetensors (weights are read as safetensors only)")
    if not any((root / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json")):
        raise UserError(f"--text-encoder {path}: no tokenizer files; save the tokenizer beside the model")
    width = meta.get("hidden_size") or meta.get("d_model") or meta.get("text_config", {}).get("hidden_size")
    return {"text_dim": int(width), "text_encoder_sha256": sha256_of(weights)}


class FrozenTextEncoder:
    """The tokenizer and model of one encoder directory, frozen (eval mode, no gradients)."""

    def __init__(self, path: str, length: int):
        import transformers

        root = str(Path(path).expanduser())
        kind = json.loads((Path(root) / "config.json").read_text())["model_type"]
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(root, local_files_only=True)
        self.model = getattr(transformers, ENCODERS[kind]).from_pretrained(root, local_files_only=True).eval()
        self.model.requires_grad_(False)
        self.length = length
        self._cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, length) long, mask (B, length) bool); an empty caption is all padding, its mask all False."""
        out = self.tokenizer(list(captions), padding="max_length", max_length=self.length, truncation=True,
                             return_tensors="pt")
        mask = out["attention_mask"].bool()
        mask[[i for i, c in enumerate(captions) if not c.strip()]] = False
        return out["input_ids"].long(), mask

    @torch.no_grad()
    def features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, S, D) last hidden states, zero at padding, each row computed once (cached by its real tokens)."""
        keys = [bytes(i[m].to(torch.int64).cpu().numpy().tobytes()) for i, m in zip(ids, mask)]
        todo = [k for k in dict.fromkeys(keys) if k not in self._cache and k]
        if todo:
            rows = [keys.index(k) for k in todo]
            hidden = self.model(input_ids=ids[rows].cpu(), attention_mask=mask[rows].cpu().long()).last_hidden_state
            for k, h, m in zip(todo, hidden, mask[rows].cpu()):
                self._cache[k] = (h * m.unsqueeze(-1)).float()
                if len(self._cache) > FEATURE_CACHE:
                    self._cache.popitem(last=False)
        width = self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model
        out = torch.zeros(len(keys), ids.shape[1], width)
        for i, k in enumerate(keys):
            if k:  # the empty caption: zeros
                self._cache.move_to_end(k)
                out[i] = self._cache[k][: ids.shape[1]]
        return out.to(ids.device)


@lru_cache(maxsize=None)
def _resolved(path: str) -> str:
    """The directory's absolute path, resolved once (frozen_encoder runs at every forward)."""
    return str(Path(path).expanduser().resolve())


def frozen_encoder(path: str, length: int, sha256: str = "") -> FrozenTextEncoder:
    """The process's shared encoder of `path`; `sha256`: the weights the network was trained with (a checkpoint's
    record), refused in one line when the directory now holds others."""
    key = (_resolved(path), length)
    if key not in _LOADED:
        found = describe_encoder(path)
        if sha256 and found["text_encoder_sha256"] != sha256:
            raise UserError(f"the text encoder at {path} is not the one this network was trained with (sha256 "
                            f"{found['text_encoder_sha256'][:12]}..., recorded {sha256[:12]}...)")
        _LOADED[key] = FrozenTextEncoder(path, length)
    return _LOADED[key]
