"""The contracts hold: an architecture and a process defined outside the package (tests/plugins/
toy_family.py) train, resume bit-exactly and sample through train.py and sample.py, unedited."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from safetensors import safe_open
from safetensors.torch import load_file

import sample
import train
from dit.cli import run_cli
from dit.errors import UserError
from dit.registry import Registry

PLUGIN = ROOT / "tests" / "plugins" / "toy_family.py"
TOY = ["--arch", "token-mlp", "--process", "toy-flow", "--data", "shapes", "--image-size", "8", "--vae", "none",
       "--shapes-images", "64", "--global-batch-size", "8", "--max-steps", "8", "--ckpt-every", "4", "--lr", "1e-3",
       "--warmup-steps", "0", "--lr-schedule", "constant", "--ema-decay", "0.9", "--log-every", "1",
       "--sample-sampler", "euler", "--sample-steps", "3", "--samples-per-class", "1", "--no-progress"]


@pytest.fixture
def plugin_env(monkeypatch):
    monkeypatch.setenv("DIT_PLUGINS", str(PLUGIN))


def toy_run(tmp_path, name, *extra):
    argv = ["cpu-demo", *TOY, "--results-dir", str(tmp_path), "--run-name", name, *map(str, extra)]
    assert run_cli(train.main, argv) == 0
    return tmp_path / name


def weights(run, step):
    return load_file(str(run / "checkpoints" / f"step_{step:09d}" / "model.safetensors"))


def test_toy_family_trains_resumes_exactly_and_samples(tmp_path, plugin_env):
    whole = toy_run(tmp_path, "whole")
    toy_run(tmp_path, "split", "--stop-at", 4)  # stop at step 4 ...
    split = toy_run(tmp_path, "split")  # ... and resume from its checkpoint to step 8
    a, b = weights(whole, 8), weights(split, 8)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], weights(whole, 4)[k]) for k in a)  # it did train
    # The toy process's own state (its loss-call count) travels with each checkpoint and is restored.
    for run in (whole, split):
        state = load_file(str(run / "checkpoints" / "step_000000008" / "objective_state_0.safetensors"))
        assert int(state["calls"]) == 8

    state = json.loads((whole / "checkpoints" / "step_000000008" / "train_state.json").read_text())
    assert (state["config"]["arch"], state["config"]["process"]) == ("token-mlp", "toy-flow")
    with safe_open(str(whole / "export.safetensors"), "pt") as f:
        header = json.loads(f.metadata()["dit"])
    assert (header["arch"], header["process"], header["process_config"]) == ("token-mlp", "toy-flow",
                                                                            {"kind": "rectified-flow"})
    assert header["model"]["hidden"] == 128  # the cpu-demo preset's --hidden-size, read by the toy config

    # sample.py reads the keys from the export and uses the toy process's own sampler.
    out = tmp_path / "toy.npz"
    argv = ["--ckpt", str(whole), "--num-samples", "4", "--npz", str(out), "--sampler", "euler", "--steps", "3",
            "--cfg-scale", "2", "--no-progress", "--device", "cpu"]
    assert run_cli(sample.main, argv) == 0
    import numpy as np

    images = np.load(out)["arr_0"]
    assert images.shape == (4, 8, 8, 3) and images.std() > 0
    # The Gaussian samplers are not the toy process's: refused in one line.
    with pytest.raises(UserError, match="unknown sampler 'ddpm' for the 'toy-flow' process; choose one of euler"):
        sample.main(["--ckpt", str(whole), "--classes", "0", "--sampler", "ddpm", "--device", "cpu"])


def test_the_real_scripts_load_plugins_from_the_environment(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "train.py"), *TOY, "--max-steps", "2", "--ckpt-every", "2",
           "--results-dir", str(tmp_path), "--run-name", "cli"]
    # Without the plugin the key is unknown: one line, exit 2, nothing written.
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # the first unknown key is named (the architecture's is read first, to resolve a tokenizer --vae)
    assert "unknown architecture 'token-mlp'; choose one of" in r.stderr and "DIT_PLUGINS" in r.stderr
    assert not (tmp_path / "cli").exists()
    r = subprocess.run(cmd, env={**env, "DIT_PLUGINS": str(PLUGIN)}, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, str(ROOT / "sample.py"), "--ckpt", str(tmp_path / "cli"), "--classes", "1", "2",
                        "--sampler", "euler", "--steps", "2", "--out", str(tmp_path / "grid.png"), "--device", "cpu"],
                       env={**env, "DIT_PLUGINS": str(PLUGIN)}, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "grid.png").is_file(), r.stderr[-2000:]


def test_registry_refuses_unknown_and_duplicate_keys():
    reg = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(UserError, match="unknown widget 'b'; choose one of a"):
        reg.get("b")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)
    reg.register("a", 2, replace=True)
    assert reg.get("a") == 2


def test_unknown_keys_fail_before_any_work(tmp_path):
    with pytest.raises(UserError, match="unknown process 'flowz'"):
        train.main(["cpu-demo", "--process", "flowz", "--results-dir", str(tmp_path)])
    with pytest.raises(UserError, match="unknown architecture 'unet'"):
        train.main(["cpu-demo", "--arch", "unet", "--results-dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())
