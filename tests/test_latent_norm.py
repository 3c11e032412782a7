"""Per-channel latent normalisation (--latent-norm channel): the cache's statistics against a numpy
oracle, exact inversion on decode, unit-normal training latents, the checkpoint record that
sample.py rebuilds from, `cache_latents.py --stats-only`, and one-line refusals through train.py."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from test_latent_cache import encode
from test_cli_errors import refused
from test_train import ENV, metrics, tiny_argv, train_run

import cache_latents
import train
from dit.autoencoders.pixels import PixelSpace
from dit.autoencoders.vae import NORM_KEYS, Autoencoder, ChannelNorm
from dit.cli import run_cli
from dit.data import latent_cache, shapes
from dit.data.latent_cache import INDEX, SETTINGS, STATS, LatentCache, chunk_name, write_chunk
from dit.errors import UserError


def synthetic_cache(root, rows=(7, 5, 9), shape=(4, 3, 5), seed=0):
    """A cache written without a VAE: moments with a different offset and spread per channel.
    Returns the stored (float16-rounded) means and stds, (n, 2, C, H, W) as float64."""
    g = torch.Generator().manual_seed(seed)
    offset, spread = torch.tensor([3.0, -1.0, 0.5, 0.0]), torch.tensor([0.5, 2.0, 1.0, 0.1])
    root.mkdir(parents=True)
    settings = {"vae": "synthetic", "image_size": 8}
    (root / SETTINGS).write_text(json.dumps(settings))
    chunks, means, stds, start = [], [], [], 0
    for k, n in enumerate(rows):
        mean = torch.randn(n, 2, *shape, generator=g) * spread.view(-1, 1, 1) + offset.view(-1, 1, 1)
        std = torch.rand(n, 2, *shape, generator=g) * spread.view(-1, 1, 1) * 0.3
        write_chunk(root / chunk_name(k), mean, std, torch.zeros(n), torch.arange(start, start + n), [], torch.float16)
        means.append(mean.half().double())
        stds.append(std.half().double())
        chunks.append({"name": chunk_name(k), "rows": n})
        start += n
    (root / INDEX).write_text(json.dumps({"settings": settings, "chunks": chunks, "class_names": ["a"],
                                          "latent_shape": list(shape), "images": start, "skipped": []}))
    return torch.cat(means).numpy(), torch.cat(stds).numpy()


@pytest.mark.parametrize("rows_per_read", [2, 1024])  # merged across many slices, or one slice per chunk
def test_statistics_equal_the_numpy_oracle(tmp_path, monkeypatch, rows_per_read):
    monkeypatch.setattr(latent_cache, "STATS_ROWS", rows_per_read)
    means, stds = synthetic_cache(tmp_path / "c")
    stats = latent_cache.write_stats(tmp_path / "c")
    per_channel = (2, 0, 1, 3, 4)  # (n, 2, C, H, W) channel first: every other axis is pooled
    m, s = means.transpose(per_channel).reshape(4, -1), stds.transpose(per_channel).reshape(4, -1)
    # The draws z = mean + std * eps: E[z] = E[mean], Var[z] = Var[mean] + E[std^2].
    np.testing.assert_allclose(stats["channel_mean"], m.mean(1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats["channel_std"], np.sqrt(m.var(1) + (s**2).mean(1)), rtol=1e-12)
    assert stats["values_per_channel"] == m.shape[1]
    # ... which is numpy's mean and std over draws, up to sampling error.
    draws = m[:, None] + s[:, None] * np.random.default_rng(0).standard_normal((4, 200, m.shape[1]))
    np.testing.assert_allclose(stats["channel_mean"], draws.reshape(4, -1).mean(1), atol=0.02)
    np.testing.assert_allclose(stats["channel_std"], draws.reshape(4, -1).std(1), rtol=0.01)
    assert json.loads((tmp_path / "c" / STATS).read_text())["channel_std"] == stats["channel_std"]
    assert not list((tmp_path / "c").glob(".*tmp*"))  # written atomically


def test_encode_applies_and_decode_inverts(tiny_vae_dir):
    norm = ChannelNorm([0.3, -0.2, 0.1, 0.05], [0.5, 2.0, 1.5, 0.8])
    plain = Autoencoder.load(str(tiny_vae_dir))
    normed = Autoencoder.load(str(tiny_vae_dir)).with_norm(norm)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    (m, s), (nm, ns) = plain.encode_moments(x), normed.encode_moments(x)
    torch.testing.assert_close(nm, (m - norm._mean) / norm._std, rtol=0, atol=1e-6)
    torch.testing.assert_close(ns, s / norm._std, rtol=0, atol=1e-6)
    torch.testing.assert_close(norm.denormalize(norm.normalize(m)), m, rtol=0, atol=1e-6)
    torch.testing.assert_close(normed.decode(nm), plain.decode(m), rtol=0, atol=1e-5)  # same image either way
    pixels = PixelSpace(channel_norm=ChannelNorm([0.1, 0.2, 0.3], [2.0, 0.5, 1.0]))  # identity: exact round trip
    torch.testing.assert_close(pixels.decode(pixels.encode(x)), x, rtol=0, atol=1e-6)
    assert plain.norm_meta() == {} and normed.norm_meta() == dict(zip(NORM_KEYS, (norm.mean, norm.std)))
    with pytest.raises(UserError, match="3 channels but the VAE"):
        Autoencoder.load(str(tiny_vae_dir)).with_norm(ChannelNorm([0, 0, 0], [1, 1, 1]))
    with pytest.raises(UserError, match="positive std"):
        ChannelNorm([0, 0], [1, 0])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return shapes.write_image_folder(tmp_path_factory.mktemp("data") / "shapes", images_per_class=3, image_size=16)


@pytest.fixture(scope="module")
def cache(folder, tiny_vae_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "latents"
    assert encode(folder, out, tiny_vae_dir) == 0  # the statistics come with the cache
    assert (out / STATS).is_file()
    return out


def test_training_latents_have_zero_mean_unit_std_per_channel(cache, tiny_vae_dir):
    from dit.training.config import TrainConfig
    from dit.training.data import build_data

    config = TrainConfig().replace(data=str(cache), vae=str(tiny_vae_dir), image_size=16, latent_norm="channel")
    data = build_data(config, "cpu")
    assert data.base.norm is data.autoencoder.channel_norm and data.autoencoder.channel_norm is not None
    z = torch.stack([data.base.get(i, np.random.default_rng([r, i]))[0] for r in range(40) for i in range(len(data.base))])
    per_channel = z.transpose(0, 1).reshape(4, -1).double()
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(4, dtype=torch.float64), rtol=0, atol=0.03)
    torch.testing.assert_close(per_channel.std(1), torch.ones(4, dtype=torch.float64), rtol=0, atol=0.03)
    # The scalar default reads the same cache unchanged (and this VAE's latents are far from unit spread).
    scalar = build_data(config.replace(latent_norm="scalar"), "cpu")
    assert scalar.base.norm is None and scalar.autoencoder.channel_norm is None
    raw = torch.stack([scalar.base.get(i, np.random.default_rng([0, i]))[0] for i in range(len(scalar.base))])
    assert raw.transpose(0, 1).reshape(4, -1).std(1).max() < 0.5


def test_checkpoint_records_the_statistics_and_sampling_rebuilds_them(cache, tiny_vae_dir, tmp_path):
    import export_diffusers
    import sample
    from dit.pipelines import cli, load
    from dit.io.checkpoint import load_weights

    common = ["--model", "DiT-S/2", "--vae", tiny_vae_dir, "--max-steps", 2, "--global-batch-size", 4]
    run = train_run(tmp_path, *common, "--data", cache, "--latent-norm", "channel", name="channel")
    assert all(np.isfinite(m["loss"]) for m in metrics(run)) and (run / "samples.png").is_file()
    stats = LatentCache(cache).read_channel_norm()
    for where in (run, run / "checkpoints" / "step_000000002"):  # the export and the checkpoint's EMA
        meta = load_weights(str(where)).meta
        assert [meta[k] for k in NORM_KEYS] == [stats.mean, stats.std], where
    vae = load(*cli.to_spec(cli.parse(["--ckpt", str(run), "--classes", "0", "--steps", "2"])), "cpu")[0].autoencoder
    assert (vae.channel_norm.mean, vae.channel_norm.std) == (stats.mean, stats.std)
    z = torch.randn(1, 4, 8, 8)
    plain = Autoencoder.load(str(tiny_vae_dir))
    torch.testing.assert_close(vae.decode(z), plain.decode(stats.denormalize(z)), rtol=0, atol=1e-6)
    assert run_cli(sample.main, [*map(str, ["--ckpt", run, "--classes", 0, 1, "--steps", 2, "--out",
                                             tmp_path / "s.png", "--no-progress"])]) == 0
    # DiTPipeline decodes with one scalar: exporting would silently decode wrong, so it is refused.
    assert run_cli(export_diffusers.main, ["--ckpt", str(run), "--out", str(tmp_path / "pipe")]) == 2
    # Resuming under the other normalisation would change what the network is trained on.
    argv = [*common, "--data", cache, "--latent-norm", "scalar", "--max-steps", 3]
    assert run_cli(train.main, tiny_argv(tmp_path, "channel", *argv)) == 2


def test_old_checkpoints_decode_as_before(tiny_export):
    from dit.pipelines import cli, load

    vae = load(*cli.to_spec(cli.parse(["--ckpt", str(tiny_export), "--classes", "0"])), "cpu")[0].autoencoder
    assert vae.channel_norm is None and vae.norm_meta() == {}


def test_stats_only_measures_an_existing_cache(cache, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(cache, old)
    (old / STATS).unlink()  # a cache written before the statistics existed
    with pytest.raises(UserError, match=r"no per-channel statistics.*cache_latents.py --stats-only --out"):
        LatentCache(old).read_channel_norm()
    capsys.readouterr()
    assert run_cli(cache_latents.main, ["--stats-only", "--out", str(old)]) == 0
    assert "per-channel latent statistics" in capsys.readouterr().out
    assert json.loads((old / STATS).read_text()) == json.loads((cache / STATS).read_text())  # deterministic
    index = json.loads((old / INDEX).read_text())  # stats of other chunks than the index lists: stale
    (old / INDEX).write_text(json.dumps({**index, "chunks": index["chunks"][:-1]}))
    with pytest.raises(UserError, match="other chunks.*--stats-only"):
        LatentCache(old).read_channel_norm()
    assert run_cli(cache_latents.main, ["--stats-only", "--out", str(tmp_path / "nope")]) == 2
    assert run_cli(cache_latents.main, ["--out", str(tmp_path / "nope")]) == 2  # --data needed to encode


def test_bad_latent_norm_input_exits_2_with_one_line_through_train_py(cache, folder, tiny_vae_dir, tmp_path, capsys):
    no_stats = tmp_path / "no-stats"
    shutil.copytree(cache, no_stats)
    (no_stats / STATS).unlink()
    tiny = ["--model", "DiT-S/2", "--image-size", "16", "--results-dir", str(tmp_path / "results"), "--no-progress"]
    cases = {
        "unknown value": (["--latent-norm", "global"], "must be one of scalar, channel"),
        "pixel space": (["--vae", "none", "--latent-norm", "channel"], "needs a latent cache"),
        "image folder": (["--vae", str(tiny_vae_dir), "--data", str(folder), "--latent-norm", "channel"],
                         "is an image folder"),
        "cache without stats": (["--vae", str(tiny_vae_dir), "--data", str(no_stats), "--latent-norm", "channel"],
                                "cache_latents.py --stats-only --out"),
    }
    for name, (extra, expected) in cases.items():
        assert expected in refused(capsys, train.main, [*tiny, *extra]), name
    # Refused inside run_training (after the accelerator and the VAE): through the real script too,
    # where any warning or log line on stderr would show.
    extra, expected = cases["cache without stats"]
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), *tiny, *extra], capture_output=True, text=True,
                         timeout=300, env=ENV)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and expected in lines[0], res.stderr[-2000:]
    assert not (tmp_path / "results").exists()  # refused before anything was written
