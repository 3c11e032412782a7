"""A text DiT's transformer as diffusers' own classes (export_diffusers.py, dit/io/text_transformers.py):
cross-attention as PixArtTransformer2DModel, joint attention as SD3Transformer2DModel, written, read back by
diffusers' from_pretrained and computing our outputs from our caption features; what differs (SD3 masks no
padding) shown; the pooled baseline refused in one line."""

import json

import pytest
import torch

import export_diffusers
from dit.cli import run_cli
from dit.data.shapes_captions import vocabulary
from dit.io.checkpoint import load_model
from dit.networks.text_config import TextConfig
from dit.networks.text_dit import TextDiT
from dit.networks.text_encoder import pooled
from dit.pipelines.export import save_text_transformer
from test_cli_errors import refused
from test_train import train_run

TEXT = ["--arch", "text-dit", "--text-depth", "1", "--text-length", "8", "--process", "flow"]


def moved(conditioning: str, qk_norm: bool = False) -> TextDiT:
    """A text DiT with every trained weight off its init (zero-initialised layers would make outputs 0)."""
    torch.manual_seed(0)
    net = TextDiT(TextConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=3, num_heads=2,
                             learn_sigma=True, conditioning=conditioning, qk_norm=qk_norm, text_length=6,
                             vocabulary=" ".join(vocabulary()), text_width=24)).eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:  # not the fixed sin-cos table
                p.add_(torch.randn_like(p) * 0.1)
    return net


def theirs(model, net, x, t, cond):
    features, mask = net.caption(cond, len(x), "cpu")
    if type(model).__name__ == "PixArtTransformer2DModel":
        return model(x, encoder_hidden_states=features, encoder_attention_mask=mask.long(), timestep=t,
                     added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    return model(x, encoder_hidden_states=features, pooled_projections=pooled(features, mask), timestep=t).sample


@pytest.mark.parametrize("conditioning,qk_norm", [("cross-attention", False), ("joint", False), ("joint", True)])
def test_export_reads_back_to_our_outputs(tmp_path, conditioning, qk_norm):
    import diffusers

    net = moved(conditioning, qk_norm)
    kind = save_text_transformer(net, tmp_path / "out")
    model = getattr(diffusers, kind).from_pretrained(str(tmp_path / "out" / "transformer")).eval()
    x, t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([3.0, 700.0])
    full = net.encode_text(["a red square at the top left", "a large blue circle in the center"])  # 6 tokens each
    padded = net.encode_text(["a red square", "a blue circle"])
    with torch.no_grad():
        for cond in (full, padded) if conditioning == "cross-attention" else (full,):
            torch.testing.assert_close(theirs(model, net, x, t, cond), net(x, t, cond), atol=1e-5, rtol=0)
        if conditioning == "joint":  # SD3 masks nothing: padded caption tokens take part there, not here
            assert (theirs(model, net, x, t, padded) - net(x, t, padded)).abs().max() > 1e-3
    record = json.loads((tmp_path / "out" / "text_encoder.json").read_text())
    assert record["text_dit_config"]["conditioning"] == conditioning
    assert (tmp_path / "out" / "text_encoder.safetensors").is_file()


def test_export_script_and_refusal(tmp_path, capsys):
    run = train_run(tmp_path, *TEXT, "--conditioning", "cross-attention", "--max-steps", 1, name="cross")
    out = tmp_path / "exported"
    assert run_cli(export_diffusers.main, ["--ckpt", str(run), "--out", str(out)]) == 0
    import diffusers

    net, _ = load_model(str(run))
    model = diffusers.PixArtTransformer2DModel.from_pretrained(str(out / "transformer"))
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for n, p in net.named_parameters() if not n.startswith(("text_encoder.", "pos_embed")))
    pooled_run = train_run(tmp_path, *TEXT, "--max-steps", 1, name="pooled")
    assert "has no diffusers class" in refused(capsys, export_diffusers.main, ["--ckpt", pooled_run, "--out",
                                                                               tmp_path / "no"])
    assert not (tmp_path / "no").exists()
