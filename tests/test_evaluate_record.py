"""evaluate.py --out says how its numbers were made, and FID-style runs are unguided unless asked."""

import hashlib
import json
import re
import shutil
import subprocess
from importlib import metadata

import numpy as np
from conftest import ROOT, TINY, randomize

import evaluate
import sample
from dit.pipelines import evaluation
from dit.cli import run_cli
from dit.io.checkpoint import checkpoint_sha256, load_weights, save_export, weights_files
from dit.networks.dit import DiT
from dit.networks.dit_config import ModelConfig


def package_version():
    return metadata.version(metadata.packages_distributions()["dit"][0])  # pyproject's [project] version


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pixel_run(tmp_path):
    """A training-run-like directory holding a 16 px pixel-space export."""
    run = tmp_path / "run"
    run.mkdir()
    model = randomize(DiT.from_config(ModelConfig(**{**TINY, "in_channels": 3, "input_size": 16})))
    save_export(run / "export.safetensors", model, image_size=16, vae="none")
    return run


def test_out_records_checkpoint_sampling_seeds_reference_and_code(tmp_path, capsys):
    run = pixel_run(tmp_path)
    cache, out = tmp_path / "cache", tmp_path / "m.json"
    argv = ["--ckpt", str(run), "--num-samples", "6", "--metric", "shapes", "--cache-dir", str(cache),
            "--classifier-steps", "50", "--sampler", "ddim", "--steps", "3", "--seed", "3", "--no-progress",
            "--out", str(out)]
    assert run_cli(evaluate.main, argv) == 0
    got = json.loads(out.read_text())
    assert got["checkpoint"] == str(run)
    assert got["checkpoint_sha256"] == sha256(run / "export.safetensors")  # the file the loader reads
    assert (got["sampler"], got["steps"], got["cfg_scale"], got["eta"]) == ("ddim", 3, 1.0, None)
    assert (got["cfg_channels"], got["guidance_interval"], got["labels"]) == (None, None, "balanced")
    assert got["seeds"] == [3, 8] and got["num_samples"] == 6
    # The network evaluations per sample, counted while drawing (DDIM: one per step), and the class
    # balance the metrics were measured on: an equal count per class where the classes divide N.
    counts = got["class_counts"]
    assert got["nfe"] == 3 and sum(counts) == 6 and max(counts) - min(counts) <= 1
    assert run_cli(evaluate.main, argv) == 0  # every shard from the cache: one sample counts again
    assert json.loads(out.read_text())["nfe"] == 3
    assert (got["arch"], got["process"]) == ("dit", "gaussian")
    assert got["reference"].startswith("built-in shapes") and got["reference_sha256"] is None
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert got["code_version"] == (head.stdout.strip() if head.returncode == 0 else package_version())

    # Unguided by default: the very images sample.py draws with --cfg-scale 1 (and not its default, 4).
    unguided, guided = tmp_path / "cfg1.npz", tmp_path / "cfg4.npz"
    common = ["--ckpt", str(run), "--num-samples", "6", "--labels", "balanced", "--sampler", "ddim", "--steps", "3",
              "--seed", "3", "--no-progress"]
    assert run_cli(sample.main, [*common, "--cfg-scale", "1", "--npz", str(unguided)]) == 0
    assert run_cli(sample.main, [*common, "--npz", str(guided)]) == 0
    with np.load(got["samples"]) as ev, np.load(unguided) as one, np.load(guided) as four:
        assert np.array_equal(ev["arr_0"], one["arr_0"]) and not np.array_equal(ev["arr_0"], four["arr_0"])

    # A --cfg-scale the user gives wins, and is what the record says.
    assert run_cli(evaluate.main, [*argv, "--cfg-scale", "2.5"]) == 0
    assert json.loads(out.read_text())["cfg_scale"] == 2.5


def test_reference_file_is_recorded_with_its_hash(tmp_path):
    ref = tmp_path / "ref.npz"
    np.savez(ref, mu=np.zeros(4), sigma=np.eye(4))
    args, rest = evaluate.parse_args(["--samples", str(tmp_path / "s.npz"), "--ref", str(ref)])
    record = evaluation.reference_record(args, 10)
    assert (record["reference"], record["reference_sha256"]) == (str(ref), sha256(ref)) and record["num_samples"] == 10


def test_code_version_falls_back_to_the_package_version_without_git(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable anywhere
    assert evaluation.code_version() == package_version()


def test_checkpoint_hash_is_of_the_file_the_loader_reads(tmp_path):
    run = pixel_run(tmp_path)
    step = run / "checkpoints" / "step_000000002"
    step.mkdir(parents=True)
    shutil.copy(run / "export.safetensors", step / "model.safetensors")
    model = randomize(DiT.from_config(ModelConfig(**{**TINY, "in_channels": 3, "input_size": 16})), seed=1)
    save_export(step / "ema.safetensors", model, image_size=16, vae="none")
    for spec in (run, run / "export.safetensors", step):
        (read,) = weights_files(str(spec))
        assert str(read) == load_weights(str(spec)).source
        assert checkpoint_sha256(str(spec)) == sha256(read)
    assert re.fullmatch("[0-9a-f]{64}", checkpoint_sha256(str(step)))
    assert checkpoint_sha256(str(step)) != checkpoint_sha256(str(run))  # ema, not the raw weights
