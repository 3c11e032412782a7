"""The README's library snippet runs as written (on a tiny local export instead of the 2.7 GB
public checkpoint, and with 5 sampler steps instead of 250)."""

import re

import torch
from conftest import ROOT, TINY, randomize

from dit.io.checkpoint import save_export
from dit.networks.dit import DiT


def test_library_snippet_runs(tmp_path):
    tiny_export = tmp_path / "tiny-imagenet.safetensors"  # ImageNet's 1000 classes, a tiny network
    save_export(tiny_export, randomize(DiT(**{**TINY, "num_classes": 1000})), image_size=64, vae="ema")
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using the library"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'load_model("DiT-XL-2-256x256")' in code and "steps=250" in code
    code = code.replace('"DiT-XL-2-256x256"', repr(str(tiny_export))).replace("steps=250", "steps=5")
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    latents = scope["latents"]
    assert latents.shape == (4, *scope["model"].input_shape) and torch.isfinite(latents).all()
