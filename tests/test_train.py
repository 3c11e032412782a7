"""train.py end to end on tiny models: steps, resume, two processes, accumulation, exports, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, free_port
from safetensors.torch import load_file

import train
from dit.cli import run_cli
from dit.training.state import list_checkpoints

# A DiT-S/4-shaped net at width 32, depth 2, on 16 px built-in shapes in pixel space: 16 tokens.
# The optimisation flags are pinned so that the tests do not follow changes to the cpu-demo preset.
TINY = ["--model", "DiT-S/4", "--hidden-size", 32, "--depth", 2, "--num-heads", 2, "--image-size", 16,
        "--shapes-images", 64, "--global-batch-size", 8, "--lr", 1e-3, "--lr-schedule", "constant",
        "--warmup-steps", 0, "--ema-decay", 0.999, "--ema-warmup", "false", "--sample-steps", 2,
        "--samples-per-class", 1, "--log-every", 1, "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def tiny_argv(tmp_path, name, *extra) -> list[str]:
    """train.py flags of a TINY run called `name` under tmp_path."""
    return [str(a) for a in [*TINY, "--results-dir", tmp_path, "--run-name", name, *extra]]


def train_run(tmp_path, *extra, name="run"):
    assert run_cli(train.main, tiny_argv(tmp_path, name, *extra)) == 0
    return tmp_path / name


def check_exact_resume(tmp_path, *flags):
    """A 4-step run against a copy cut back to its step-2 checkpoint and resumed: the same weights,
    EMA and losses. Returns the full run's directory."""
    full = train_run(tmp_path, *flags, "--max-steps", 4, "--ckpt-every", 2, "--keep-last", 0, name="full")
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / "step_000000004")
    (cut / "export.safetensors").unlink()
    train_run(tmp_path, *flags, "--max-steps", 4, "--ckpt-every", 2, "--keep-last", 0, name="cut")
    for name in ("model.safetensors", "ema.safetensors"):
        same_tensors(load_file(str(full / "checkpoints" / "step_000000004" / name)),
                     load_file(str(cut / "checkpoints" / "step_000000004" / name)))
    assert [m["loss"] for m in metrics(cut)[-2:]] == [m["loss"] for m in metrics(full)[-2:]]
    return full


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def same_tensors(a: dict, b: dict, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if atol:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)
        else:
            assert torch.equal(a[k], b[k]), f"{k}: max |difference| {(a[k].float() - b[k].float()).abs().max():.3g}"


def test_steps_checkpoints_export_and_sampling(tmp_path):
    run = train_run(tmp_path, "--max-steps", 6, "--ckpt-every", 2, "--keep-last", 2, "--sample-every", 3)
    steps = [s for s, _ in list_checkpoints(run)]
    assert steps == [4, 6]  # keep-last 2 pruned step 2
    assert not list((run / "checkpoints").glob(".tmp*"))
    state = json.loads((run / "checkpoints" / "step_000000006" / "train_state.json").read_text())
    assert state["images_seen"] == 48 and state["config"]["hidden_size"] == 32
    assert json.loads((run / "config.json").read_text())["max_steps"] == 6
    log = metrics(run)
    assert [m["step"] for m in log] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(m["loss"]) and m["images_per_s"] > 0 and m["lr"] == 1e-3 for m in log)
    assert (run / "samples" / "step_000000003.png").is_file() and (run / "samples.png").is_file()
    # The EMA export, a checkpoint directory and the run directory all load in sample.py.
    import sample

    for ckpt in (run / "export.safetensors", run / "checkpoints" / "step_000000006", run):
        out = tmp_path / f"s{len(list(tmp_path.glob('s*.png')))}.png"
        argv = ["--ckpt", ckpt, "--classes", 0, 9, "--steps", 3, "--out", out, "--no-progress"]
        assert run_cli(sample.main, [str(a) for a in argv]) == 0 and out.is_file()
    ema = load_file(str(run / "checkpoints" / "step_000000006" / "ema.safetensors"))
    model = load_file(str(run / "checkpoints" / "step_000000006" / "model.safetensors"))
    assert not torch.equal(ema["blocks.0.attn.qkv.weight"], model["blocks.0.attn.qkv.weight"])


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = train_run(tmp_path, "--max-steps", 4, "--ckpt-every", 2, "--keep-last", 0, name="full")
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / "step_000000004")
    (cut / "export.safetensors").unlink()
    train_run(tmp_path, "--max-steps", 4, "--ckpt-every", 2, "--keep-last", 0, name="cut")  # resumes at step 2
    a, b = full / "checkpoints" / "step_000000004", cut / "checkpoints" / "step_000000004"
    for name in ("model.safetensors", "ema.safetensors"):
        same_tensors(load_file(str(a / name)), load_file(str(b / name)))
    opt_a = torch.load(a / "optimizer.bin", weights_only=True)["state"]
    opt_b = torch.load(b / "optimizer.bin", weights_only=True)["state"]
    for k in opt_a:
        same_tensors(opt_a[k], opt_b[k])
    state = json.loads((b / "train_state.json").read_text())
    assert state["step"] == 4 and state["images_seen"] == 32
    # The resumed run logged steps 3 and 4 again with the same losses.
    assert [m["loss"] for m in metrics(cut)[-2:]] == [m["loss"] for m in metrics(full)[-2:]]


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    one = train_run(tmp_path, "--max-steps", 3, name="one")
    acc = train_run(tmp_path, "--max-steps", 3, "--grad-accum", 2, name="acc")
    same_tensors(load_file(str(one / "checkpoints" / "step_000000003" / "model.safetensors")),
                 load_file(str(acc / "checkpoints" / "step_000000003" / "model.safetensors")), atol=1e-6)


def torchrun(tmp_path, out_name, *extra, port):
    """Two processes (gloo) through tests/dist_train.py; returns the directory of per-rank weights."""
    out = tmp_path / out_name
    out.mkdir()
    args = [str(a) for a in [*TINY, "--results-dir", tmp_path, *extra]]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(ROOT / "tests" / "dist_train.py"), str(out), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_two_processes_agree_with_each_other_and_with_one(tmp_path):
    one = train_run(tmp_path, "--max-steps", 3, name="one")
    out = torchrun(tmp_path, "dist", "--run-name", "two", "--max-steps", 3, port=free_port())
    r0, r1 = load_file(str(out / "rank0_model.safetensors")), load_file(str(out / "rank1_model.safetensors"))
    same_tensors(r0, r1)  # DDP keeps the replicas identical
    same_tensors(load_file(str(out / "rank0_ema.safetensors")), load_file(str(out / "rank1_ema.safetensors")))
    # The same global batch on two processes trains on the same samples with the same noise.
    same_tensors(r0, load_file(str(one / "checkpoints" / "step_000000003" / "model.safetensors")), atol=1e-5)
    for m, m1 in zip(metrics(tmp_path / "two"), metrics(one)):
        assert len(m["loss_per_process"]) == 2 and m["loss_per_process"][0] != m["loss_per_process"][1]
        assert m["loss"] == pytest.approx(sum(m["loss_per_process"]) / 2, rel=1e-6)
        assert m["loss"] == pytest.approx(m1["loss"], rel=1e-5)


def test_fsdp_matches_one_process_and_resumes_exactly(tmp_path):
    one = train_run(tmp_path, "--max-steps", 4, name="one")
    flags = ["--distributed", "fsdp", "--max-steps", 4, "--ckpt-every", 2, "--keep-last", 0]
    out = torchrun(tmp_path, "full", "--run-name", "fsdp", *flags, port=free_port())
    ckpt = tmp_path / "fsdp" / "checkpoints" / "step_000000004"
    for name in ("model", "ema"):
        assert not (out / f"rank1_{name}.safetensors").exists()  # gathered on the main process only
        same_tensors(load_file(str(out / f"rank0_{name}.safetensors")), load_file(str(ckpt / f"{name}.safetensors")))
        ref = load_file(str(one / "checkpoints" / "step_000000004" / f"{name}.safetensors"))
        same_tensors(load_file(str(ckpt / f"{name}.safetensors")), ref, atol=1e-5)
    shutil.copytree(tmp_path / "fsdp", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step_000000004")
    torchrun(tmp_path, "resumed", "--run-name", "cut", *flags, port=free_port())
    for name in ("model.safetensors", "ema.safetensors"):
        same_tensors(load_file(str(ckpt / name)),
                     load_file(str(tmp_path / "cut" / "checkpoints" / "step_000000004" / name)))


SHARD_BF16 = """
import os, sys, torch
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29534", RANK="0", WORLD_SIZE="1")
torch.distributed.init_process_group("gloo")
from dit.networks.dit import DiT
from dit.networks.dit_config import preset_config
from dit.training.parallel import shard
torch.manual_seed(0)
m = DiT.from_config(preset_config("DiT-S/4", input_size=8, in_channels=3, num_classes=10, hidden_size=32, depth=2,
                                  num_heads=2))
seen = []
m.t_embedder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
shard(m, "bf16")
with torch.autocast("cpu", dtype=torch.bfloat16):
    out = m(torch.randn(2, 3, 8, 8), torch.tensor([999.0, 3.0]), torch.tensor([1, 2]))
assert out.isfinite().all()
print(seen[0].dtype, seen[0].tolist())
"""


def test_fsdp_bf16_keeps_the_timesteps_in_float32():
    """FSDP2's bf16 policy casts a module's forward inputs by default: t = 999 would reach the
    embedder as 1000. The root keeps its inputs; the blocks' weights are still gathered in bf16."""
    res = subprocess.run([sys.executable, "-c", SHARD_BF16], env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["torch.float32", "[999.0,", "3.0]"]


def test_loss_falls_on_the_builtin_shapes(tmp_path):
    """A short real run (32 px, the demo's lr): the loss drops well below where it starts."""
    run = train_run(tmp_path, "--max-steps", 60, "--image-size", 32, "--hidden-size", 64, "--num-heads", 2,
                    "--shapes-images", 400, "--global-batch-size", 32, "--log-every", 10, "--ckpt-every", 60)
    losses = [m["loss"] for m in metrics(run)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_sigterm_saves_and_stops(tmp_path):
    args = tiny_argv(tmp_path, "term", "--max-steps", 100000, "--ckpt-every", 100000)
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = tmp_path / "term" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and log.read_text().count("\n") >= 3) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "received SIGTERM" in out
    (step, path), = list_checkpoints(tmp_path / "term")
    assert step >= 3 and json.loads((path / "train_state.json").read_text())["step"] == step


def test_bad_input_gives_one_line_and_touches_nothing(tmp_path, capsys):
    good = train_run(tmp_path, "--max-steps", 2, name="good")
    (tmp_path / "empty").mkdir()
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    cases = {
        "missing data": (["--data", tmp_path / "nope"], "does not exist"),
        "empty data": (["--data", tmp_path / "empty"], "no class sub-directories"),
        "patch does not divide": (["--image-size", 18], "patch size 4 does not divide"),
        "batch vs accumulation": (["--global-batch-size", 10, "--grad-accum", 3], "not divisible by 1 processes x 3"),
        "resume missing": (["--resume", tmp_path / "nowhere"], "does not exist"),
        "resume other model": (["--run-name", "good", "--hidden-size", 64], "hidden_size: 32 -> 64"),
        "unknown preset": (["xl3"], "unknown preset 'xl3'"),
        "unknown model": (["--model", "DiT-XXL/2"], "unknown model"),
        "bad type": (["--lr", "fast"], "expected float"),
        "bad bool": (["--flip", "maybe"], "expected true or false"),
        "negative": (["--max-steps", -1], "must be positive"),
        "heads": (["--num-heads", 5], "not divisible by num_heads"),
        "precision": (["--mixed-precision", "fp8"], "must be one of no, bf16, fp16"),
        "imagenet preset without data": (["imagenet-256"], "no --data given"),
    }
    for name, (extra, expected) in cases.items():
        capsys.readouterr()
        argv = tiny_argv(tmp_path, "bad", "--max-steps", 2, *extra)
        assert run_cli(train.main, argv) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], (name, err)
    assert not (tmp_path / "bad").exists()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    assert list_checkpoints(good)[-1][0] == 2
