"""The scaling sweep on a micro grid, evaluate.py end to end, the ADM .npz format."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TINY, randomize
from PIL import Image
from test_cli_errors import script

from dit.cli import run_cli
from dit.eval.tables import benchmark_module
from dit.networks.dit import DiT

MICRO = ["--sizes", "S", "B", "--patches", "4", "8", "--steps", "4", "--eval-at", "2", "--num-samples", "20",
         "--sample-steps", "2", "--classifier-steps", "50", "--jobs", "2",
         "--train-args", "--shapes-images 200 --ckpt-every 2"]


@pytest.mark.slow("trains and scores every model of a 2x2 toy sweep through train.py and evaluate.py, then resumes it")
def test_micro_sweep_table_plots_and_resume(tmp_path, capsys):
    sweep = script("benchmarks/scaling_sweep/scaling_sweep.py")
    out = tmp_path / "sweep"
    assert run_cli(sweep.main, ["--out", str(out), *MICRO]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["run"], int(r["step"])) for r in rows) == sorted(
        (f"{s}-{p}", k) for s in "SB" for p in (4, 8) for k in (2, 4))
    for r in rows:
        assert int(r["images_seen"]) == 16 * int(r["step"])  # the cpu preset: 16 images per step
        assert int(r["num_samples"]) == 20 and (r["sampler"], r["steps"], r["cfg_scale"]) == ("ddim", "2", "1.0")
    by = {(r["run"], r["step"]): r for r in rows}
    assert float(by[("B-4", "4")]["gflops"]) > float(by[("B-8", "4")]["gflops"]) > float(by[("S-8", "4")]["gflops"])
    # A row's quality is what evaluating that checkpoint gives (the export holds the step-4 EMA weights).
    again = tmp_path / "again.json"
    cmd = [sys.executable, str(ROOT / "evaluate.py"), "--ckpt", str(out / "runs" / "B-4" / "export.safetensors"),
           "--num-samples", "20", "--metric", "shapes", "--cache-dir", str(out / "eval-cache"), "--out", str(again),
           "--cfg-scale", "1", "--sampler", "ddim", "--steps", "2", "--batch-size", "250", "--no-progress",
           "--classifier-steps", "50"]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    direct = json.loads(again.read_text())
    assert float(by[("B-4", "4")]["fd_shapes"]) == direct["fd_shapes"]
    assert float(by[("B-4", "4")]["class_acc"]) == direct["class_acc"]
    summary = json.loads((out / "summary.json").read_text())
    final = [r for r in rows if r["step"] == "4"]
    from scipy.stats import spearmanr

    rho = spearmanr([float(r["gflops"]) for r in final], [float(r["fd_shapes"]) for r in final]).statistic
    assert summary["runs"] == 4 and summary["spearman_quality_vs_gflops"] == pytest.approx(rho, abs=1e-12)
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


@pytest.fixture(scope="module")
def shapes_cache(tmp_path_factory):
    """One cache for the shapes classifier (50 steps) and its reference statistics, built once (~1 min)."""
    return tmp_path_factory.mktemp("shapes-cache")


@pytest.mark.slow("samples a toy model with every sampler grid row, trains the judge and bootstraps paired differences")
def test_sampler_quality_rows_scores_paired_table_and_resume(tmp_path, capsys, shapes_cache):
    from dit.eval.intervals import paired_difference
    from dit.io.checkpoint import save_export
    from dit.networks.dit_config import ModelConfig

    ckpt = tmp_path / "pixel.safetensors"
    save_export(ckpt, randomize(DiT.from_config(ModelConfig(**{**TINY, "in_channels": 3, "input_size": 16}))),
                image_size=16, vae="none")
    bench = script("benchmarks/sampler_quality/sampler_quality.py")
    tables = benchmark_module("sampler_quality", "tables")
    out = tmp_path / "sq"
    argv = ["--ckpt", str(ckpt), "--num-samples", "20", "--samplers", "ddpm", "ddim", "dpm++", "--steps", "2", "3",
            "--reference", "ddpm:3", "--batch-size", "8", "--cache-dir", str(shapes_cache),
            "--classifier-steps", "50", "--bootstrap", "100", "--out", str(out)]
    assert run_cli(bench.main, argv) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["sampler"], r["steps"]) for r in rows) == sorted(
        (s, k) for s in ("ddpm", "ddim", "dpm++") for k in (2, 3))
    for r in rows:  # provenance, settings, a counted NFE per sample (one CFG call per step here), scores
        assert r["commit"] and r["machine"]["threads"] >= 1 and r["command"].startswith("python ")
        assert (r["num_samples"], r["cfg_scale"], r["judge_steps"], r["reference"]) == (20, 3.0, 50, "ddpm:3")
        assert r["nfe"] >= r["steps"] and r["seconds"] > 0 and 0 <= r["class_acc"] <= 1
        with np.load(out / r["scores"]) as f:
            assert f["features"].dtype == np.float32 and f["hits"].dtype == np.uint8 and len(f["hits"]) == 20
            assert f["hits"].mean() == pytest.approx(r["class_acc"])
    assert [r["nfe"] for r in rows if r["sampler"] in ("ddpm", "ddim")] == [r["steps"] for r in rows
                                                                              if r["sampler"] in ("ddpm", "ddim")]
    summary = tables.summarise(out)
    by = {(r["sampler"], r["steps"]): r for r in summary["rows"]}
    ref = by[("ddpm", 3)]
    assert ref["verdict"] == "(reference)" and "class_acc_diff" not in ref
    with np.load(out / "scores" / "ddpm-3.npz") as f:
        ref_hits = f["hits"]
    for key, r in by.items():
        for k in ("fd_shapes", "class_acc"):  # every number with a 95% interval around it
            assert r[k + "_ci"][0] <= r[k] <= r[k + "_ci"][1], (key, k)
        if key == ("ddpm", 3):
            continue
        with np.load(out / f"scores/{key[0]}-{key[1]}.npz") as f:  # the paired difference of the hits
            assert (r["class_acc_diff"], r["class_acc_diff_ci"]) == paired_difference(f["hits"], ref_hits, 100, 0)
        assert r["fd_shapes_diff"] == pytest.approx(r["fd_shapes"] - ref["fd_shapes"])
        lo, hi = r["fd_shapes_diff_ci"]
        assert lo <= r["fd_shapes_diff"] <= hi
        worse = lo > 0 or r["class_acc_diff_ci"][1] < 0
        assert r["verdict"].startswith("worse") == worse and (worse or r["verdict"] == "not resolvably worse")
    table = tables.tables(out)["samplers"]
    assert table.startswith("Measured at commit ") and "20 samples, cfg 3" in table
    assert "| sampler | steps | NFE | seconds | fd_shapes [95% CI] | class acc [95% CI] | fd_shapes − ref [95% CI] |" in table
    assert "match" not in table.lower() and "equivalent" not in table.lower().replace("not a test of equivalence", "")
    assert Image.open(out / "sampler_quality.png").size[0] > 100
    # Resumable: a rerun adds nothing; other settings are refused with one line; --report redraws the plot.
    assert run_cli(bench.main, argv) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    capsys.readouterr()
    assert run_cli(bench.main, [*argv, "--cfg-scale", "1"]) == 2
    assert "other settings (cfg_scale 3.0)" in capsys.readouterr().err
    (out / "sampler_quality.png").unlink()
    assert run_cli(bench.main, ["--out", str(out), "--report"]) == 0
    assert (out / "sampler_quality.png").exists() and not list(out.glob("*.json")) + list(out.glob("*.md"))


def test_sampler_quality_verdict_is_a_paired_one_sided_comparison(tmp_path):
    """'worse' only when the whole paired interval of the difference is on the wrong side of 0; a row a
    few samples off the reference is 'not resolvably worse' with a tight paired interval."""
    tables = benchmark_module("sampler_quality", "tables")
    rng = np.random.default_rng(0)
    n, dim = 200, 4
    (tmp_path / "scores").mkdir()
    np.savez(tmp_path / "scores" / "reference.npz", mu=np.zeros(dim), sigma=np.eye(dim))
    base = rng.standard_normal((n, dim))
    ref_hits = (rng.random(n) < 0.6).astype(np.uint8)
    close_hits = ref_hits.copy()
    close_hits[np.flatnonzero(ref_hits)[:3]] = 0  # three samples fewer right, two more: -0.005
    close_hits[np.flatnonzero(ref_hits == 0)[:2]] = 1
    cases = {("ddpm", 250): (base, ref_hits), ("ddim", 10): (base + 0.02, close_hits),
             ("ddim", 5): (base + 1.5, ref_hits), ("dpm++", 5): (base, np.zeros(n, np.uint8))}
    from dit.eval.metrics import feature_statistics, frechet_distance

    with open(tmp_path / "results.jsonl", "w") as f:
        for (sampler, steps), (feats, hits) in cases.items():
            path = f"scores/{sampler}-{steps}.npz"
            np.savez_compressed(tmp_path / path, features=feats.astype(np.float32), hits=hits)
            fd = frechet_distance(*feature_statistics(feats.astype(np.float32).astype(np.float64)), np.zeros(dim),
                                  np.eye(dim))
            f.write(json.dumps({"sampler": sampler, "steps": steps, "nfe": steps, "seconds": steps / 10,
                                "images_per_s": 1.0, "num_samples": n, "cfg_scale": 3.0, "metric": "shapes",
                                "reference": "ddpm:250", "bootstrap": 500, "bootstrap_seed": 0, "fd_shapes": fd,
                                "class_acc": float(hits.mean()), "scores": path}) + "\n")
    by = {(r["sampler"], r["steps"]): r for r in tables.summarise(tmp_path)["rows"]}
    assert by[("ddim", 10)]["verdict"] == "not resolvably worse"
    lo, hi = by[("ddim", 10)]["class_acc_diff_ci"]
    assert -0.03 <= lo < 0 < hi <= 0.02  # paired: only the five changed samples vary
    assert by[("ddim", 5)]["verdict"] == "worse (fd_shapes)" and by[("ddim", 5)]["fd_shapes_diff_ci"][0] > 0
    assert by[("dpm++", 5)]["verdict"] == "worse (class acc)"
    text = tables.tables(tmp_path)["samplers"]
    assert "provenance not recorded; 200 samples, cfg 3" in text
    assert "ddim 10 steps (25x fewer network evaluations); dpm++ none" in text


def test_bootstrap_intervals_contain_the_estimate_and_narrow_with_more_samples(shapes_cache):
    from dit.autoencoders.pixels import to_uint8
    from dit.data import shapes
    from dit.eval.metrics import ShapesMetric, feature_statistics, frechet_distance

    from dit.eval.scoring import ShapesScorer, bootstrap

    metric = ShapesMetric(16, shapes_cache, classifier_steps=50)
    scorer = ShapesScorer(metric)
    widths = {}
    for n in (40, 320):
        x, y = shapes.ShapesDataset(n, 16, seed=3).tensors()
        images, labels = to_uint8(x), y.numpy()
        data = scorer.per_sample(images, labels)
        point = scorer.statistics(data)
        full = metric(images, labels)  # the per-sample route gives the metric's own numbers
        assert point == {"fd_shapes": full["fd_shapes"], "class_acc": full["class_acc"]}
        fast = scorer.fd_to_ref(data["features"])  # the resamples' symmetric-eigenproblem distance
        assert fast == pytest.approx(frechet_distance(*feature_statistics(data["features"]), metric.ref_mu,
                                                      metric.ref_sigma), rel=1e-5)
        ci = bootstrap(scorer, data, point, 200, seed=0)
        assert ci == bootstrap(scorer, data, point, 200, seed=0) != bootstrap(scorer, data, point, 200, 1)
        for k, (lo, hi) in ci.items():
            assert lo <= point[k] <= hi and lo < hi, (n, k, lo, point[k], hi)
        widths[n] = {k: hi - lo for k, (lo, hi) in ci.items()}
    for k in ("fd_shapes", "class_acc"):  # 8x the samples: about 1/sqrt(8) the width
        assert widths[320][k] < 0.6 * widths[40][k], (k, widths)


def test_speed_benchmarks_run_and_compare_the_same_function(tmp_path, capsys, monkeypatch):
    from dit.eval.records import read_rows

    vs = script("benchmarks/vs_diffusers/vs_diffusers.py")
    tiny = ["--models", "DiT-S/8", "--image-size", "64", "--batch", "1", "--iters", "2", "--warmup", "0",
            "--device", "cpu"]
    assert run_cli(vs.main, [*tiny, "--out", str(tmp_path / "vs")]) == 0
    rows = read_rows(tmp_path / "vs" / "results.jsonl")
    assert [r["what"] for r in rows] == ["train", "guided sampling step"]
    for r in rows:  # the same weights give the same outputs in both implementations; every call kept
        assert r["max_abs_output_diff"] < 1e-4 and len(r["ours_seconds"]) == len(r["diffusers_seconds"]) == 2
        assert min(r["ours_seconds"] + r["diffusers_seconds"]) > 0 and r["commit"] and r["machine"]["cpu"]
    assert run_cli(vs.main, ["--report", "--out", str(tmp_path / "vs")]) == 0
    assert "| DiT-S/8 | guided sampling step |" in capsys.readouterr().out
    from dit.analysis.flops import count_forward_macs
    from dit.networks.dit_config import preset_config

    tp = script("benchmarks/throughput/throughput.py")
    peaks, real_peak = [], tp.device_peak
    monkeypatch.setattr(tp, "device_peak", lambda *a: (peaks.append(real_peak(*a)), peaks[-1])[1])
    macs = count_forward_macs(DiT.from_config(preset_config("DiT-S/8", input_size=8)))
    for i, mode in enumerate((["train", "--profile"], ["sample", "--sampler", "dpm++", "--steps", "2"])):
        assert run_cli(tp.main, [mode[0], *tiny, *mode[1:], "--out", str(tmp_path / "tp")]) == 0
        row = read_rows(tmp_path / "tp" / "results.jsonl")[i]
        ips = row["images_per_s"]
        assert ips == pytest.approx(1 / np.median(row["seconds"]), rel=1e-9)
        if mode[0] == "train":  # 3 x forward FLOPs (= 6 x MACs) per image over the measured peak
            flops = 6 * macs * ips
            assert row["tflops"] == pytest.approx(flops / 1e12, rel=1e-9)
            assert row["gflop_per_image"] == pytest.approx(6 * macs / 1e9, rel=1e-9)
        else:  # one call per dpm++ step, each a guided (doubled) forward: 2 x 2 x MACs per image per call
            assert row["model_calls"] == 2 and row["cfg_scale"] == 4.0
            flops = 2 * 2 * macs * 2 * ips
        assert row["mode"] == mode[0] and row["mfu"] == pytest.approx(flops / peaks[-1], rel=1e-9)
        assert row["peak_tflops"] == pytest.approx(peaks[-1] / 1e12, rel=1e-9) and 0 < row["mfu"] <= 1
    out = capsys.readouterr().out
    assert "aten::" in out and "| DiT-S/8 | 64 px | 1 | no | no |" in out  # the profiler table, then ours


def test_sweep_lists_the_diffussm_grid_with_valid_train_flags(tmp_path):
    """--arch diffussm: sizes CPU/S/XL x patches 1/2, each run's train.py flags accepted by train.py's own
    parser (no training); combinations of the other architecture refused in one line."""
    import train
    from dit.errors import UserError

    sweep = script("benchmarks/scaling_sweep/scaling_sweep.py")
    args, preset, runs = sweep.parse_args(["--arch", "diffussm", "--out", str(tmp_path / "s")])
    assert sorted(r.name for r in runs) == sorted(f"ssm-{s}-{p}" for s in ("CPU", "S", "XL") for p in (1, 2))
    assert runs[0].name == "ssm-XL-1" and runs[-1].name == "ssm-S-2"  # longest first
    by = {r.name: r for r in runs}
    assert by["ssm-S-1"].flags() == ["--arch", "diffussm", "--model", "DiffuSSM-S/1", "--hidden-size", "48",
                                     "--depth", "3"]
    assert by["ssm-CPU-2"].flags()[-4:] == ["--hidden-size", "120", "--depth", "4"]
    for r in runs:
        config, _ = train.parse_args([*preset["train"], *r.flags(), "--max-steps", "10"])
        assert (config.arch, config.model, config.hidden_size) == ("diffussm", r.flags()[3], r.hidden)
    _, _, (only,) = sweep.parse_args(["--arch", "diffussm", "--only", "XL/2", "--out", str(tmp_path / "s")])
    assert (only.size, only.patch, only.depth) == ("XL", 2, 7)
    _, _, dit_runs = sweep.parse_args(["--out", str(tmp_path / "d")])  # the default is unchanged
    assert sorted(r.name for r in dit_runs) == sorted(f"{s}-{p}" for s in ("S", "B", "L", "XL") for p in (2, 4, 8))
    assert dit_runs[0].flags() == ["--model", "DiT-XL/2", "--hidden-size", "144", "--depth", "7", "--num-heads", "9"]
    default, _, _ = sweep.parse_args(["--arch", "diffussm", "--preset", "imagenet", "--report"])
    assert default.out.name == "sweep-imagenet-diffussm"
    for argv, match in [(["--sizes", "B"], "--sizes B: --arch diffussm has CPU S XL"),
                        (["--patches", "4"], "--patches 4: --arch diffussm has 1 2"),
                        (["--only", "S/4"], "--only S/4: not one of CPU/1")]:
        with pytest.raises(UserError, match=match):
            sweep.parse_args(["--arch", "diffussm", *argv])
    with pytest.raises(UserError, match="--sizes CPU: --arch dit has S B L XL"):
        sweep.parse_args(["--sizes", "CPU"])


def test_sweep_gflops_of_a_diffussm_include_the_fft_term(tmp_path):
    """The sweep's compute columns (and so its quality-vs-GFLOPs plot) use forward_cost's total."""
    from dit.analysis.flops import forward_cost
    from dit.networks.diffussm import DiffuSSM, DiffuSSMConfig

    sweep = script("benchmarks/scaling_sweep/scaling_sweep.py")
    model = DiffuSSM(DiffuSSMConfig(input_size=8, in_channels=3, hidden_size=32, depth=2, state_size=16,
                                    num_classes=10))
    one, sixteen = forward_cost(model), forward_cost(model, batch=16)
    cost = sweep.model_cost(model, 16, 160)
    assert cost["gflops"] == one.total / 1e9 and one.analytic > 0
    assert cost["gflops_counted"] == one.counted / 1e9 and cost["gflops_s4d"] == one.analytic / 1e9
    assert cost["train_gflops_total"] == pytest.approx(3 * sixteen.total / 16 / 1e9 * 160, rel=1e-12)
    dit = DiT(**TINY)
    assert sweep.model_cost(dit, 16, 160)["gflops"] == forward_cost(dit).counted / 1e9  # DiT: as before
    rows = [{"run": f"ssm-{s}-{p}", "arch": "diffussm", "size": s, "patch": p, "step": k,
             "fd_shapes": 10.0 / (i + 1) + k, "class_acc": 0.1 * i, **sweep.model_cost(model, 16, 16 * k),
             "gflops": i + 1.0}
            for i, (s, p) in enumerate([("S", 2), ("CPU", 1), ("XL", 1)]) for k in (1, 2)]
    summary = sweep.report(rows, tmp_path, "fd_shapes", "diffussm")
    assert summary["runs"] == 3 and (tmp_path / "quality_vs_gflops.png").exists()
