"""The scaling sweep on a micro grid, evaluate.py end to end, the ADM .npz format."""

import csv
import json

import numpy as np
from conftest import TINY, randomize
from PIL import Image
from test_cli_errors import script

from dit.cli import run_cli
from dit.networks.dit import DiT

MICRO = ["--sizes", "S", "B", "--patches", "4", "8", "--steps", "4", "--eval-at", "2", "--num-samples", "20",
         "--sample-steps", "2", "--classifier-steps", "50", "--jobs", "2",
         "--train-args", "--shapes-images 200 --ckpt-every 2"]


def test_micro_sweep_table_plots_and_resume(tmp_path, capsys):
    sweep = script("benchmarks/scaling_sweep.py")
    out = tmp_path / "sweep"
    assert run_cli(sweep.main, ["--out", str(out), *MICRO]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["run"], int(r["step"])) for r in rows) == sorted(
        (f"{s}-{p}", k) for s in "SB" for p in (4, 8) for k in (2, 4))
    for r in rows:
        assert float(r["fd_shapes"]) >= 0 and 0 <= float(r["class_acc"]) <= 1
        assert int(r["images_seen"]) == 16 * int(r["step"])  # the cpu preset: 16 images per step
    by = {(r["run"], r["step"]): r for r in rows}
    assert float(by[("B-4", "4")]["gflops"]) > float(by[("B-8", "4")]["gflops"]) > float(by[("S-8", "4")]["gflops"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 4 and -1 <= summary["spearman_quality_vs_gflops"] <= 1
    for png in ("quality_vs_gflops.png", "quality_vs_steps.png", "quality_vs_compute.png"):
        assert Image.open(out / png).size[0] > 100
    # Re-running finds every evaluation done: nothing is trained or evaluated again.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.evals.jsonl")}
    assert run_cli(sweep.main, ["--out", str(out), *MICRO]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert run_cli(sweep.main, ["--out", str(out), *MICRO, "--report"]) == 0


def test_evaluate_npz_and_generation(tmp_path, capsys):
    import evaluate
    from dit.data import shapes
    from dit.io.checkpoint import save_export
    from dit.networks.dit_config import ModelConfig
    from dit.autoencoders.pixels import to_uint8

    x, y = shapes.ShapesDataset(40, 16, seed=3).tensors()
    npz = tmp_path / "real.npz"
    np.savez(npz, arr_0=to_uint8(x), arr_1=y.numpy())
    cache = tmp_path / "cache"
    assert run_cli(evaluate.main, ["--samples", str(npz), "--metric", "shapes", "--cache-dir", str(cache),
                                   "--classifier-steps", "100", "--out", str(tmp_path / "m.json")]) == 0
    real = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert real == json.loads((tmp_path / "m.json").read_text()) and real["class_acc"] > 0.8

    ckpt = tmp_path / "pixel.safetensors"
    model = randomize(DiT.from_config(ModelConfig(**{**TINY, "in_channels": 3, "input_size": 16})))
    save_export(ckpt, model, image_size=16, vae="none")
    argv = ["--ckpt", str(ckpt), "--num-samples", "12", "--metric", "shapes", "--cache-dir", str(cache),
            "--classifier-steps", "100", "--steps", "3", "--sampler", "ddim", "--cfg-scale", "1", "--no-progress"]
    assert run_cli(evaluate.main, argv) == 0
    fake = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert fake["num_samples"] == 12 and fake["fd_shapes"] > real["fd_shapes"]
    # The generated batch is in the ADM evaluator's format: uint8 NHWC under arr_0, labels under arr_1.
    with np.load(fake["samples"]) as data:
        assert sorted(data["arr_1"].tolist()) == sorted([i % 10 for i in range(12)])
        streamed = np.concatenate(list(adm_read_batches(fake["samples"])))
        assert np.array_equal(streamed, data["arr_0"]) and streamed.shape == (12, 16, 16, 3)


def adm_read_batches(path, batch_size=5):
    """The streaming reader of guided-diffusion's evaluations/evaluator.py (open_npz_array): the
    arr_0.npy member of the zip, its .npy header read with np.lib.format, then raw uint8 rows."""
    import zipfile

    with zipfile.ZipFile(path, "r") as zf, zf.open("arr_0.npy", "r") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(f))
        assert not fortran and dtype == np.uint8 and len(shape) == 4 and shape[-1] == 3, (shape, fortran, dtype)
        row = int(np.prod(shape[1:]))
        for start in range(0, shape[0], batch_size):
            n = min(batch_size, shape[0] - start)
            yield np.frombuffer(f.read(n * row), dtype=np.uint8).reshape(n, *shape[1:])


def test_sampler_quality_grid_summary_and_report(tmp_path, capsys):
    from dit.io.checkpoint import save_export
    from dit.networks.dit_config import ModelConfig

    ckpt = tmp_path / "pixel.safetensors"
    save_export(ckpt, randomize(DiT.from_config(ModelConfig(**{**TINY, "in_channels": 3, "input_size": 16}))),
                image_size=16, vae="none")
    bench = script("benchmarks/sampler_quality.py")
    out = tmp_path / "sq"
    argv = ["--ckpt", str(ckpt), "--num-samples", "20", "--samplers", "ddpm", "ddim", "dpm++", "--steps", "2", "3",
            "--reference", "ddpm:3", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache"),
            "--classifier-steps", "50", "--out", str(out)]
    assert run_cli(bench.main, argv) == 0
    data = json.loads((out / "sampler_quality.json").read_text())
    assert sorted((r["sampler"], r["steps"]) for r in data["rows"]) == sorted(
        (s, k) for s in ("ddpm", "ddim", "dpm++") for k in (2, 3))
    summary = data["summary"]
    ref = next(r for r in data["rows"] if (r["sampler"], r["steps"]) == ("ddpm", 3))
    assert summary["reference_quality"] == {"fd_shapes": ref["fd_shapes"], "class_acc": ref["class_acc"]}
    assert summary["ddpm"]["steps"] <= 3  # the reference is always within tolerance of itself
    for sampler in ("ddim", "dpm++"):  # a match satisfies both metrics, or there is none
        best = summary[sampler]
        assert best is None or (best["fd_shapes"] <= ref["fd_shapes"] * 1.05
                                and best["class_acc"] >= ref["class_acc"] * 0.95 and best["speedup"] > 0)
    assert Image.open(out / "sampler_quality.png").size[0] > 100
    (out / "sampler_quality.png").unlink()
    assert run_cli(bench.main, ["--ckpt", str(ckpt), "--out", str(out), "--report"]) == 0
    assert json.loads((out / "sampler_quality.json").read_text())["summary"] == summary
    assert (out / "sampler_quality.png").exists()


def test_speed_benchmarks_run_and_compare_the_same_function(tmp_path, capsys):
    vs = script("benchmarks/vs_diffusers.py")
    rows_path = tmp_path / "vs.json"
    tiny = ["--models", "DiT-S/8", "--image-size", "64", "--batch", "1", "--iters", "1", "--warmup", "0",
            "--device", "cpu"]
    assert run_cli(vs.main, [*tiny, "--json", str(rows_path)]) == 0
    rows = json.loads(rows_path.read_text())
    assert [r["what"] for r in rows] == ["train", "guided sampling step"]
    for r in rows:  # the same weights give the same outputs in both implementations
        assert r["max_abs_output_diff"] < 1e-4 and r["ours_images_per_s"] > 0 and r["diffusers_images_per_s"] > 0
    tp = script("benchmarks/throughput.py")
    for mode in (["train", "--profile"], ["sample", "--sampler", "dpm++", "--steps", "2"]):
        assert run_cli(tp.main, [mode[0], *tiny, *mode[1:], "--json", str(rows_path)]) == 0
        (row,) = json.loads(rows_path.read_text())
        assert row["mode"] == mode[0] and row["images_per_s"] > 0 and 0 < row["mfu"] < 1.5
    assert "aten::" in capsys.readouterr().out  # the profiler table
