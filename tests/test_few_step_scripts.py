"""MeanFlow and shortcut models through the real scripts: train.py (exact resume, two processes like one),
sample.py --steps 1 (grid and npz with its NFE record), guidance refused where training folded it in,
evaluate.py's NFE, and the few-step benchmark's smoke run."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, free_port
from safetensors.torch import load_file

import sample
from dit.cli import run_cli
from test_train import ENV, check_exact_resume, same_tensors, torchrun, train_run

FLAGS = {"meanflow": ["--process", "meanflow", "--meanflow-share", "0.5", "--time-sampling", "logit-normal"],
         "shortcut": ["--process", "shortcut", "--shortcut-steps", "8", "--shortcut-share", "0.5"]}


@pytest.mark.parametrize("process", list(FLAGS))
def test_resume_is_exact_and_two_processes_train_like_one(tmp_path, process):
    flags = [*FLAGS[process], "--sample-steps", 1]
    full = check_exact_resume(tmp_path, *flags)  # 4 steps vs cut at 2 and resumed: same weights, EMA, losses
    config = json.loads((full / "config.json").read_text())
    assert config["process"] == process and config["sample_sampler"] == "few-step"
    sd = load_file(str(full / "export.safetensors"))
    assert "span_embedder.mlp.0.weight" in sd and sd["span_embedder.mlp.2.weight"].abs().sum() > 0  # it learns
    one = train_run(tmp_path, *flags, "--max-steps", 3, name="one")
    out = torchrun(tmp_path, "dist", *flags, "--run-name", "two", "--max-steps", 3, port=free_port())
    r0, r1 = load_file(str(out / "rank0_model.safetensors")), load_file(str(out / "rank1_model.safetensors"))
    same_tensors(r0, r1)  # DDP all-reduced the gradient pass (the JVP ran on the bare module)
    same_tensors(r0, load_file(str(one / "checkpoints" / "step_000000003" / "model.safetensors")), atol=1e-5)


def test_sample_one_step_and_the_npz_records_its_nfe(tmp_path, capsys):
    run = train_run(tmp_path, *FLAGS["meanflow"], "--meanflow-cfg", "2", "--max-steps", 2, "--sample-steps", 1)
    grid = tmp_path / "grid.png"
    assert run_cli(sample.main, ["--ckpt", str(run), "--classes", "0", "1", "--steps", "1", "--out", str(grid),
                                 "--no-progress"]) == 0
    assert grid.is_file() and "few-step: 1.0 function evaluations per batch\n" in capsys.readouterr().out  # one pass
    npz = tmp_path / "s.npz"
    assert run_cli(sample.main, ["--ckpt", str(run), "--num-samples", "4", "--npz", str(npz), "--no-progress"]) == 0
    record = json.loads((tmp_path / "s.npz.json").read_text())
    assert record["nfe"] == 1 and record["steps"] == 1 and record["sampler"] == "few-step" and record["cfg_scale"] == 1
    assert np.load(npz)["arr_0"].shape == (4, 16, 16, 3)
    # Guidance is in the weights: a given scale is refused in one line, before anything is written.
    res = subprocess.run([sys.executable, "sample.py", "--ckpt", str(run), "--classes", "0", "--cfg-scale", "3",
                          "--out", str(tmp_path / "no.png")], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert res.returncode == 2 and "folded guidance (scale 2)" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "no.png").exists()


def test_shortcut_steps_and_flow_samplers(tmp_path):
    run = train_run(tmp_path, *FLAGS["shortcut"], "--max-steps", 2, "--sample-steps", 2)
    for extra in (["--steps", "8"], ["--sampler", "euler", "--steps", "3"]):
        assert run_cli(sample.main, ["--ckpt", str(run), "--classes", "0", *extra, "--out", str(tmp_path / "a.png"),
                                     "--no-progress"]) == 0
    res = subprocess.run([sys.executable, "sample.py", "--ckpt", str(run), "--classes", "0", "--steps", "16", "--out",
                          str(tmp_path / "b.png")], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert res.returncode == 2 and "power of two of steps up to 8" in res.stderr


def test_reflow_distils_a_flow_run_resumes_exactly_and_records_its_teacher(tmp_path):
    teacher = train_run(tmp_path, "--process", "flow", "--max-steps", 2, name="teacher")
    flags = ["--process", "reflow", "--teacher", "teacher", "--init-from", "teacher", "--teacher-steps", "2",
             "--teacher-cfg", "2"]
    full = check_exact_resume(tmp_path, *flags)
    config = json.loads((full / "config.json").read_text())
    assert config["teacher"] == config["init_from"] == str(teacher)  # run names resolved in --results-dir
    from dit.io.checkpoint import load_weights
    from dit.io.zoo import sha256_of

    recorded = load_weights(str(full / "export.safetensors")).meta["process_config"]
    assert recorded["teacher_sha256"] == sha256_of(teacher / "export.safetensors") and recorded["teacher_steps"] == 2
    res = subprocess.run([sys.executable, "train.py", "--process", "reflow", "--teacher", "nowhere", "--results-dir",
                          str(tmp_path / "none")], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert res.returncode == 2 and "--teacher nowhere" in res.stderr and not (tmp_path / "none").exists()


def test_a_network_without_a_span_is_refused(tmp_path):
    res = subprocess.run([sys.executable, "train.py", "--arch", "diffussm", "--process", "meanflow", "--results-dir",
                          str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert res.returncode == 2 and "use --arch dit" in res.stderr and not any(tmp_path.iterdir())


@pytest.mark.slow("trains four recipes through train.py and scores 19 sampler settings with the shapes judge")
def test_the_benchmark_runs_end_to_end_on_a_tiny_budget(tmp_path):
    """benchmarks/few_step/few_step.py --quality-only over given per-step costs: every recipe trains through
    train.py (reflow from flow-ln's run of the same seed), every sampler setting is scored once, and the
    tables and plot come out; a second run finds everything done."""
    from dit.eval.records import ResultsLog

    out = tmp_path / "fs"
    log = ResultsLog(out / "results.jsonl")
    for recipe, step_s in (("flow-ln", 0.07), ("meanflow", 0.14), ("shortcut", 0.1), ("reflow", 0.35)):
        log.add(kind="timing", recipe=recipe, step_s=step_s, intervals=1, threads=1)
    cmd = [sys.executable, "benchmarks/few_step/few_step.py", "--out", str(out), "--quality-only", "--seeds", "0",
           "--base-steps", "10", "--num-samples", "10", "--within-draws", "2", "--classifier-steps", "20"]
    res = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    quality = [r for r in rows if r["kind"] == "quality"]
    assert len(quality) == 4 + 3 * 2 + 3 * 2 + 3  # flow-ln 4 samplers; meanflow, shortcut 3 x 2 budgets; reflow 3
    steps = {(r["recipe"], r["budget"]): r["steps_trained"] for r in quality}
    assert steps[("flow-ln", 1)] == 10 and steps[("meanflow", 1)] == 5 and steps[("meanflow", 2)] == 10
    assert steps[("reflow", 1)] == 2
    nfe = {(r["recipe"], r["sampler_steps"]): (r["nfe"], r["passes"]) for r in quality}
    assert nfe[("meanflow", 1)] == (1, 1) and nfe[("shortcut", 2)] == (2, 4) and nfe[("flow-ln", 50)] == (50, 100)
    config = json.loads((out / "runs" / "reflow-b1-seed0" / "config.json").read_text())
    assert config["teacher"].endswith("flow-ln-b1-seed0") and config["init_from"] == config["teacher"]
    assert "acceptance:" in res.stdout and (out / "few_step.png").is_file()
    again = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and len((out / "results.jsonl").read_text().splitlines()) == len(rows)
