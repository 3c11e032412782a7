"""Every command answers bad arguments with one `error:` line, exit status 2, and no change on disk.

`test_forty_bad_inputs_across_the_five_commands` is the table across train.py, sample.py,
evaluate.py, export_diffusers.py and cache_latents.py (unknown names, out-of-range values,
contradictory flags, missing, empty, truncated and non-checkpoint files, a directory where a file
is expected and the reverse, an unwritable output); a full disk is simulated separately. The
benchmark scripts have their own table, and every script runs once for real with a bad flag.
"""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TINY, randomize

from dit.cli import run_cli
from dit.networks.dit import DiT

SCRIPTS = ["train.py", "sample.py", "cache_latents.py", "evaluate.py", "export_diffusers.py", "benchmarks/gflops/gflops.py",
           "benchmarks/throughput/throughput.py", "benchmarks/vs_diffusers/vs_diffusers.py", "benchmarks/sampler_quality/sampler_quality.py",
           "benchmarks/scaling_sweep/scaling_sweep.py", "benchmarks/diffusers_export/diffusers_export.py", "benchmarks/ssm_vs_dit/ssm_vs_dit.py",
           "benchmarks/classifier_guidance/classifier_guidance.py", "train_classifier.py", "segment.py", "benchmarks/segmentation/segmentation.py",
           "train_vq.py"]


def script(path):
    spec = importlib.util.spec_from_file_location(path.replace("/", "_")[:-3], ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def refused(capsys, main, argv) -> str:
    """Run a script's main in this process as its command line would (dit.cli.run_cli): it must
    answer with exit status 2 and one `error:` line, which is returned. Each script's real entry
    point (a subprocess: no traceback) is run in test_real_scripts_answer_a_bad_flag_without_a_traceback."""
    capsys.readouterr()
    code = run_cli(main, [str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, code, lines)
    return lines[0]


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
        "benchmarks/gflops/gflops.py": [(["--rows", "3"], "unrecognized arguments")],
        "benchmarks/throughput/throughput.py": [
            (["train", "--models", "DiT-XXL/2"], "invalid choice"),
            (["train", "--batch", "0"], "must be positive"),
            (["sample", "--image-size", "100"], "multiple of 64"),
            (["max-batch", "--device", "cpu"], "needs a CUDA device"),
            (["jog"], "invalid choice"),
            (["--batch", "2"], "say what to time"),
            (["--report", "--out", f["full"].parent / "none"], "run the benchmark first"),
        ],
        "benchmarks/vs_diffusers/vs_diffusers.py": [
            (["--models", "DiT-M/2"], "invalid choice"),
            (["--batch", "-1"], "must be positive"),
            (["--image-size", "100"], "multiple of 64"),
            (["--iters", "1"], "at least 2"),
            (["--report", "--out", f["full"].parent / "none"], "run the benchmark first"),
        ],
        "benchmarks/sampler_quality/sampler_quality.py": [
            (["--ckpt", f["pixel"], "--samplers", "plms"], "unknown samplers"),
            (["--ckpt", f["pixel"], "--reference", "ddpm"], "SAMPLER:STEPS"),
            (["--ckpt", f["pixel"], "--bootstrap", "1"], "at least 2 resamples"),
            (["--report", "--out", f["full"].parent / "none"], "run the benchmark first"),
            (["--ckpt", f["missing"]], "not found"),
            (["--ckpt", f["pixel"], "--metric", "inception"], "needs --ref"),
        ],
        "benchmarks/scaling_sweep/scaling_sweep.py": [
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


@pytest.fixture
def bad_files(tmp_path, tiny_export):
    """Files a user might point a command at by mistake."""
    from safetensors.torch import save_file

    import torch

    d = tmp_path / "bad"
    d.mkdir()
    (d / "empty.pt").write_bytes(b"")
    whole = tiny_export.read_bytes()
    (d / "truncated.safetensors").write_bytes(whole[: len(whole) // 2])
    (d / "notes.txt").write_text("not a checkpoint")
    np.savez(d / "images.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    save_file({"w": torch.zeros(3)}, str(d / "alien.safetensors"))  # valid safetensors, not a DiT
    (d / "nodir").mkdir()  # a directory holding no export
    (d / "emptyfolder").mkdir()  # an image folder without class folders
    (d / "afile").write_text("a file where a directory is expected")
    (d / "truncated.npz").write_bytes((d / "images.npz").read_bytes()[:40])
    return d


def forty_cases(d, export, run_dir):
    """(script, argv, what the one line must say): at least 40 across the five commands."""
    train = ["--model", "DiT-S/4", "--hidden-size", "32", "--depth", "2", "--num-heads", "2", "--image-size", "16",
             "--shapes-images", "64", "--global-batch-size", "8", "--max-steps", "1", "--no-progress",
             "--results-dir", str(run_dir)]
    ck = ["--ckpt", str(export), "--device", "cpu", "--no-progress", "--out", str(run_dir / "g.png")]
    return [
        # train.py: unknown names, out-of-range values, contradictions, missing and wrong files
        ("train.py", ["cpu-demos"], "unknown preset 'cpu-demos'"),
        ("train.py", [*train, "--model", "DiT-XXL/2"], "unknown model 'DiT-XXL/2'"),
        ("train.py", [*train, "--arch", "unet"], "unknown architecture 'unet'"),
        ("train.py", [*train, "--process", "flowz"], "unknown process 'flowz'"),
        ("train.py", [*train, "--global-batch-size", "0"], "--global-batch-size must be positive"),
        ("train.py", [*train, "--ema-decay", "1.5"], "--ema-decay must be in [0, 1)"),
        ("train.py", [*train, "--image-size", "18"], "patch size 4 does not divide"),
        ("train.py", [*train, "--hidden-size", "30", "--num-heads", "4"], "not divisible by num_heads 4"),
        ("train.py", [*train, "--sample-sampler", "dpm"], "unknown sampler 'dpm'"),
        ("train.py", [*train, "--sample-steps", "1"], "ddim steps must be an int in 2..1000"),
        ("train.py", [*train, "--resume", str(d / "missing")], "does not exist"),
        ("train.py", [*train, "--resume", str(d / "nodir")], "neither a checkpoint nor a run directory"),
        ("train.py", [*train, "--mixed-precision", "fp8"], "--mixed-precision must be one of no, bf16, fp16"),
        ("train.py", [*train, "--data", str(d / "missing")], "does not exist"),
        ("train.py", [*train, "--data", str(d / "emptyfolder")], "no class"),
        ("train.py", [*train, "--flip", "maybe"], "expected true or false"),
        ("train.py", [*train, "--lr", "-1"], "--lr must be positive"),
        ("train.py", [*train, "--stop-at", "0"], "--stop-at must be a positive step"),
        ("train.py", [*train, "--vae", str(d / "nodir")], "VAE"),
        ("train.py", [*train, "--global-batch-size", "7", "--grad-accum", "2"], "not divisible by 1 processes x 2"),
        # sample.py
        ("sample.py", ["--ckpt", str(d / "missing.pt"), "--classes", "1"], "not found"),
        ("sample.py", ["--ckpt", str(d / "empty.pt"), "--classes", "1"], "not a readable PyTorch checkpoint"),
        ("sample.py", ["--ckpt", str(d / "truncated.safetensors"), "--classes", "1"], "not a readable safetensors"),
        ("sample.py", ["--ckpt", str(d / "notes.txt"), "--classes", "1"], "not a readable PyTorch checkpoint"),
        ("sample.py", ["--ckpt", str(d / "alien.safetensors"), "--classes", "1"], "cannot tell the architecture"),
        ("sample.py", ["--ckpt", str(d / "nodir"), "--classes", "1"], "is a directory without a DiT export"),
        ("sample.py", [*ck, "--classes", "10"], "outside [0, 10)"),
        ("sample.py", [*ck, "--classes", "1", "--sampler", "magic"], "unknown sampler 'magic'"),
        ("sample.py", [*ck, "--classes", "1", "--steps", "0"], "must be positive"),
        ("sample.py", [*ck, "--classes", "1", "--sampler", "ddpm", "--steps", "1"], "ddpm steps must be an int in 2"),
        ("sample.py", [*ck, "--classes", "1", "--cfg-scale", "-1"], "--cfg-scale must be >= 0"),
        ("sample.py", [*ck, "--npz", str(run_dir / "x.npz")], "--npz needs --num-samples"),
        ("sample.py", [*ck, "--classes", "1", "--num-samples", "2", "--npz", str(run_dir / "x.npz")], "--classes or --num-samples, not both"),
        ("sample.py", [*ck, "--classes", "1", "--precision", "fp8"], "invalid choice"),
        ("sample.py", [*ck, "--classes", "1", "--image-size", "18"], "not divisible by patch size 2"),
        ("sample.py", [*ck, "--classes", "1", "--arch", "unet"], "invalid choice"),
        ("sample.py", [*ck[:-1], str(d / "afile" / "g.png"), "--classes", "1", "--steps", "2"], "could not write output"),
        # evaluate.py
        ("evaluate.py", ["--samples", str(d / "missing.npz"), "--metric", "shapes"], "does not exist"),
        ("evaluate.py", ["--samples", str(d / "truncated.npz"), "--metric", "shapes"], "npz"),
        ("evaluate.py", ["--samples", str(d / "emptyfolder"), "--metric", "shapes"], "no images"),
        ("evaluate.py", ["--samples", str(d / "images.npz")], "needs --ref"),
        ("evaluate.py", ["--ckpt", str(export)], "--ckpt needs --num-samples"),
        ("evaluate.py", ["--samples", str(d / "images.npz"), "--arch", "dit", "--metric", "shapes"], "--arch and --process describe --ckpt"),
        # export_diffusers.py
        ("export_diffusers.py", ["--ckpt", str(d / "missing.pt"), "--out", str(run_dir / "p")], "not found"),
        ("export_diffusers.py", ["--ckpt", str(d / "truncated.safetensors"), "--out", str(run_dir / "p")], "not a readable safetensors"),
        ("export_diffusers.py", ["--ckpt", str(export), "--out", str(d)], "choose a new directory"),
        # cache_latents.py
        ("cache_latents.py", ["--data", str(d / "missing"), "--out", str(run_dir / "c")], "does not exist"),
        ("cache_latents.py", ["--data", str(d), "--out", str(run_dir / "c"), "--vae", "none"], "nothing to cache"),
        ("cache_latents.py", ["--data", str(d), "--out", str(run_dir / "c"), "--image-size", "0"], "expected a positive size"),
        ("cache_latents.py", ["--data", str(d), "--out", str(run_dir / "c"), "--num-workers", "-1"], "--num-workers must be >= 0"),
        ("cache_latents.py", ["--data", str(d), "--out", str(run_dir / "c"), "--dtype", "int8"], "invalid choice"),
        ("cache_latents.py", ["--data", str(d), "--out", str(d / "afile")], "is a file; give a directory"),
    ]


def test_forty_bad_inputs_across_the_five_commands(bad_files, tiny_export, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs"
    table = forty_cases(bad_files, tiny_export, run_dir)
    assert len(table) >= 40 and {s for s, _, _ in table} == {"train.py", "sample.py", "evaluate.py",
                                                              "export_diffusers.py", "cache_latents.py"}
    before = sorted(tmp_path.rglob("*"))
    mains = {s: script(s).main for s in {s for s, _, _ in table}}
    for path, argv, expected in table:
        capsys.readouterr()
        code = run_cli(mains[path], argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (path, argv, err)
        assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], (path, argv, err)
        assert sorted(tmp_path.rglob("*")) == before, (path, argv, "left files behind")


def test_a_full_disk_while_writing_samples(tiny_export, tmp_path, monkeypatch, capsys):
    """ENOSPC while the grid is written: one line, exit 2, no partial PNG left."""
    import errno

    from dit.io import atomic

    real = atomic.atomic_path

    def full_disk(path, fsync=False):
        ctx = real(path, fsync)

        class Full:
            def __enter__(self):
                tmp = ctx.__enter__()
                tmp.write_bytes(b"partial")
                ctx.__exit__(OSError, OSError(errno.ENOSPC, "No space left on device"), None)
                raise OSError(errno.ENOSPC, "No space left on device")

            def __exit__(self, *a):
                return False
        return Full()

    sample = script("sample.py")  # loaded before the patch: other tests import the same module
    import dit.io.images as images

    monkeypatch.setattr(images, "atomic_path", full_disk)  # the grid is written through it
    out = tmp_path / "grid.png"
    code = run_cli(sample.main, ["--ckpt", str(tiny_export), "--classes", "1", "--steps", "2", "--out", str(out),
                                 "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert list(tmp_path.iterdir()) == []
