"""Frozen transformers text encoders (train.py --arch text-dit --text-encoder DIR): a tiny CLIP text model and a
tiny T5 encoder written here with save_pretrained (nothing fetched). The text DiT reads their features through the same checks as its
trainable encoder (the empty caption is no text, padding changes nothing), never stores or trains their
weights, and a checkpoint whose encoder changed is refused in one line."""

import json

import pytest
import torch

import sample
from dit.cli import run_cli
from dit.errors import UserError
from dit.networks.conditioning import TEXT_IDS, TEXT_MASK
from dit.networks.frozen_text import describe_encoder
from dit.networks.text_config import TextConfig
from dit.networks.text_dit import TextDiT
from test_train import train_run

WORDS = ["a", "red", "blue", "green", "circle", "square", "plus", "at", "the", "top", "left", "right", "of", "in",
         "center", "large", "small", "bottom", "triangle", "yellow", "cyan", "magenta", "middle", "above", "below"]


def write_encoder(root, kind: str):
    """A tiny `kind` ("clip" or "t5") text encoder and a word-level fast tokenizer, as save_pretrained writes them."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    torch.manual_seed(0)
    if kind == "clip":
        model = transformers.CLIPTextModel(transformers.CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=32, pad_token_id=0, bos_token_id=1, eos_token_id=1))
    else:
        model = transformers.T5EncoderModel(transformers.T5Config(
            vocab_size=len(vocab), d_model=24, d_kv=12, d_ff=48, num_layers=1, num_heads=2, pad_token_id=0))
    model.save_pretrained(root)
    fast.save_pretrained(root)
    return root


@pytest.mark.parametrize("kind", ["clip", "t5"])
def test_frozen_features_keep_the_text_checks(tmp_path, kind):
    enc = write_encoder(tmp_path / kind, kind)
    found = describe_encoder(str(enc))
    cfg = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2, num_heads=2, learn_sigma=False,
               conditioning="joint", text_encoder=str(enc), **found)
    torch.manual_seed(0)
    net = TextDiT(TextConfig(**cfg, text_length=12)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    assert not any(k.startswith("text_encoder") for k in net.state_dict())  # its weights are not ours
    x, t = torch.randn(3, 3, 8, 8), torch.rand(3)
    captions = ["a red circle at the top left", "a blue square left of a green plus", ""]
    cond = net.encode_text(captions)
    assert cond[TEXT_MASK][2].sum() == 0 and cond[TEXT_MASK][0].sum() == 7
    with torch.no_grad():
        out, none = net(x, t, cond), net(x, t, {})
        longer = TextDiT(TextConfig(**cfg, text_length=20)).eval()
        longer.load_state_dict(net.state_dict())
        padded = longer(x, t, longer.encode_text(captions))
    assert torch.equal(out[2], none[2]) and (out[0] - none[0]).abs().max() > 1e-3
    torch.testing.assert_close(padded, out, atol=2e-5, rtol=0)  # padding changes nothing
    assert cond[TEXT_IDS].dtype == torch.long


def test_train_and_sample_with_a_frozen_encoder_and_refuse_a_changed_one(tmp_path):
    enc = write_encoder(tmp_path / "clip", "clip")
    run = train_run(tmp_path, "--arch", "text-dit", "--text-encoder", enc, "--text-length", "12", "--process", "flow",
                    "--max-steps", 2)
    config = json.loads((run / "config.json").read_text())
    assert config["text_encoder"] == str(enc)
    grid = tmp_path / "g.png"
    argv = ["--ckpt", str(run), "--prompt", "a red circle at the top left", "--steps", "2", "--out", str(grid),
            "--no-progress"]
    assert run_cli(sample.main, argv) == 0 and grid.is_file()
    from dit.networks import frozen_text

    frozen_text._LOADED.clear()  # a new process: the directory is read again
    weights = enc / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))
    assert run_cli(sample.main, argv) == 2  # "is not the one this network was trained with"
    with pytest.raises(UserError, match="no config.json"):
        describe_encoder(str(tmp_path))


def test_a_latent_cache_keeps_the_frozen_features(tmp_path, tiny_vae_dir, monkeypatch, capsys):
    """cache_latents.py --captions --text-encoder DIR stores the encoder's features of each caption (PixArt-α's T5
    cache); train.py with that encoder and length reads them instead of encoding the captions, and with another
    length says so and encodes them."""
    import cache_latents
    from dit.data.latent_cache import LatentCache
    from dit.networks.conditioning import TEXT
    from dit.networks.frozen_text import frozen_encoder
    from dit.training import captions as captions_module
    from test_text_scripts import CAPTIONS, captioned_folder

    enc = write_encoder(tmp_path / "clip", "clip")
    cache = tmp_path / "cache"
    argv = ["--data", captioned_folder(tmp_path / "captioned", n=6), "--out", cache, "--image-size", 16, "--vae",
            tiny_vae_dir, "--chunk-size", 4, "--num-workers", 0, "--no-progress", "--captions", "--text-encoder", enc,
            "--text-length", 12]
    assert run_cli(cache_latents.main, [str(a) for a in argv]) == 0
    latents = LatentCache(cache, flip=False)
    assert latents.text_encoder["text_length"] == 12
    live = frozen_encoder(str(enc), 12)
    for i in (0, 5):
        ids, mask = live.encode([CAPTIONS[i % 2]])
        row = latents.text_features(i)
        assert torch.equal(row[TEXT_IDS], ids[0]) and torch.equal(row[TEXT_MASK], mask[0])
        torch.testing.assert_close(row[TEXT], live.features(ids, mask)[0], atol=2e-3, rtol=1e-3)  # stored as float16
    seen = []
    hook = captions_module.CaptionIds.__call__
    monkeypatch.setattr(captions_module.CaptionIds, "__call__", lambda self, i, rng: seen.append(
        sorted(out := hook(self, i, rng))) or out)
    common = ["--arch", "text-dit", "--text-encoder", enc, "--no-flip", "--data", cache, "--vae", tiny_vae_dir,
              "--model", "DiT-S/2", "--process", "flow", "--max-steps", 2]
    train_run(tmp_path, *common, "--text-length", "12", name="stored")
    assert seen and all(TEXT in keys for keys in seen)  # every sample's features came from the cache
    seen.clear()
    capsys.readouterr()
    train_run(tmp_path, *common, "--text-length", "16", name="live")
    assert "are 12 tokens long, not --text-length 16" in capsys.readouterr().err
    assert seen and not any(TEXT in keys for keys in seen)
