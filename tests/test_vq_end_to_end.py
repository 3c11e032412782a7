"""VQ-Diffusion end to end through the real scripts: a tiny tokenizer (train_vq.py) -> a cache of ids
(cache_latents.py) -> train.py token-dit on the cache and on the fly, with a kill-and-resume that
equals the uninterrupted run (importance sampling's history included) -> sample.py to PNG and npz,
per seed whatever the batching -> evaluate.py's record -> bad input: one line, exit 2, nothing written."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from helpers_compare import same_across_batches
from PIL import Image
from safetensors.torch import load_file
from test_train import ENV, metrics, same_tensors, tiny_argv

import cache_latents
import evaluate
import sample
import train
import train_vq
from dit.autoencoders.vae import Autoencoder
from dit.cli import run_cli
from dit.data import shapes
from dit.data.folders import ImageFolderDataset
from dit.data.latent_cache import LatentCache, write_stats
from dit.errors import UserError
from dit.io.zoo import sha256_of

K = 16  # the tiny tokenizer's codebook
# train_vq.py's tiny test tokenizer (tests/test_vq_tokenizer.py): VQ-T/2 at base width 8, 16 px -> 8x8 ids.
VQ = ["--hidden-size", 8, "--image-size", 16, "--shapes-images", 64, "--global-batch-size", 8, "--lr", 1e-3,
      "--lr-schedule", "constant", "--no-progress", "--max-steps", 3]
TOKENS = ["--arch", "token-dit", "--process", "vq-diffusion"]


def tokenizer_run(root, name, codebook_size):
    argv = [str(a) for a in [*VQ, "--codebook-size", codebook_size, "--results-dir", root, "--run-name", name]]
    assert run_cli(train_vq.main, argv) == 0
    return root / name


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tokenizer_run(tmp_path_factory.mktemp("vq"), "vq", K)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return shapes.write_image_folder(tmp_path_factory.mktemp("data") / "shapes", images_per_class=2, image_size=16)


@pytest.fixture(scope="module")
def cache(folder, tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "ids"
    argv = ["--data", folder, "--out", out, "--image-size", 16, "--vae", tokenizer, "--chunk-size", 8,
            "--batch-size", 5, "--num-workers", 0, "--no-progress"]
    assert run_cli(cache_latents.main, [str(a) for a in argv]) == 0
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer):
    """A token-dit trained 6 steps on the fly from the shapes, importance-sampled time (T = 2, so the
    history is in use by the cut at step 3), with a copy killed at step 3 and resumed."""
    root = tmp_path_factory.mktemp("runs")
    flags = [*TOKENS, "--vae", tokenizer, "--vq-timesteps", 2, "--vq-time-sampling", "importance", "--max-steps", 6,
             "--global-batch-size", 16,
             "--ckpt-every", 3, "--keep-last", 0]
    assert run_cli(train.main, tiny_argv(root, "full", *flags)) == 0
    assert run_cli(train.main, tiny_argv(root, "cut", *flags, "--stop-at", 3)) == 0
    assert not (root / "cut" / "checkpoints" / "step_000000006").exists()
    assert run_cli(train.main, tiny_argv(root, "cut", *flags)) == 0  # the same command resumes
    return root


def test_cache_holds_the_ids_of_each_image_and_of_its_flip(cache, folder, tokenizer):
    data = LatentCache(cache)
    assert data.tokens and data.latent_shape == (8, 8) and len(data) == 20
    assert data.settings["codebook_size"] == K and (data.settings["scale"], data.settings["shift"]) == (1.0, 0.0)
    assert data.settings["vae"] == str(tokenizer) and data.settings["dtype"] == "int16"
    assert not (cache / "stats.json").exists()  # ids have no per-channel statistics
    chunk = load_file(str(cache / "chunk_00000.safetensors"))
    assert set(chunk) == {"ids", "labels", "indices"} and chunk["ids"].dtype == torch.int16
    ae = Autoencoder.load(str(tokenizer))
    index = 3
    x, y, _ = ImageFolderDataset(folder, 16).read(index)  # what the cache encoded, in [-1, 1]
    x = x[None]
    for flipped, image in ((False, x), (True, x.flip(-1))):
        ids, label = data.ids(index, flipped)
        assert label == y and torch.equal(ids, ae.encode(image)[0])  # a flipped image's own ids
    rng = np.random.default_rng(0)
    ids, _, _ = data.get(index, rng)
    assert ids.dtype == torch.long and ids.shape == (8, 8)
    with pytest.raises(UserError, match="token ids"):
        write_stats(cache)


def test_train_on_the_cache_and_on_an_image_folder(cache, folder, tokenizer, tmp_path):
    for name, data in (("cache", cache), ("folder", folder)):  # ids read, or images encoded at every step
        assert run_cli(train.main, tiny_argv(tmp_path, name, *TOKENS, "--data", data, "--vae", tokenizer,
                                             "--max-steps", 2)) == 0
        m = metrics(tmp_path / name)
        assert len(m) == 2 and all(np.isfinite(r["loss"]) for r in m)
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["codebook_size"] == K and config["vae"] == str(tokenizer)  # K read from the tokenizer
        assert (tmp_path / name / "samples.png").is_file()  # the preview decodes ids through the tokenizer


def test_kill_and_resume_equals_the_uninterrupted_run(trained):
    full, cut = trained / "full", trained / "cut"
    for step in ("step_000000003", "step_000000006"):
        for name in ("model.safetensors", "ema.safetensors", "objective_state_0.safetensors"):
            same_tensors(load_file(str(full / "checkpoints" / step / name)), load_file(str(cut / "checkpoints" / step / name)))
    history = load_file(str(full / "checkpoints" / "step_000000003" / "objective_state_0.safetensors"))
    assert (history["count"] > 10).all()  # importance sampling was in use when the copy was cut
    assert [r["loss"] for r in metrics(cut)] == [r["loss"] for r in metrics(full)]


def test_sample_png_and_npz_per_seed_and_evaluate(trained, tokenizer, tmp_path):
    run = trained / "full"
    grids = {}
    for bs in (4, 1):
        out, imgs = tmp_path / f"g{bs}.png", tmp_path / f"i{bs}"
        argv = ["--ckpt", run, "--classes", 0, 1, 2, 3, "--steps", 2, "--cfg-scale", 3, "--batch-size", bs,
                "--out", out, "--save-images", imgs, "--no-progress"]
        assert run_cli(sample.main, [str(a) for a in argv]) == 0
        grids[bs] = [np.asarray(Image.open(p)) for p in sorted(imgs.iterdir())]
    assert len(grids[4]) == 4 and grids[4][0].shape == (16, 16, 3)
    # Measured tolerance: the token ids are the same draws, but the tokenizer's decoder runs other kernels at
    # another batch size, so a decoded value on a rounding boundary may land one uint8 level away (measured
    # 1 value of 768 in one of four 16 px images, batch 4 vs 1). A different token changes a whole f x f
    # patch by far more (a seed-by-batch-position break: 175 levels).
    for a, b in zip(grids[4], grids[1]):
        same_across_batches(a, b)
    arrays = {}
    for bs in (4, 3):
        npz = tmp_path / f"s{bs}.npz"
        argv = ["--ckpt", run, "--num-samples", 6, "--npz", npz, "--batch-size", bs, "--truncation", 0.9,
                "--no-progress"]  # default --steps: the process's T (2)
        assert run_cli(sample.main, [str(a) for a in argv]) == 0
        with np.load(npz) as f:
            arrays[bs] = f["arr_0"], f["arr_1"]
    assert arrays[4][0].shape == (6, 16, 16, 3) and arrays[4][0].dtype == np.uint8
    same_across_batches(arrays[4][0], arrays[3][0])
    assert np.array_equal(arrays[4][1], arrays[3][1])

    out = tmp_path / "eval.json"
    argv = ["--ckpt", run, "--num-samples", 4, "--metric", "shapes", "--cache-dir", tmp_path / "cache",
            "--classifier-steps", 50, "--cfg-scale", 2, "--truncation", 0.9, "--no-progress", "--out", out]
    assert run_cli(evaluate.main, [str(a) for a in argv]) == 0
    got = json.loads(out.read_text())
    assert (got["arch"], got["process"], got["sampler"], got["steps"]) == ("token-dit", "vq-diffusion", "ancestral", 2)
    assert got["sampler_options"] == {"truncation": 0.9} and got["cfg_scale"] == 2
    assert got["tokenizer"] == str(tokenizer / "export.safetensors")
    assert got["tokenizer_sha256"] == sha256_of(tokenizer / "export.safetensors")
    assert 0 <= got["class_acc"] <= 1 and got["num_samples"] == 4


def test_bad_input_one_line_exit_2_nothing_written(trained, tokenizer, folder, cache, tiny_export, tmp_path, capsys):
    other = tokenizer_run(tmp_path, "vq8", 8)  # another tokenizer, K = 8
    bad_run = tmp_path / "bad"
    train_cases = {
        "no tokenizer": ([*TOKENS, "--vae", "none"], "--vae must be a VQ tokenizer"),
        "process only": (["--process", "vq-diffusion", "--vae", "none"], "--process vq-diffusion models token ids"),
        "dit on ids": (["--vae", tokenizer], "--arch dit does not model"),
        "gaussian on ids": (["--arch", "token-dit", "--vae", tokenizer], "the gaussian process does not model"),
        "codebook size": ([*TOKENS, "--vae", tokenizer, "--codebook-size", 32], "has K = 16 codes"),
        "tokenizer arch": (["--arch", "vq-tokenizer"], "use train_vq.py"),
        "cache of another": ([*TOKENS, "--vae", other, "--data", cache], "was encoded with --vae"),
        "channel norm": ([*TOKENS, "--vae", tokenizer, "--latent-norm", "channel"], "no normalisation"),
    }
    for name, (extra, expected) in train_cases.items():
        capsys.readouterr()
        assert run_cli(train.main, tiny_argv(tmp_path, "bad", *extra)) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (name, err)
        assert not bad_run.exists(), name

    run, out = trained / "full", tmp_path / "never.png"
    ck = ["--ckpt", run, "--classes", 0, 1, "--out", out, "--no-progress"]
    sample_cases = {
        "too many steps": ([*ck, "--steps", 3], "1..2 sampling steps"),
        "tokenizer as ckpt": (["--ckpt", tokenizer, "--classes", 0, "--out", out], "a tokenizer (train_vq.py)"),
        "other tokenizer": ([*ck, "--vae", other], "codebook sizes disagree"),
        "no tokenizer": ([*ck, "--vae", "none"], "is not a VQ tokenizer"),
        "latents with a tokenizer": (["--ckpt", tiny_export, "--classes", 0, "--out", out, "--vae", tokenizer],
                                     "is a VQ tokenizer (token ids)"),
        "truncation": ([*ck, "--truncation", 1.5], "--truncation must be in (0, 1]"),
        "cfg channels": ([*ck, "--cfg-channels", 3], "--cfg-channels does not apply to token ids"),
        "size": ([*ck, "--image-size", 32], "gives 16x16 ids at 32 px"),
        "eta": ([*ck, "--eta", 0.5], "has no option 'eta'"),
    }
    for name, (argv, expected) in sample_cases.items():
        capsys.readouterr()
        assert run_cli(sample.main, [str(a) for a in argv]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (name, err)
        assert not out.exists(), name

    for data, extra, expected in ((folder, ["--dtype", "float32"], "drop --dtype"),
                                  (cache, [], "is a latent cache already")):
        capsys.readouterr()
        argv = ["--data", data, "--out", tmp_path / "c2", "--image-size", 16, "--vae", tokenizer, *extra]
        assert run_cli(cache_latents.main, [str(a) for a in argv]) == 2
        assert expected in capsys.readouterr().err and not (tmp_path / "c2").exists()

    # The real script, in a directory without results/vq-cpu: the preset's default tokenizer is missing.
    empty = tmp_path / "empty"
    empty.mkdir()
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), "vq-diffusion-cpu"], capture_output=True, text=True,
                         timeout=120, cwd=empty, env=ENV)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "python train_vq.py" in lines[0], res.stderr[-1000:]
    assert not any(empty.iterdir())
