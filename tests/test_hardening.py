"""Flags checked before any work, switches, resume rules, safe loading: issue #14's training-side items."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY, free_port, randomize

import train
from dit.cli import run_cli
from dit.errors import UserError
from dit.networks.dit import DiT

TINY_RUN = ["--model", "DiT-S/4", "--hidden-size", "32", "--depth", "2", "--num-heads", "2", "--image-size", "16",
            "--shapes-images", "64", "--global-batch-size", "8", "--sample-steps", "2", "--samples-per-class", "1",
            "--no-progress"]


@pytest.mark.parametrize("flags, message", [
    (["--sample-sampler", "dpm"], "unknown sampler 'dpm' for the 'gaussian' process; choose one of"),
    (["--sample-sampler", "ddim", "--sample-steps", "1"], "ddim steps must be an int in 2..1000, got 1"),
    (["--sample-sampler", "dpm++", "--sample-steps", "1001"], "dpm++ steps must be an int in 1..1000"),
])
def test_preview_sampler_flags_fail_before_the_run_directory_exists(tmp_path, flags, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("+", r"\+")):
        train.main([*TINY_RUN, "--results-dir", str(tmp_path), "--run-name", "r", *flags])
    assert not any(tmp_path.iterdir())


def test_boolean_flags_are_switches():
    parse = train.parse_args
    assert parse(["--compile"])[0].compile is True
    assert parse(["--compile", "--no-compile"])[0].compile is False
    assert parse(["--no-flip"])[0].flip is False and parse(["--flip", "false"])[0].flip is False
    assert parse(["--flip", "true"])[0].flip is True and parse(["--grad-checkpointing"])[0].grad_checkpointing
    with pytest.raises(UserError, match="expected true or false, got 'maybe'"):
        parse(["--flip", "maybe"])


def test_switches_from_the_command_line(tmp_path):
    """The README shows `--compile` and `--grad-checkpointing` as switches: the real script accepts them."""
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY_RUN, "--grad-checkpointing", "--no-flip",
                        "--max-steps", "1", "--results-dir", str(tmp_path), "--run-name", "s"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["grad_checkpointing"] is True and config["flip"] is False


def test_cosine_schedule_refuses_another_max_steps_on_resume(tmp_path):
    flags = [*TINY_RUN, "--results-dir", str(tmp_path), "--lr-schedule", "cosine", "--warmup-steps", "0"]
    assert run_cli(train.main, [*flags, "--run-name", "c", "--max-steps", "4", "--stop-at", "2"]) == 0
    with pytest.raises(UserError, match=r"cosine schedule to --max-steps 4; resuming with --max-steps 8 would make "
                                        r"the learning rate jump from 0.001 to 0.00171 at step 2"):
        train.main([*flags, "--run-name", "c", "--max-steps", "8"])
    linear = [*TINY_RUN, "--results-dir", str(tmp_path), "--lr-schedule", "linear", "--warmup-steps", "0"]
    assert run_cli(train.main, [*linear, "--run-name", "l", "--max-steps", "4", "--stop-at", "2"]) == 0
    with pytest.raises(UserError, match=r"linear schedule to --max-steps 4; resuming with --max-steps 8 would make "
                                        r"the learning rate jump from 0.001 to 0.0015 at step 2"):
        train.main([*linear, "--run-name", "l", "--max-steps", "8"])
    # A constant schedule may be extended.
    flags[flags.index("cosine")] = "constant"
    assert run_cli(train.main, [*flags, "--run-name", "k", "--max-steps", "2"]) == 0
    assert run_cli(train.main, [*flags, "--run-name", "k", "--max-steps", "3"]) == 0


def test_all_ranks_resume_the_checkpoint_the_main_process_chose(tmp_path):
    """Rank 1 sees no checkpoint (a lagging view of a shared file system): it must still resume rank 0's."""
    from test_train import ENV, TINY as TRAIN_TINY

    def torchrun(out, *extra, env=None, port):
        out.mkdir()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(ROOT / "tests" / "dist_train.py"), str(out),
               *map(str, [*TRAIN_TINY, "--results-dir", tmp_path, "--run-name", "d", *extra])]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**ENV, **(env or {})})
        assert res.returncode == 0, res.stderr[-3000:]

    torchrun(tmp_path / "first", "--max-steps", 4, "--ckpt-every", 2, "--stop-at", 2, port=free_port())
    torchrun(tmp_path / "second", "--max-steps", 4, "--ckpt-every", 2, env={"DIT_TEST_BLIND_RANK": "1"}, port=free_port())
    from safetensors.torch import load_file

    r0, r1 = (load_file(str(tmp_path / "second" / f"rank{r}_model.safetensors")) for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    state = json.loads((tmp_path / "d" / "checkpoints" / "step_000000004" / "train_state.json").read_text())
    assert state["images_seen"] == 32  # resumed at step 2, not restarted


def _failing_compile(self, mode=None, backward=False):
    self.compile_error = "InductorError: no C++ compiler"
    return False


def test_a_compile_that_fails_is_an_error_unless_best_effort(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(DiT, "compile_blocks", _failing_compile)
    flags = [*TINY_RUN, "--results-dir", str(tmp_path), "--max-steps", "1", "--compile"]
    with pytest.raises(UserError, match=r"--compile: torch.compile failed \(InductorError: no C\+\+ compiler\); .*"
                                        r"--compile-best-effort"):
        train.main([*flags, "--run-name", "strict"])
    assert not (tmp_path / "strict").exists()
    assert run_cli(train.main, [*flags, "--run-name", "lax", "--compile-best-effort"]) == 0
    assert "compile: FAILED (InductorError: no C++ compiler); running eagerly" in capsys.readouterr().out


def test_sample_compile_failure_is_reported(tiny_export, tmp_path, monkeypatch, capsys):
    import sample

    monkeypatch.setattr(DiT, "compile_blocks", _failing_compile)
    argv = ["--ckpt", str(tiny_export), "--classes", "1", "--steps", "2", "--out", str(tmp_path / "g.png"),
            "--device", "cpu", "--compile"]
    with pytest.raises(UserError, match="torch.compile failed"):
        sample.main(argv)
    assert not (tmp_path / "g.png").exists()
    assert run_cli(sample.main, [*argv, "--compile-best-effort"]) == 0
    assert "running eagerly" in capsys.readouterr().out

    # evaluate.py's generation honours the same flags (its pipeline compiles as sample.py's does).
    import evaluate

    ev = ["--ckpt", str(tiny_export), "--num-samples", "2", "--metric", "inception", "--no-fid", "--no-prc",
          "--no-isc", "--steps", "2", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--compile"]
    with pytest.raises(UserError, match="torch.compile failed"):
        evaluate.main(ev)


def test_pickles_with_objects_say_so(tmp_path):
    """A plain pickle (protocol 4) holding a function: a refusal naming the cause, not "truncated or corrupt"."""
    import os
    import pickle

    from dit.io.checkpoint import load_weights

    with open(tmp_path / "plain.pt", "wb") as f:
        pickle.dump({"w": os.system}, f, protocol=4)
    with pytest.raises(UserError, match=r"plain.pt holds Python objects that safe loading refuses \(Unsupported "
                                        r"operand 149\); only load files you trust"):
        load_weights(str(tmp_path / "plain.pt"))
    torch.save({"w": torch.zeros(100)}, tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:300])
    with pytest.raises(UserError, match=r"cut.pt is not a readable PyTorch checkpoint \(truncated or corrupt\?\): \S"):
        load_weights(str(tmp_path / "cut.pt"))


@pytest.mark.slow("runs the real scripts on a dozen crafted checkpoint files")
def test_metadata_that_disagrees_with_the_tensors_is_refused_before_allocating(tmp_path):
    """An export whose header claims hidden size 65,536 and depth 4,096 (16 GB of weights) for its 55K
    parameters: refused in one line under a 6 GB address-space limit, instead of allocating."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from dit.io.checkpoint import save_export

    good = tmp_path / "good.safetensors"
    save_export(good, randomize(DiT(**TINY)), image_size=8, vae="none")
    with safe_open(str(good), "pt") as f:
        header = json.loads(f.metadata()["dit"])
    header["model"].update(hidden_size=65536, depth=4096, num_heads=16)
    save_file(load_file(str(good)), str(tmp_path / "lying.safetensors"), metadata={"dit": json.dumps(header)})
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); import sample; "
            f"from dit.cli import run_cli; sys.exit(run_cli(sample.main, ['--ckpt', {str(tmp_path / 'lying.safetensors')!r}, "
            f"'--classes', '1', '--out', {str(tmp_path / 'x.png')!r}, '--device', 'cpu']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "does not fit the model (depth 4096, hidden 65536" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def _tiny_vae(path, **config):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, sample_size=16, **config)
    vae.save_pretrained(path)
    return path


def test_latent_cache_records_its_vae_and_training_refuses_another(tmp_path, tiny_vae_dir):
    import cache_latents
    from dit.data import shapes

    root = shapes.write_image_folder(tmp_path / "shapes", images_per_class=1, image_size=16)
    out = tmp_path / "latents"
    assert run_cli(cache_latents.main, ["--data", str(root), "--out", str(out), "--image-size", "16", "--vae",
                                        str(tiny_vae_dir), "--num-workers", "0", "--no-progress"]) == 0
    settings = json.loads((out / "settings.json").read_text())
    from dit.autoencoders.vae import LATENT_SCALE

    assert settings["vae"] == str(tiny_vae_dir) and settings["scale"] == LATENT_SCALE and settings["shift"] == 0.0
    flags = [*TINY_RUN, "--data", str(out), "--model", "DiT-S/2", "--results-dir", str(tmp_path), "--max-steps", "1"]
    # Another VAE name: refused before that VAE is even looked for (here it could not be: no hub).
    with pytest.raises(UserError, match=f"was encoded with --vae {tiny_vae_dir}, but --vae is ema; pass --vae"):
        train.main([*flags, "--vae", "ema", "--run-name", "a"])
    # The same path now holding a VAE with another scale: refused too.
    shifted = _tiny_vae(tmp_path / "other", scaling_factor=0.5)
    settings["vae"] = str(shifted)
    (out / "settings.json").write_text(json.dumps(settings))
    index = json.loads((out / "index.json").read_text())
    index["settings"]["vae"] = str(shifted)
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="encoded with scale 0.18215 and shift 0.0, but the VAE .* now has scale 0.5"):
        train.main([*flags, "--vae", str(shifted), "--run-name", "b"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_vae_shift_factor_and_sliced_decoding(tmp_path):
    """Latents are (z - shift) * scale (SD3-style VAEs set a shift); decoding inverts it, one image at a time."""
    from dit.autoencoders.vae import Autoencoder

    vae = Autoencoder.load(str(_tiny_vae(tmp_path / "vae", scaling_factor=1.5, shift_factor=0.25)))
    assert (vae.scale, vae.shift) == (1.5, 0.25) and vae.vae.use_slicing
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    mean, _ = vae.encode_moments(x)
    raw = vae.vae.encode(x).latent_dist.mean
    torch.testing.assert_close(mean, (raw - 0.25) * 1.5)
    decoded = vae.decode(mean)
    torch.testing.assert_close(decoded, vae.vae.decode(raw).sample, atol=1e-5, rtol=0)
    vae.vae.disable_slicing()  # the whole batch at once: the same images
    torch.testing.assert_close(vae.decode(mean), decoded, atol=1e-5, rtol=0)


def test_a_wheel_install_knows_the_model_zoo(tmp_path):
    """A non-editable install (a wheel) ships the zoo's manifest as package data; weights stay outside."""
    import shutil
    import zipfile

    src = tmp_path / "src"  # build from a copy of the tracked files: the checkout stays clean
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).exists() and not f.startswith("tests/"):
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f, follow_symlinks=False)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                        "-w", str(tmp_path / "wheel")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("dit_family-*.whl")
    assert "dit/io/manifest.json" in zipfile.ZipFile(wheel).namelist()
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = "import dit.io.zoo as z; print(z.__file__); print(sorted(z.manifest())); print(z.weights_dir())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(target), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    where, names, weights = r.stdout.splitlines()
    assert where.startswith(str(target)) and "DiT-XL-2-256x256" in names
    assert weights == str(tmp_path / ".cache" / "dit" / "weights")


def test_throughput_times_the_real_training_step(monkeypatch):
    """benchmarks/throughput/throughput.py train runs train.py's own step function, not a copy of it."""
    import argparse

    from dit.training import step as step_module

    from dit.eval.tables import benchmark_module

    throughput = benchmark_module("throughput")

    calls = []
    real = step_module.train_step

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(step_module, "train_step", counting)
    args = argparse.Namespace(batch=2, image_size=64, precision="no", grad_checkpointing=False, compile=False,
                              warmup=1, iters=2, profile=False)
    row = throughput.train_row("DiT-S/8", args, torch.device("cpu"))
    assert calls == [0, 1, 2] and row["images_per_s"] > 0
