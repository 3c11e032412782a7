"""Files written before architecture and process keys existed (tests/fixtures/legacy, made by
commit b916af3 with make_legacy.py) load as dit + gaussian, sample the same floats and resume to the
old weights, within tolerances measured across CPUs (the exactness policy: tests/README.md).

The old uint8 references (samples.npz, images_*) are all 0 or 255 and identical for all three
settings: this model's samples have median |x| ~ 9,000, so any label, sampler, step count or guidance
scale gives them. The export stays the input; its references are now the float images before
quantisation (samples_float.npz, make_float_references.py), and the helper refuses the old ones."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import ROOT
from helpers_compare import capture_floats, check_informative, saturated_share
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
REFERENCE = np.load(FIXTURE / "samples.npz")  # the old code's: uint8 images (saturated) and its library-path floats
FLOATS = np.load(FIXTURE / "samples_float.npz")  # the float images before quantisation, per entry of SETTINGS


def test_legacy_export_reads_as_dit_and_gaussian():
    model, ckpt = load_model(str(FIXTURE / "export.safetensors"))
    assert (ckpt.arch, ckpt.process) == ("dit", "gaussian")  # ... and reads as the defaults
    process = process_from_meta(ckpt.meta)
    assert process.to_meta() == {"schedule": "cosine", "timesteps": 1000}  # its old "diffusion" entry


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_legacy_export_samples_within_measured_tol(tmp_path, monkeypatch, name):
    out = tmp_path / f"{name}.npz"
    argv = ["--ckpt", str(FIXTURE / "export.safetensors"), "--num-samples", "6", "--npz", str(out),
            "--batch-size", "4", "--seed", "3", "--no-progress", "--device", "cpu", *SETTINGS[name]]
    with capture_floats(monkeypatch) as floats:
        assert run_cli(sample.main, argv) == 0
    assert np.load(out)["arr_0"].shape == (6, 8, 8, 3)
    # Measured tolerance: the same floats, bit for bit, on the machine that wrote samples_float.npz; on
    # another CPU the library path below moved 2.6e-4 relative at most, and batch 1 instead of 4 moves
    # these by 5.8e-5 relative at most. The smallest break seen moves them by 4.6e-3 relative (dpm++ at
    # 4 steps instead of 5); a label +1 by 0.77, another sampler by 6.6e-3 to 0.39, cfg 3 -> 2 by 0.58.
    torch.testing.assert_close(floats.cat(), torch.from_numpy(FLOATS[name]), rtol=1e-3, atol=1e-3)


def test_old_uint8_references_are_refused_as_saturated():
    """Why the references above are floats: the old ones cannot tell the three settings apart."""
    old = [REFERENCE[f"images_{name}"] for name in sorted(SETTINGS)]
    assert all(np.array_equal(old[0], o) for o in old[1:])  # three settings, one set of images
    for name in sorted(SETTINGS):
        assert saturated_share(REFERENCE[f"images_{name}"]) == 1.0
        with pytest.raises(AssertionError, match="saturated"):
            check_informative(REFERENCE[f"images_{name}"], f"images_{name}")


def test_legacy_library_path_within_measured_tol():
    model, ckpt = load_model(str(FIXTURE / "export.safetensors"))
    process = process_from_meta(ckpt.meta)
    noise = PerSampleNoise([7, 8, 9, 10])
    x_T = process.prior(noise, 4, model.input_shape, "cpu")
    cond = {"y": torch.tensor([0, 3, 5, 9])}
    x0 = run_sampler(guided(model, cond, unconditional(cond, model.num_classes), 2.0), process, x_T, "ddpm", 12, noise)
    # Measured tolerance: bit-identical on the CPU that wrote the fixture (AMD EPYC, AVX2); another
    # CPU's kernels (an AVX-512 Xeon) round differently: measured 2.6e-4 relative at most, against 0.74
    # for 13 steps instead of 12. The old code's float x0, compared as floats: never quantised.
    torch.testing.assert_close(x0, torch.from_numpy(REFERENCE["x0_ddpm12_cfg2"]), rtol=1e-3, atol=1e-3)


def test_legacy_training_checkpoint_resumes_within_measured_tol(tmp_path):
    """The step-30 state of the old code, resumed by today's train.py, reaches the old code's step-60
    weights: a resume, but on another CPU than the fixture's, so to a measured tolerance."""
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
    # Measured tolerance: bit-identical on the fixture's CPU; on an AVX-512 Xeon 4.2e-5 at most. One
    # AdamW step at lr 1e-3 moves a weight ~1e-3, and steps 30-60 move every trained tensor by >= 8.4e-3:
    # a wrong resume fails.
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
