"""sample.py end to end on tiny models: grids, per-seed determinism, resumable .npz, every error path.

tiny_export's samples are mid-range (0.55% of uint8 values at 0 or 255), so its uint8 files can be
compared too; the float images before quantisation are compared where a test can record them."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, free_port, randomize
from helpers_compare import capture_floats, check_informative, same_across_batches
from PIL import Image

import sample
from dit.pipelines import Pipeline
from dit.networks.dit_config import ModelConfig
from dit.cli import run_cli
from dit.networks.dit import DiT


def run(argv):
    return run_cli(sample.main, [str(a) for a in argv])


def test_grid_and_per_image_pngs(tiny_export, tmp_path):
    out, imgs = tmp_path / "grid.png", tmp_path / "imgs"
    argv = ["--ckpt", tiny_export, "--classes", 1, 2, 3, "--steps", 5, "--out", out, "--save-images", imgs, "--no-progress"]
    assert run(argv) == 0
    assert sorted(p.name for p in imgs.iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert Image.open(imgs / "000000.png").size == (16, 16)
    assert Image.open(out).size == (2 + 2 * 18, 2 + 2 * 18)  # 3 images tile a 2x2 grid with 2px padding


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_sample_i_depends_only_on_seed_plus_i_within_measured_tol(tiny_export, tmp_path, monkeypatch, sampler):
    def images(batch, classes, seed, tag):
        d = tmp_path / f"{sampler}-{tag}"
        argv = ["--ckpt", tiny_export, "--classes", *classes, "--steps", 4, "--sampler", sampler,
                *(["--eta", 1.0] if sampler == "ddim" else []), "--batch-size", batch, "--seed", seed, "--out", d / "g.png", "--save-images", d, "--no-progress"]
        with capture_floats(monkeypatch) as floats:
            assert run(argv) == 0
        return floats.cat(), [np.asarray(Image.open(d / f"{i:06d}.png")) for i in range(len(classes))]

    # Measured tolerance, batch 4 against batch 1 (and 2): the float images within 5.4e-7 (x86 CPU,
    # torch 2.x, OMP_NUM_THREADS=1), the PNGs equal; a seed or label off by one moves the floats by
    # > 1.7 at most and 0.34 on average. 1e-5 leaves room for other kernels, one uint8 level for a
    # float on a rounding boundary.
    whole, pngs = images(4, [5, 6, 7, 8], 10, "b4")
    ones, pngs1 = images(1, [5, 6, 7, 8], 10, "b1")
    torch.testing.assert_close(ones, whole, rtol=0, atol=1e-5)
    for a, b in zip(pngs1, pngs):
        same_across_batches(a, b)
    # Image 2 of a run seeded 10 is image 0 of a run seeded 12 (same class).
    torch.testing.assert_close(images(2, [7], 12, "shift")[0][0], whole[2], rtol=0, atol=1e-5)
    assert (whole[0] - whole[1]).abs().amax() > 0.5  # another seed and class: another image


def test_npz_format_and_resume_after_interruption_bit_exact(tiny_export, tmp_path, monkeypatch):
    npz = tmp_path / "s.npz"
    argv = ["--ckpt", tiny_export, "--num-samples", 7, "--npz", npz, "--batch-size", 3, "--steps", 3,
            "--labels", "balanced", "--no-progress"]
    assert run(argv) == 0
    full = np.load(npz)
    assert full["arr_0"].shape == (7, 16, 16, 3) and full["arr_0"].dtype == np.uint8
    check_informative(full["arr_0"])  # mid-range samples: the comparison below can fail
    assert sorted(full["arr_1"].tolist()) == list(range(7))  # balanced: each class as often as possible
    assert not (tmp_path / "s.npz.parts").exists()

    # Interrupt a second run after its first shard, then rerun: only the missing shards are sampled.
    npz2, calls, real = tmp_path / "r.npz", [], Pipeline.generate

    def flaky(*a, **k):
        calls.append(list(a[2]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(Pipeline, "generate", flaky)
    argv2 = [str(npz2) if a == npz else a for a in argv]
    assert run(argv2) == 130 and not npz2.exists()
    assert len(list((tmp_path / "r.npz.parts").glob("*.npz"))) == 1
    calls.clear()
    monkeypatch.setattr(Pipeline, "generate", lambda *a, **k: (calls.append(list(a[2])), real(*a, **k))[1])
    assert run(argv2) == 0
    assert calls == [[3, 4, 5], [6]]
    again = np.load(npz2)
    # Bit-exact: a resume on the same machine, same batch size and process count.
    assert np.array_equal(again["arr_0"], full["arr_0"]) and np.array_equal(again["arr_1"], full["arr_1"])


def test_two_processes_match_one_within_measured_tol(tiny_export, tmp_path):
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    common = ["--ckpt", tiny_export, "--num-samples", 5, "--batch-size", 2, "--steps", 3, "--no-progress"]
    assert run([*common, "--npz", one]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "sample.py"), *map(str, common), "--npz", str(two)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    # Measured tolerance (another process count): the same uint8 images here (x86 CPU, one thread per
    # process); one level on under 1% of the values allowed, the policy of the batch-size comparisons
    # (a float on a rounding boundary). A seed off by one changes most values by far more.
    same_across_batches(np.load(two)["arr_0"], np.load(one)["arr_0"])
    assert np.array_equal(np.load(two)["arr_1"], np.load(one)["arr_1"])  # the labels: no float decides them


def _bad_inputs(tmp_path, tiny_export, tiny_vae_dir):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02garbage")
    other = tmp_path / "other.safetensors"
    from dit.io.checkpoint import save_export

    save_export(other, randomize(DiT.from_config(ModelConfig(**{**TINY, "hidden_size": 64}))), vae=str(tiny_vae_dir))
    ck = ["--ckpt", tiny_export]
    return {
        "unknown model": ([*ck, "--model", "DiT-XXL/2", "--classes", 1], "DiT-XL/2"),
        "class out of range": ([*ck, "--classes", 3, 10], "outside [0, 10)"),
        "negative class": ([*ck, "--classes", -1], "outside [0, 10)"),
        "zero steps": ([*ck, "--classes", 1, "--steps", 0], "must be positive"),
        "too many steps": ([*ck, "--classes", 1, "--steps", 2000], "2000"),
        "not a number": ([*ck, "--classes", 1, "--steps", "ten"], "positive number"),
        "patch does not divide": (["--ckpt", tiny_export, "--model", "DiT-S/4", "--image-size", 20, "--classes", 1], "does not divide"),
        "image vs vae factor": ([*ck, "--image-size", 15, "--classes", 1], "multiple"),
        "model does not fit": ([*ck, "--model", "DiT-S/2", "--classes", 1], "does not fit"),
        "size the patch does not tile": (["--ckpt", other, "--image-size", 18, "--classes", 1], "not divisible by patch size 2"),
        "missing file": (["--ckpt", tmp_path / "missing.pt", "--classes", 1], "not found"),
        "corrupt file": (["--ckpt", corrupt, "--classes", 1], "corrupt"),
        "no work": ([*ck], "nothing to sample"),
        "npz without count": ([*ck, "--npz", tmp_path / "x.npz"], "--npz needs --num-samples"),
        "unknown sampler": ([*ck, "--classes", 1, "--sampler", "magic"], "unknown sampler 'magic' for the 'gaussian' process; choose one of"),
        "negative cfg": ([*ck, "--classes", 1, "--cfg-scale", -2], ">= 0"),
        "too many cfg channels": ([*ck, "--classes", 1, "--cfg-channels", 9], "channel"),
        "unknown flag": ([*ck, "--classes", 1, "--frobnicate"], "unrecognized"),
    }


def test_every_bad_input_gives_one_clear_line(tiny_export, tiny_vae_dir, tmp_path, capsys):
    before = set(tmp_path.rglob("*"))
    for name, (argv, expected) in _bad_inputs(tmp_path, tiny_export, tiny_vae_dir).items():
        capsys.readouterr()
        code = run([*argv, "--out", tmp_path / "never.png", "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, name
        assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], (name, err)
    assert not (tmp_path / "never.png").exists()
    assert set(tmp_path.rglob("*")) - before <= {tmp_path / "corrupt.pt", tmp_path / "other.safetensors"}


def test_real_script_reports_without_traceback(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "sample.py"), "--ckpt", str(tmp_path / "nope.pt"), "--classes", "1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: checkpoint")
