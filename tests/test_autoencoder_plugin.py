"""The autoencoder contract (dit/autoencoders/base.py) holds for the built-in kinds, old names keep
resolving to the kind that made them, and a kind defined outside the package (tests/plugins/
toy_autoencoder.py) trains, resumes exactly, samples and evaluates through the real scripts with no
library file naming it."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file, save_file

import evaluate
import sample
import train
from dit.autoencoders import Autoencoder, autoencoder_kind, load_autoencoder, peek_autoencoder
from dit.cli import run_cli
from dit.errors import UserError
from dit.layout import CONTINUOUS, TOKENS
from dit.registry import load_plugins

PLUGIN = ROOT / "tests" / "plugins" / "toy_autoencoder.py"
NAME = "toy-s2d"


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
    """A train_vq.py-like run directory: a random 2x tokenizer of K = 8 exported with its config."""
    from dit.networks.vq_tokenizer import VQConfig, VQTokenizer

    torch.manual_seed(0)
    config = VQConfig(image_size=16, block_out_channels=(8, 8), latent_channels=4, codebook_dim=3, codebook_size=8,
                      norm_num_groups=4, mid_attention=False)
    run = tmp_path_factory.mktemp("vq-run")
    state = {k: v.contiguous() for k, v in VQTokenizer(config).state_dict().items()}
    save_file(state, str(run / "export.safetensors"),
              metadata={"dit": json.dumps({"arch": "vq-tokenizer", "model": config.to_dict()})})
    return run


@pytest.fixture
def names(tiny_vae_dir, tokenizer_run):
    load_plugins(str(PLUGIN))
    return {"pixels": "none", "vae": str(tiny_vae_dir), "tokenizer": str(tokenizer_run), "plugin": NAME}


def images(n=3, size=16, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("which", ["pixels", "vae", "tokenizer", "plugin"])
def test_every_kind_keeps_the_contract(names, which):
    name = names[which]
    ae = load_autoencoder(name)
    assert isinstance(ae, Autoencoder) and ae.name == name and type(Autoencoder.load(name)) is type(ae)
    x = images()
    z = ae.encode(x, generator=torch.Generator().manual_seed(0))
    assert tuple(z.shape) == (3, *ae.latent_shape(16)) and ae.latent_size(16) == 16 // ae.downsample
    tokens = ae.data_kind == TOKENS
    assert ae.data_kind in (CONTINUOUS, TOKENS)
    assert (ae.codebook_size is not None, ae.latent_channels is None, z.dtype == torch.long) == (tokens,) * 3
    assert ae.decode(z).shape == x.shape and ae.decode(z).dtype == torch.float32
    assert ae.encode(x[None]).shape == (1, *z.shape) and ae.decode(z[None]).shape == (1, *x.shape)  # clips
    if ae.has_moments:
        mean, std = ae.encode_moments(x)
        assert mean.shape == std.shape == z.shape and (std >= 0).all()
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(z, mean + std * noise if ae.stochastic else mean, rtol=0, atol=0)
        assert ae.stochastic == bool((std > 0).any())
    else:
        with pytest.raises(UserError, match="no posterior"):
            ae.encode_moments(x)
    if not ae.stochastic:
        assert torch.equal(ae.encode(x), z)  # deterministic: no generator needed
    assert ae.identity == (which == "pixels") and (not ae.identity or torch.equal(z, x))
    assert (ae.diffusers_vae is not None) == (which == "vae")  # only an AutoencoderKL exports to DiTPipeline
    assert (ae.weights_file is not None) == (which == "tokenizer")
    assert ae.weights_file is None or ae.weights_file.is_file()
    described = ae.describe()
    assert (described["vae"], described["scale"], described["shift"]) == (name, ae.scale, ae.shift)
    assert ae.norm_meta() == {} and ae.with_norm(None) is ae
    with pytest.raises(UserError, match="multiple"):
        ae.latent_size(0)
    peek = peek_autoencoder(name)  # what the name says without loading it
    assert peek["data_kind"] == ae.data_kind and peek.get("codebook_size") == ae.codebook_size


def test_old_names_resolve_without_loading(names, tmp_path, monkeypatch):
    kinds = {"none": "pixels", "ema": "sd-vae", "mse": "sd-vae", "stabilityai/sd-vae-ft-mse": "diffusers-vae",
             names["vae"]: "diffusers-vae", names["tokenizer"]: "vq-tokenizer", str(tmp_path / "nothing-here"):
             "diffusers-vae", NAME: "toy-space-to-depth", f"{NAME}:4": "toy-space-to-depth"}
    assert {name: autoencoder_kind(name).key for name in kinds} == kinds
    shutil.copytree(names["tokenizer"], tmp_path / "ema")  # a tokenizer run called "ema" does not shadow the SD VAE
    monkeypatch.chdir(tmp_path)
    assert autoencoder_kind("ema").key == "sd-vae"
    with pytest.raises(UserError, match="is not 'ema', 'mse', 'none', a hub id"):
        load_autoencoder(str(tmp_path / "nothing-here"))


def test_the_plugin_kind_is_exactly_invertible(names):
    x = images(2, 8)
    ae = load_autoencoder(NAME)
    z = ae.encode(x)
    assert z.shape == (2, 12, 4, 4) and torch.equal(ae.decode(z), x)
    # channel (p1 * 2 + p2) * 3 + c of latent (i, j) is pixel (2i + p1, 2j + p2) of channel c
    assert z[1, (1 * 2 + 0) * 3 + 2, 3, 1] == x[1, 2, 7, 2]
    assert torch.equal(load_autoencoder(f"{NAME}:4").decode(load_autoencoder(f"{NAME}:4").encode(x)), x)
    with pytest.raises(UserError, match="positive integer"):
        load_autoencoder(f"{NAME}:x")


TINY = ["--vae", NAME, "--model", "DiT-S/4", "--hidden-size", 32, "--depth", 2, "--num-heads", 2, "--image-size", 16,
        "--shapes-images", 32, "--global-batch-size", 8, "--lr", 1e-3, "--lr-schedule", "constant", "--warmup-steps", 0,
        "--ema-decay", 0.9, "--ema-warmup", "false", "--max-steps", 4, "--ckpt-every", 2, "--log-every", 1,
        "--sample-steps", 2, "--samples-per-class", 1, "--no-progress"]


def toy_run(tmp_path, name, *extra):
    argv = [str(a) for a in ["cpu-demo", *TINY, "--results-dir", tmp_path, "--run-name", name, *extra]]
    assert run_cli(train.main, argv) == 0
    return tmp_path / name


@pytest.mark.slow("trains, resumes, samples and evaluates through four real scripts")
def test_a_plugin_kind_trains_resumes_samples_and_evaluates(tmp_path, monkeypatch):
    monkeypatch.setenv("DIT_PLUGINS", str(PLUGIN))
    whole = toy_run(tmp_path, "whole")
    toy_run(tmp_path, "split", "--stop-at", 2)
    split = toy_run(tmp_path, "split")  # resumed from its step-2 checkpoint
    step4 = [load_file(str(run / "checkpoints" / "step_000000004" / "model.safetensors")) for run in (whole, split)]
    assert all(torch.equal(step4[0][k], step4[1][k]) for k in step4[0])
    assert step4[0]["x_embedder.proj.weight"].shape[1] == 12  # the network reads the plugin's 12 channels
    with open(whole / "export.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))["__metadata__"]
    assert json.loads(header["dit"])["vae"] == NAME

    npz = tmp_path / "s.npz"
    common = ["--ckpt", str(whole), "--sampler", "ddim", "--steps", "2", "--no-progress", "--device", "cpu"]
    assert run_cli(sample.main, [*common, "--num-samples", "4", "--npz", str(npz)]) == 0
    assert np.load(npz)["arr_0"].shape == (4, 16, 16, 3)
    out = tmp_path / "m.json"
    argv = [*common, "--num-samples", "6", "--metric", "shapes", "--classifier-steps", "10",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert run_cli(evaluate.main, argv) == 0
    assert json.loads(out.read_text())["num_samples"] == 6

    # A fresh process finds the kind through $DIT_PLUGINS alone, and without it the name is refused in one line.
    env = {k: v for k, v in os.environ.items() if k != "DIT_PLUGINS"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "sample.py"), *common, "--classes", "1", "2", "--out", str(tmp_path / "g.png")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and f"VAE '{NAME}' is not" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = subprocess.run(cmd, env={**env, "DIT_PLUGINS": str(PLUGIN)}, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "g.png").is_file(), r.stderr[-2000:]


def test_no_library_file_names_the_plugin():
    files = [*(ROOT / "dit").rglob("*.py"), *ROOT.glob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    assert files and not [p for p in files if NAME in p.read_text() or "toy_autoencoder" in p.read_text()]
