"""Training survives kills, NaNs, full disks and failing processes; nothing good is ever lost."""

import json
import pytest
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import ROOT, free_port
from safetensors.torch import load_file
from test_train import ENV, metrics, same_tensors, tiny_argv, train_run

import train
from dit.training import parallel
from dit.processes.gaussian import GaussianDiffusion
from dit.cli import run_cli
from dit.training.state import list_checkpoints


@pytest.mark.slow("kills train.py at random points many times and resumes each run")
def test_random_kills_never_lose_a_checkpoint_and_resume_exactly(tmp_path):
    """SIGKILL at random moments (checkpoints every step, so many kills land inside a save); every
    restart resumes from the newest complete checkpoint, and the end result equals an unkilled run."""
    flags = ["--max-steps", 60, "--ckpt-every", 1, "--keep-last", 2, "--log-every", 1]
    # Every run is a fresh train.py process with the same environment, the reference included: what a
    # user re-running the command gets (a run inside this test process would share its global state).
    reference, args = _train_py(tmp_path, "reference", flags), tiny_argv(tmp_path, "killed", *flags)
    rng = random.Random(0)
    steps_at_kill = []
    for _ in range(4):
        before = (list_checkpoints(tmp_path / "killed") or [(0, None)])[-1][0]
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120  # until this run has saved a checkpoint of its own, then a random moment
        while time.time() < deadline and proc.poll() is None:
            if (list_checkpoints(tmp_path / "killed") or [(0, None)])[-1][0] > before:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        done = list_checkpoints(tmp_path / "killed")
        steps_at_kill.append(done[-1][0])
        for _, path in done:  # every checkpoint that looks complete is complete and loadable
            state = json.loads((path / "train_state.json").read_text())
            assert state["images_seen"] == 8 * state["step"]
            load_file(str(path / "model.safetensors"))
            load_file(str(path / "ema.safetensors"))
            torch.load(path / "optimizer.bin", weights_only=True)
    assert steps_at_kill == sorted(steps_at_kill) and steps_at_kill[-1] < 60
    _train_py(tmp_path, "killed", flags)  # the same command, to the end
    a, b = reference / "checkpoints" / "step_000000060", tmp_path / "killed" / "checkpoints" / "step_000000060"
    for name in ("model.safetensors", "ema.safetensors"):
        same_tensors(load_file(str(a / name)), load_file(str(b / name)))
    assert json.loads((b / "train_state.json").read_text())["images_seen"] == 480
    assert [m["step"] for m in metrics(tmp_path / "killed")][-1] == 60  # the log survived the kills


def _train_py(tmp_path, name: str, flags: list) -> Path:
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), *tiny_argv(tmp_path, name, *flags)], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp_path / name


def _poison(monkeypatch, bad_calls):
    """Make training_losses return NaN on the given (0-based) call numbers."""
    real, calls = GaussianDiffusion.training_losses, []

    def losses(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if len(calls) in bad_calls:
            out = {k: v * float("nan") for k, v in out.items()}
        calls.append(1)
        return out

    monkeypatch.setattr(GaussianDiffusion, "training_losses", losses)


def _step_state(run, step):
    """Weights, EMA and optimizer state saved at `step`."""
    path = run / "checkpoints" / f"step_{step:09d}"
    optim = torch.load(path / "optimizer.bin", weights_only=True)["state"]
    return (load_file(str(path / "model.safetensors")), load_file(str(path / "ema.safetensors")),
            {f"{i}.{k}": v for i, s in optim.items() for k, v in s.items()})


def test_nonfinite_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    _poison(monkeypatch, {2, 3})  # the losses of steps 3 and 4 are NaN
    run = train_run(tmp_path, "--max-steps", 6, "--ckpt-every", 1, "--keep-last", 10, name="nan")
    log = metrics(run)
    assert [m["skipped_steps"] for m in log] == [0, 0, 1, 2, 2, 2]
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in log)
    # A skipped step changes nothing: weights, EMA and optimizer state (moments, step count) after
    # steps 3 and 4 are those after step 2; steps 5 and 6 train again, from finite weights.
    before, after = _step_state(run, 2), _step_state(run, 4)
    for saved, kept in zip(before, after):
        same_tensors(saved, kept)
    weights = _step_state(run, 6)[0]
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert not torch.equal(weights["blocks.0.attn.qkv.weight"], after[0]["blocks.0.attn.qkv.weight"])


class _OneProcess:
    @staticmethod
    def reduce(tensor, op):
        return tensor


def test_guard_counts_nonfinite_losses_but_not_fp16_gradient_overflows():
    from dit.training.guard import StepGuard

    one, inf, nan = torch.tensor(1.0), torch.tensor(float("inf")), torch.tensor(float("nan"))
    fp16 = StepGuard("cpu", fp16=True)
    # An overflowing gradient under fp16 is the loss scaler's normal search: skipped, not counted.
    assert [bool(fp16.check(loss, norm)) for loss, norm in [(one, inf), (one, inf), (one, one), (nan, nan)]] == [
        False, False, True, False]
    assert fp16.read(_OneProcess) == (1, 1)  # only the non-finite loss
    plain = StepGuard("cpu", fp16=False)
    for loss, norm in [(one, inf), (nan, nan), (one, one), (one, inf)]:
        plain.check(loss, norm)
    assert plain.read(_OneProcess) == (3, 2)  # every non-finite step; the longest run was 2
    assert plain.read(_OneProcess) == (3, 1)  # the run in progress carries over to the next read


# train.py in a process of its own (Accelerate fixes mixed precision once per process), with the
# gradients of steps 3-5 made infinite while their loss stays finite: what an fp16 overflow looks like.
_OVERFLOW = """
import sys
import torch
import train
from dit.cli import run_cli
from dit.processes.gaussian import GaussianDiffusion

class Overflow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")

real, calls = GaussianDiffusion.training_losses, []

def losses(self, *args, **kwargs):
    out = real(self, *args, **kwargs)
    if len(calls) in (2, 3, 4):
        out["loss"] = Overflow.apply(out["loss"])
    calls.append(1)
    return out

GaussianDiffusion.training_losses = losses
sys.exit(run_cli(train.main, sys.argv[1:]))
"""


def test_fp16_gradient_overflows_are_skipped_without_tripping_the_guard(tmp_path):
    """Under fp16, overflowing gradients (finite loss) are the loss scaler's normal search: the steps are
    skipped, but not counted, so three in a row do not stop a run whose limit is 2."""
    argv = tiny_argv(tmp_path, "fp16", "--max-steps", 7, "--mixed-precision", "fp16", "--max-nonfinite", 2,
                     "--ckpt-every", 1, "--keep-last", 10)
    res = subprocess.run([sys.executable, "-c", _OVERFLOW, *argv], env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "fp16"
    assert json.loads((run / "config.json").read_text())["mixed_precision"] == "fp16"
    log = metrics(run)
    assert [m["step"] for m in log] == list(range(1, 8)) and all(m["skipped_steps"] == 0 for m in log)
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in log)
    before, after = _step_state(run, 2), _step_state(run, 5)
    for saved, kept in zip(before, after):  # the overflowing steps 3-5 changed nothing
        same_tensors(saved, kept)
    weights = _step_state(run, 7)[0]
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert not torch.equal(weights["blocks.0.attn.qkv.weight"], after[0]["blocks.0.attn.qkv.weight"])


def test_too_many_nonfinite_steps_stop_the_run_keeping_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, set(range(5, 100)))
    argv = tiny_argv(tmp_path, "diverged", "--max-steps", 50, "--ckpt-every", 4, "--max-nonfinite", 3)
    assert run_cli(train.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 consecutive steps with a non-finite loss" in err[0] and "step_000000004" in err[0]
    (step, path), = list_checkpoints(tmp_path / "diverged")
    assert step == 4 and all(torch.isfinite(v).all() for v in load_file(str(path / "model.safetensors")).values())


def test_failed_checkpoint_write_reports_and_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    real, calls = parallel.Replicated.save, []

    def full_disk(self, directory, meta):
        calls.append(directory)
        if len(calls) == 2:
            real(self, directory, meta)  # half written, then the disk fills up
            raise OSError(28, "No space left on device")
        return real(self, directory, meta)

    monkeypatch.setattr(parallel.Replicated, "save", full_disk)
    argv = tiny_argv(tmp_path, "full", "--max-steps", 6, "--ckpt-every", 2, "--keep-last", 1)
    assert run_cli(train.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "intact" in err[0]
    (step, path), = list_checkpoints(tmp_path / "full")
    assert step == 2 and not list((tmp_path / "full" / "checkpoints").glob(".tmp*"))
    monkeypatch.setattr(parallel.Replicated, "save", real)
    assert run_cli(train.main, argv) == 0  # space freed: the same command resumes from step 2
    assert [s for s, _ in list_checkpoints(tmp_path / "full")] == [6]


def test_one_failing_process_stops_the_whole_job(tmp_path):
    args = tiny_argv(tmp_path, "crash", "--max-steps", 1000, "--dist-timeout-min", 1)
    out = tmp_path / "o"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "tests" / "dist_train.py"), str(out), *args]
    start = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**ENV, "DIT_TEST_FAIL_RANK": "1", "DIT_TEST_FAIL_STEP": "3"})
    assert res.returncode != 0 and time.time() - start < 240
    assert "injected failure on rank 1" in res.stderr


def test_bad_input_found_outside_the_suite_is_one_line_and_writes_nothing(tmp_path, capsys):
    """A truncated checkpoint given to --resume, a --results-dir under a file, and a --data folder whose
    every image fails to decode: each one line, exit 2, nothing left behind (issue 31, found by hand)."""
    from test_hardening import TINY_RUN

    base = [*TINY_RUN, "--results-dir", str(tmp_path / "r"), "--no-progress"]
    assert run_cli(train.main, [*base, "--run-name", "a", "--max-steps", "2", "--ckpt-every", "1"]) == 0
    ckpt = tmp_path / "r" / "a" / "checkpoints" / "step_000000002"
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])  # a copy cut short
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "bad" / "c0").mkdir(parents=True)
    (tmp_path / "bad" / "c0" / "x.png").write_text("not a png")
    cases = {
        "truncated checkpoint": ([*base, "--run-name", "b", "--resume", str(ckpt), "--max-steps", "3"],
                                 "has a damaged model.safetensors", tmp_path / "r" / "b"),
        "results-dir under a file": ([*TINY_RUN, "--results-dir", str(tmp_path / "afile" / "sub"), "--max-steps", "1"],
                                     "afile is a file, not a folder", tmp_path / "afile" / "sub"),
        "no decodable image": ([*base, "--run-name", "c", "--data", str(tmp_path / "bad"), "--max-steps", "1"],
                               "no readable images", tmp_path / "r" / "c"),
    }
    capsys.readouterr()
    for name, (argv, message, never) in cases.items():
        assert run_cli(train.main, argv) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (name, err)
        assert not never.exists(), name
    assert (tmp_path / "afile").read_text() == "keep"


FILE_SIZE_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.path.insert(0, {root!r})
import train
from dit.cli import run_cli
sys.exit(run_cli(train.main, sys.argv[2:]))
"""


def test_a_checkpoint_write_that_stops_mid_file_keeps_the_last_checkpoint(tmp_path):
    """A real short write, not one raised before writing starts: a file-size limit makes torch.save's zip
    writer fail inside optimizer.bin. One line, exit 2, the previous checkpoint untouched and no partial
    one left; the same command then resumes from it."""
    from test_hardening import TINY_RUN

    argv = [*TINY_RUN, "--results-dir", str(tmp_path), "--run-name", "a", "--lr-schedule", "constant",
            "--ckpt-every", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert run_cli(train.main, [*argv, "--max-steps", "2"]) == 0
    ckpts = tmp_path / "a" / "checkpoints"
    kept = {f.name: f.read_bytes() for f in (ckpts / "step_000000002").iterdir()}
    optimizer = len(kept["optimizer.bin"])
    others = max(len(v) for k, v in kept.items() if k != "optimizer.bin")
    assert optimizer > others + 1000  # the limit lands inside optimizer.bin, after every other file fits
    res = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMITED.format(root=str(ROOT)), str((optimizer + others) // 2),
                          *argv, "--max-steps", "4"], capture_output=True, text=True, timeout=600, env=env)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(err) == 1 and "could not write the checkpoint at step 4" in err[0], res.stderr[-2000:]
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_000000002"]  # no .tmp_step_* left behind
    assert {f.name: f.read_bytes() for f in (ckpts / "step_000000002").iterdir()} == kept
    assert run_cli(train.main, [*argv, "--max-steps", "4"]) == 0
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_000000002", "step_000000004"]
