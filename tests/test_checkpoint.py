"""Every checkpoint kind loads into the same model; bad files are refused with one clear error."""

import json

import pytest
import torch
from conftest import TINY, randomize

from dit.io.checkpoint import load_model, load_weights, save_export
from dit.networks.dit_config import infer_config
from dit.networks.dit_config import ModelConfig, preset_config
from dit.io.diffusers_transformer import config_to_diffusers, from_diffusers, to_diffusers
from dit.errors import UserError
from dit.autoencoders.vae import LATENT_SCALE, Autoencoder
from dit.networks.dit import DiT


def _inputs(cfg, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    return x, torch.tensor([0.0, 500.0, 999.0][:n]), torch.arange(n) % cfg.num_classes


def test_export_round_trip_keeps_weights_and_config(tmp_path):
    model = randomize(DiT.from_config(ModelConfig(**TINY)))
    save_export(tmp_path / "m.safetensors", model, image_size=16, vae="none")
    loaded, ckpt = load_model(str(tmp_path / "m.safetensors"))
    assert loaded.config == model.config and ckpt.meta == {"arch": "dit", "process": "gaussian", "image_size": 16, "vae": "none"}
    x, t, y = _inputs(model.config)
    assert torch.equal(loaded(x, t, y), model.eval()(x, t, y))
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, then renamed


def test_public_pt_state_dict_and_training_checkpoint(tmp_path):
    cfg = preset_config("DiT-S/8", input_size=16, num_classes=10)
    model = randomize(DiT.from_config(cfg))
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    ema = {k: v + 1 for k, v in model.state_dict().items()}
    import argparse

    # The public train.py saves {"model", "ema", "opt", "args": argparse.Namespace}; EMA is what samples.
    torch.save({"model": model.state_dict(), "ema": ema, "args": argparse.Namespace(lr=1e-4)}, tmp_path / "train.pt")
    loaded, _ = load_model(str(tmp_path / "plain.pt"))  # architecture inferred from the shapes
    assert loaded.config == cfg
    x, t, y = _inputs(cfg)
    assert torch.equal(loaded(x, t, y), model.eval()(x, t, y))
    assert torch.equal(load_weights(str(tmp_path / "train.pt")).state_dict["pos_embed"], ema["pos_embed"])


def test_infer_config_reads_presets():
    sd = DiT.from_config(preset_config("DiT-B/4")).state_dict()
    assert infer_config(sd) == preset_config("DiT-B/4")


def test_mismatched_checkpoint_names_keys(tmp_path):
    torch.save(DiT.from_config(preset_config("DiT-S/8", input_size=16, num_classes=10)).state_dict(), tmp_path / "s.pt")
    with pytest.raises(UserError) as e:
        load_model(str(tmp_path / "s.pt"), preset_config("DiT-B/8", input_size=16, num_classes=10))
    msg = str(e.value)
    assert "pos_embed (1, 4, 384) vs (1, 4, 768)" in msg and "looks like DiT-S/8" in msg


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"w": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="holds Python objects that safe loading refuses .*; only load files you trust"):
        load_weights(str(tmp_path / "evil.pt"))
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_corrupt_or_truncated_files(tmp_path, content):
    good = tmp_path / "good.safetensors"
    save_export(good, DiT.from_config(ModelConfig(**TINY)))
    for suffix in (".pt", ".safetensors"):
        bad = tmp_path / f"bad{suffix}"
        if content is None:  # truncated copy of a real file
            src = good if suffix == ".safetensors" else tmp_path / "g.pt"
            if suffix == ".pt":
                torch.save(DiT.from_config(ModelConfig(**TINY)).state_dict(), src)
            bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
        else:
            bad.write_bytes(content)
        with pytest.raises(UserError, match="truncated or corrupt"):
            load_weights(str(bad))


def test_missing_checkpoint_lists_manifest_names(tmp_path):
    with pytest.raises(UserError, match="DiT-XL-2-256x256"):
        load_weights(str(tmp_path / "nope.pt"))


def test_diffusers_transformer_and_pipeline_dirs_match_diffusers_outputs(tmp_path, tiny_vae_dir):
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    cfg = ModelConfig(**TINY)
    ours = randomize(DiT.from_config(cfg)).eval()
    theirs = DiTTransformer2DModel(**config_to_diffusers(cfg)).eval()
    theirs.load_state_dict(to_diffusers(ours.state_dict(), cfg.depth), strict=True)
    for block in theirs.transformer_blocks:  # diffusers shifts its frequencies by one (see dit/io/diffusers_transformer.py)
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    x, t, y = _inputs(cfg)
    with torch.no_grad():
        want = theirs(x, timestep=t, class_labels=y).sample
    theirs.save_pretrained(tmp_path / "transformer_only")
    pipe = DiTPipeline(transformer=theirs, vae=AutoencoderKL.from_pretrained(tiny_vae_dir), scheduler=DDIMScheduler())
    pipe.save_pretrained(tmp_path / "pipeline")
    for path in ("transformer_only", "pipeline"):
        loaded, _ = load_model(str(tmp_path / path))
        assert loaded.config == cfg
        with torch.no_grad():
            torch.testing.assert_close(loaded(x, t, y), want, rtol=1e-4, atol=1e-5)


def test_diffusers_conversion_round_trip():
    sd = randomize(DiT.from_config(ModelConfig(**TINY))).state_dict()
    back = from_diffusers(to_diffusers(sd, TINY["depth"]), TINY["depth"])
    assert set(back) == set(sd) - {"pos_embed"}
    assert all(torch.equal(back[k], sd[k]) for k in back)


def test_vae_scale_encode_decode(tiny_vae_dir):
    from diffusers import AutoencoderKL

    vae = Autoencoder.load(str(tiny_vae_dir))
    ref = AutoencoderKL.from_pretrained(tiny_vae_dir).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    mean, std = vae.encode_moments(x)
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
        torch.testing.assert_close(mean, dist.mean * LATENT_SCALE)
        torch.testing.assert_close(std, dist.std * LATENT_SCALE)
        torch.testing.assert_close(vae.decode(mean), ref.decode(dist.mean).sample)
    assert vae.latent_channels == 4 and vae.latent_size(16) == 8
    z = vae.encode(x, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 4, 8, 8) and not torch.equal(z, mean)


def test_pixel_space_and_bad_vae_names(tmp_path):
    pix = Autoencoder.load("none")
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(pix.decode(pix.encode(x)), x) and pix.latent_channels == 3
    with pytest.raises(UserError, match="check the name or path"):
        Autoencoder.load(str(tmp_path / "no_such_dir"))
    with pytest.raises(UserError, match="multiple"):
        Autoencoder.load("none").latent_size(0)


def test_hub_vae_offline_says_where_to_put_it(monkeypatch):
    import dit.autoencoders.vae

    monkeypatch.setattr(dit.autoencoders.vae, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    with pytest.raises(UserError, match=r"huggingface-cli download stabilityai/sd-vae-ft-mse.*--vae"):
        Autoencoder.load("mse")


def test_downloaded_weights_are_checked_against_the_manifest(tmp_path, monkeypatch):
    from dit.io import zoo

    monkeypatch.setenv("DIT_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "w.pt").write_bytes(b"not the published bytes")
    entry = {"url": "https://example.invalid/w.pt", "file": "w.pt", "sha256": "0" * 64}
    monkeypatch.setattr(zoo, "manifest", lambda feature_extractors=False: {"w": entry})
    with pytest.raises(UserError, match="corrupt or not the published one; delete it"):
        zoo.resolve("w")
    entry["sha256"] = zoo.sha256_of(tmp_path / "w.pt")
    assert zoo.resolve("w")[0] == tmp_path / "w.pt"
    entry.update(sha256=None, sha256_prefix=zoo.sha256_of(tmp_path / "w.pt")[:8])  # torch-hub style prefix
    assert zoo.resolve("w")[0] == tmp_path / "w.pt"


def test_manifest_entries_are_complete():
    from dit.io.zoo import MANIFEST, manifest

    entries = manifest()
    assert {"DiT-XL-2-256x256", "DiT-XL-2-512x512"} <= set(entries)
    for e in entries.values():
        assert e["url"].startswith("https://") and e["license"] and "preset" in e["config"]
    json.loads(MANIFEST.read_text())
