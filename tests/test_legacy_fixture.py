"""Files written before architecture and process keys existed (tests/fixtures/legacy, made by
commit b916af3 with make_legacy.py) load as dit + gaussian, sample bit-identically and resume exactly."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file

import sample
import train
from dit.cli import run_cli
from dit.io.checkpoint import load_model
from dit.networks.conditioning import unconditional
from dit.processes import process_from_meta
from dit.sampling import run_sampler
from dit.sampling.guidance import guided
from dit.sampling.noise import PerSampleNoise

FIXTURE = ROOT / "tests" / "fixtures" / "legacy"
SETTINGS = json.loads((FIXTURE / "settings.json").read_text())
REFERENCE = np.load(FIXTURE / "samples.npz")


def test_legacy_export_reads_as_dit_and_gaussian():
    model, ckpt = load_model(str(FIXTURE / "export.safetensors"))
    assert (ckpt.arch, ckpt.process) == ("dit", "gaussian")  # ... and reads as the defaults
    process = process_from_meta(ckpt.meta)
    assert process.to_meta() == {"schedule": "cosine", "timesteps": 1000}  # its old "diffusion" entry


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_legacy_export_samples_bit_identically(tmp_path, name):
    out = tmp_path / f"{name}.npz"
    argv = ["--ckpt", str(FIXTURE / "export.safetensors"), "--num-samples", "6", "--npz", str(out),
            "--batch-size", "4", "--seed", "3", "--no-progress", "--device", "cpu", *SETTINGS[name]]
    assert run_cli(sample.main, argv) == 0
    np.testing.assert_array_equal(np.load(out)["arr_0"], REFERENCE[f"images_{name}"])


def test_legacy_library_path_is_bit_identical():
    model, ckpt = load_model(str(FIXTURE / "export.safetensors"))
    process = process_from_meta(ckpt.meta)
    noise = PerSampleNoise([7, 8, 9, 10])
    x_T = process.prior(noise, 4, model.input_shape, "cpu")
    cond = {"y": torch.tensor([0, 3, 5, 9])}
    x0 = run_sampler(guided(model, cond, unconditional(cond, model.num_classes), 2.0), process, x_T, "ddpm", 12, noise)
    # Bit-identical on the CPU that wrote the fixture (AMD EPYC, AVX2); another CPU's kernels (an
    # AVX-512 Xeon) round differently: measured 2.6e-4 relative at most, against 0.74 for 13 steps
    # instead of 12. Bits of the sampled uint8 images are checked above, and hold on both.
    torch.testing.assert_close(x0, torch.from_numpy(REFERENCE["x0_ddpm12_cfg2"]), rtol=1e-3, atol=1e-3)


def test_legacy_training_checkpoint_resumes_exactly(tmp_path):
    """The step-30 state of the old code, resumed by today's train.py, reaches the old code's step-60 weights."""
    ckpt = tmp_path / "legacy" / "checkpoints" / "step_000000030"
    shutil.copytree(FIXTURE / "step_000000030", ckpt)
    argv = ["cpu-demo", "--data", "shapes", "--image-size", "8", "--hidden-size", "32", "--depth", "2",
            "--num-heads", "2", "--shapes-images", "64", "--global-batch-size", "8", "--max-steps", "60",
            "--ckpt-every", "30", "--keep-last", "2", "--schedule", "cosine", "--results-dir", str(tmp_path),
            "--run-name", "legacy", "--no-progress", "--sample-steps", "2"]
    assert run_cli(train.main, argv) == 0
    new = load_file(str(tmp_path / "legacy" / "checkpoints" / "step_000000060" / "model.safetensors"))
    old = load_file(str(FIXTURE / "model_step60.safetensors"))
    assert new.keys() == old.keys()
    # Bit-identical on the fixture's CPU; on an AVX-512 Xeon 4.2e-5 at most. One AdamW step at lr 1e-3
    # moves a weight ~1e-3, and steps 30-60 move every trained tensor by >= 8.4e-3: a wrong resume fails.
    for k in old:
        torch.testing.assert_close(new[k], old[k], rtol=0, atol=3e-4)


def test_arch_flag_cannot_relabel_a_legacy_export(tmp_path):
    """A legacy export records a DiT config without a key: --arch may confirm it, not contradict it."""
    from dit.errors import UserError

    argv = ["--ckpt", str(FIXTURE / "export.safetensors"), "--classes", "1", "--steps", "2",
            "--out", str(tmp_path / "g.png"), "--device", "cpu", "--no-progress"]
    assert run_cli(sample.main, [*argv, "--arch", "dit"]) == 0
    from dit.networks import ARCHITECTURES, Architecture, register_architecture

    if "other" not in ARCHITECTURES:
        register_architecture(Architecture("other", dict, lambda c: None, lambda r, d: None))
    with pytest.raises(UserError, match="--arch other, but .* holds a 'dit' arch"):
        sample.main([*argv, "--arch", "other"])
