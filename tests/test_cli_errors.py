"""Every command answers bad arguments with one `error:` line, exit status 2, and no change on disk.

train.py, sample.py and cache_latents.py have their own larger tables (test_train, test_sample_cli,
test_latent_cache); this file covers the other commands and runs every script once for real.
"""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TINY, randomize

from dit.cli import run_cli
from dit.networks.dit import DiT

SCRIPTS = ["train.py", "sample.py", "cache_latents.py", "evaluate.py", "export_diffusers.py", "benchmarks/gflops.py",
           "benchmarks/throughput.py", "benchmarks/vs_diffusers.py", "benchmarks/sampler_quality.py",
           "benchmarks/scaling_sweep.py"]


def script(path):
    spec = importlib.util.spec_from_file_location(path.replace("/", "_")[:-3], ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def files(tmp_path):
    from dit.io.checkpoint import save_export
    from dit.networks.dit_config import ModelConfig

    pixel = tmp_path / "pixel.safetensors"
    save_export(pixel, randomize(DiT.from_config(ModelConfig(**{**TINY, "in_channels": 3}))), image_size=8, vae="none")
    floats = tmp_path / "floats.npz"
    np.savez(floats, arr_0=np.zeros((4, 8, 8, 3), np.float32))
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep me")
    return {"pixel": pixel, "floats": floats, "full": full, "missing": tmp_path / "missing.npz"}


def cases(f):
    return {
        "evaluate.py": [
            ([], "give --samples"),
            (["--samples", f["floats"], "--ckpt", f["pixel"]], "give --samples"),
            (["--ckpt", f["pixel"]], "--ckpt needs --num-samples"),
            (["--samples", f["floats"]], "needs --ref"),
            (["--samples", f["missing"], "--metric", "shapes"], "does not exist"),
            (["--samples", f["floats"], "--metric", "shapes"], "expected uint8 images"),
            (["--samples", f["floats"], "--metric", "fid"], "invalid choice"),
            (["--samples", f["floats"], "--metric", "shapes", "--steps", "5"], "unrecognized arguments"),
        ],
        "export_diffusers.py": [
            (["--ckpt", f["missing"], "--out", f["full"].parent / "new"], "not found"),
            (["--ckpt", f["pixel"], "--out", f["full"]], "not empty"),
            (["--ckpt", f["pixel"], "--out", f["full"].parent / "new"], "pixel-space model"),
            (["--out", "x"], "required: --ckpt"),
        ],
        "benchmarks/gflops.py": [(["--rows", "3"], "unrecognized arguments")],
        "benchmarks/throughput.py": [
            (["train", "--models", "DiT-XXL/2"], "invalid choice"),
            (["train", "--batch", "0"], "must be positive"),
            (["sample", "--image-size", "100"], "multiple of 64"),
            (["max-batch", "--device", "cpu"], "needs a CUDA device"),
            (["jog"], "invalid choice"),
        ],
        "benchmarks/vs_diffusers.py": [
            (["--models", "DiT-M/2"], "invalid choice"),
            (["--batch", "-1"], "must be positive"),
            (["--image-size", "100"], "multiple of 64"),
        ],
        "benchmarks/sampler_quality.py": [
            (["--ckpt", f["pixel"], "--samplers", "plms"], "unknown samplers"),
            (["--ckpt", f["pixel"], "--reference", "ddpm"], "SAMPLER:STEPS"),
            (["--ckpt", f["pixel"], "--tolerance", "2"], "--tolerance in (0, 1)"),
            (["--ckpt", f["missing"]], "not found"),
            (["--ckpt", f["pixel"], "--metric", "inception"], "needs --ref"),
        ],
        "benchmarks/scaling_sweep.py": [
            (["--only", "XXL/2"], "--only XXL/2"),
            (["--preset", "imagenet"], "needs --data"),
            (["--steps", "0"], "must be positive"),
            (["--patches", "16"], "invalid choice"),
        ],
    }


def test_bad_arguments_table(files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # default outputs (results/...) would land here
    before = sorted(tmp_path.rglob("*"))
    for path, table in cases(files).items():
        main = script(path).main
        for argv, expected in table:
            capsys.readouterr()
            code = run_cli(main, [str(a) for a in argv])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2, (path, argv, err)
            assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], (path, argv, err)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("path", SCRIPTS)
def test_real_scripts_answer_a_bad_flag_without_a_traceback(path, tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / path), "--frobnicate"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-1000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines  # the flag, or a missing required one
    assert not any(tmp_path.iterdir())
