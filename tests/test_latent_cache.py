"""Latent cache: exact moments of image and flip, skipped bad files, repair, 2 processes; training from
latents and from images through a VAE; export to diffusers' DiTPipeline; wandb offline."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, free_port
from safetensors.torch import load_file
from test_train import ENV, metrics, train_run

import cache_latents
from dit.data import shapes
from dit.data.folders import ImageFolderDataset
from dit.cli import run_cli
from dit.errors import UserError
from dit.data.latent_cache import LatentCache, chunk_name
from dit.autoencoders.vae import Autoencoder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """30 shapes at 16 px in the ImageFolder layout, plus one zero-byte 'image'."""
    root = shapes.write_image_folder(tmp_path_factory.mktemp("data") / "shapes", images_per_class=3, image_size=16)
    (root / "00_red_circle" / "zz_broken.png").write_bytes(b"")
    return root


def encode(folder, out, vae_dir, *extra):
    argv = ["--data", folder, "--out", out, "--image-size", 16, "--vae", vae_dir, "--chunk-size", 8,
            "--batch-size", 5, "--num-workers", 0, "--no-progress", *extra]
    return run_cli(cache_latents.main, [str(a) for a in argv])


@pytest.fixture(scope="module")
def cache(folder, tiny_vae_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "latents"
    assert encode(folder, out, tiny_vae_dir) == 0
    return out


def test_cache_holds_exact_moments_of_image_and_flip(cache, folder, tiny_vae_dir):
    index = json.loads((cache / "index.json").read_text())
    assert index["images"] == 30 and len(index["chunks"]) == 4  # 31 files in chunks of 8
    assert [p.endswith("zz_broken.png") for p in index["skipped"]] == [True]
    c = LatentCache(cache)
    assert len(c) == 30 and c.num_classes == 10 and c.latent_shape == (4, 8, 8)
    vae, images = Autoencoder.load(str(tiny_vae_dir)), ImageFolderDataset(folder, 16)
    rows = torch.cat([load_file(str(cache / chunk_name(k)))["indices"] for k in range(4)])
    for row in (0, 7, 8, 29):
        x, label = images[int(rows[row])]
        for flipped in (False, True):
            mean, std, got_label = c.moments(row, flipped)
            ref_mean, ref_std = vae.encode_moments((x.flip(-1) if flipped else x)[None])
            torch.testing.assert_close(mean, ref_mean[0], atol=2e-3, rtol=2e-3)  # stored as float16
            torch.testing.assert_close(std, ref_std[0], atol=2e-3, rtol=2e-3)
            assert got_label == label
    # get(): a fresh draw from q(z|x) each time, flipped half of the time.
    draws = torch.stack([c.get(3, np.random.default_rng(i))[0] for i in range(400)])
    plain, flip = c.moments(3, False)[0], c.moments(3, True)[0]
    is_flip = [(d - flip).abs().mean() < (d - plain).abs().mean() for d in draws]
    assert 150 < sum(is_flip) < 250
    assert not torch.equal(draws[0], draws[1])


def test_damaged_or_missing_chunks_are_detected_and_repaired(folder, tiny_vae_dir, tmp_path):
    out = tmp_path / "latents"
    assert encode(folder, out, tiny_vae_dir) == 0
    before = {k: {n: t.clone() for n, t in load_file(str(out / chunk_name(k))).items()} for k in range(4)}
    data = (out / chunk_name(1)).read_bytes()
    (out / chunk_name(1)).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="chunk_00001.safetensors is damaged.*re-run cache_latents.py"):
        LatentCache(out)
    (out / chunk_name(2)).unlink()
    with pytest.raises(UserError):
        LatentCache(out)
    assert encode(folder, out, tiny_vae_dir) == 0  # the same command repairs the cache
    for k in range(4):
        for name, tensor in load_file(str(out / chunk_name(k))).items():
            assert torch.equal(tensor, before[k][name]), (k, name)
    assert len(LatentCache(out)) == 30
    # Other settings into the same directory: refused, nothing overwritten.
    assert encode(folder, out, tiny_vae_dir, "--dtype", "float32") == 2


def test_two_processes_write_the_same_cache(cache, folder, tiny_vae_dir, tmp_path):
    out = tmp_path / "latents2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "cache_latents.py"), "--data", str(folder), "--out", str(out), "--image-size", "16",
           "--vae", str(tiny_vae_dir), "--chunk-size", "8", "--batch-size", "5", "--num-workers", "0", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in cache.iterdir())
    for k in range(4):
        one, two = load_file(str(cache / chunk_name(k))), load_file(str(out / chunk_name(k)))
        assert torch.equal(one["indices"], two["indices"]) and torch.equal(one["labels"], two["labels"]), k
        for name in ("mean", "std"):  # thread counts differ (OMP_NUM_THREADS=1 there): float16 rounding
            torch.testing.assert_close(one[name], two[name], atol=2e-3, rtol=2e-3)


def test_train_from_cache_and_from_images_then_export_to_diffusers(cache, folder, tiny_vae_dir, tmp_path):
    from diffusers import DiTPipeline

    import export_diffusers
    from dit.io.checkpoint import load_model

    common = ["--model", "DiT-S/2", "--vae", tiny_vae_dir, "--max-steps", 3, "--global-batch-size", 4]
    latent_run = train_run(tmp_path, *common, "--data", cache, name="latents")
    image_run = train_run(tmp_path, *common, "--data", folder, "--max-steps", 8, name="images")
    for run in (latent_run, image_run):
        assert all(np.isfinite(m["loss"]) for m in metrics(run))
        assert (run / "samples.png").is_file()
    # 8 steps of 4 cover the 31 files: the broken one was met, replaced and counted.
    assert metrics(image_run)[-1]["unreadable_images"] >= 1 and metrics(latent_run)[-1]["unreadable_images"] == 0
    model, ckpt = load_model(str(latent_run))
    assert model.in_channels == 4 and model.input_size == 8 and ckpt.meta["vae"] == str(tiny_vae_dir)

    out = tmp_path / "pipeline"
    assert run_cli(export_diffusers.main, ["--ckpt", str(latent_run), "--out", str(out)]) == 0
    pipe = DiTPipeline.from_pretrained(out)
    assert pipe.labels["09_pink_x"] == 9
    images = pipe(class_labels=[0, 9], num_inference_steps=3, guidance_scale=1.0, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()
    back, _ = load_model(str(out))  # and the pipeline loads back into our DiT with the same weights
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_wandb_offline_logs_without_network(tmp_path):
    run = train_run(tmp_path, "--max-steps", 2, "--wandb", "true", name="wb")
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and (run / "wandb_id.txt").read_text().strip() in offline[0].name
    assert len(metrics(run)) == 2


def test_cache_bad_arguments(folder, tiny_vae_dir, tmp_path, capsys):
    cases = {
        "pixel space": (["--vae", "none"], "nothing to cache"),
        "missing data": (["--data", tmp_path / "nope"], "does not exist"),
        "bad size": (["--image-size", 15], "multiple"),
        "bad chunk": (["--chunk-size", 0], "must be positive"),
    }
    for name, (extra, expected) in cases.items():
        capsys.readouterr()
        argv = ["--data", folder, "--out", tmp_path / "c", "--vae", tiny_vae_dir, "--no-progress", *extra]
        assert run_cli(cache_latents.main, [str(a) for a in argv]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (name, err)
    assert not (tmp_path / "c").exists()
