"""The training config by section: each architecture and process declares its own fields (and CPU defaults)
beside its registration; the flags, the refusals and config.json are generated from them.

- a plugin (tests/plugins/toy_family.py) adds a flag of its own: it trains, resumes, samples (sample.py)
  and evaluates (evaluate.py) with it, is refused without its --arch, and is listed by --help only
  when the plugin is loaded;
- `train.py --arch X` / `--process Y` train on the built-in data with no other flag (cpu_defaults);
- the built-in systems' config.json holds the same fields as before the sections.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from safetensors import safe_open
from safetensors.torch import load_file

import evaluate
import sample
import train
import train_vq
from dit.cli import run_cli
from dit.errors import UserError
from dit.networks import ARCHITECTURES, Architecture, get_architecture, register_architecture
from dit.training.config import CLASSIFIER_PRESETS, PRESETS, VQ_PRESETS, from_preset

PLUGIN = ROOT / "tests" / "plugins" / "toy_family.py"
TOY = ["cpu-demo", "--arch", "token-mlp", "--process", "toy-flow", "--data", "shapes", "--image-size", "16",
       "--vae", "none", "--shapes-images", "64", "--global-batch-size", "8", "--max-steps", "4", "--ckpt-every", "2",
       "--lr", "1e-3", "--warmup-steps", "0", "--lr-schedule", "constant", "--sample-sampler", "euler",
       "--sample-steps", "2", "--samples-per-class", "1", "--no-progress"]
TINY = ["--max-steps", "2", "--shapes-images", "64", "--sample-steps", "2", "--no-progress"]


@pytest.fixture
def plugin_env(monkeypatch):
    monkeypatch.setenv("DIT_PLUGINS", str(PLUGIN))


def last_error(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_a_plugin_flag_trains_resumes_samples_and_evaluates(tmp_path, plugin_env, capsys):
    argv = [*TOY, "--mlp-hidden-mult", "3", "--toy-time-power", "2", "--results-dir", str(tmp_path), "--run-name", "toy"]
    assert run_cli(train.main, [*argv, "--stop-at", "2"]) == 0
    assert run_cli(train.main, argv) == 0  # the same command resumes from step 2 to 4
    run = tmp_path / "toy"
    assert "resumed from" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert (config["mlp_hidden_mult"], config["toy_time_power"]) == (3, 2.0)
    weights = load_file(str(run / "checkpoints" / "step_000000004" / "model.safetensors"))
    assert weights["mlp.1.weight"].shape == (128 * 3, 128)  # the flag widened the network (cpu-demo's width 128)
    with safe_open(str(run / "export.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["dit"])["model"]["mlp_hidden_mult"] == 3
    # A resumed run must keep it: another value is refused in one line.
    assert run_cli(train.main, [*argv[:-4], "--mlp-hidden-mult", "2", "--results-dir", str(tmp_path),
                                "--run-name", "toy", "--max-steps", "6"]) == 2
    assert "mlp_hidden_mult: 3 -> 2" in last_error(capsys)[-1]

    out = tmp_path / "toy.npz"
    assert run_cli(sample.main, ["--ckpt", str(run), "--num-samples", "4", "--npz", str(out), "--sampler", "euler",
                                 "--steps", "2", "--no-progress", "--device", "cpu"]) == 0
    assert np.load(out)["arr_0"].shape == (4, 16, 16, 3)
    report = tmp_path / "eval.json"
    assert run_cli(evaluate.main, ["--ckpt", str(run), "--num-samples", "10", "--metric", "shapes", "--sampler",
                                   "euler", "--steps", "2", "--classifier-steps", "5", "--cache-dir",
                                   str(tmp_path / "cache"), "--device", "cpu", "--no-progress", "--out",
                                   str(report)]) == 0
    got = json.loads(report.read_text())
    assert (got["arch"], got["process"], got["num_samples"]) == ("token-mlp", "toy-flow", 10)
    assert 0 <= got["class_acc"] <= 1


def test_a_plugin_flag_is_refused_without_its_system(tmp_path, plugin_env, capsys):
    base = ["cpu-demo", "--results-dir", str(tmp_path), "--run-name", "bad"]
    cases = [(["--mlp-hidden-mult", "2"], "--mlp-hidden-mult is a setting of the token-mlp architecture: add --arch "
                                          "token-mlp"),
             (["--arch", "token-mlp", "--toy-time-power", "2"], "--toy-time-power is a setting of the toy-flow "
                                                                "process: add --process toy-flow")]
    for extra, expected in cases:
        assert run_cli(train.main, [*base, *extra]) == 2
        assert last_error(capsys) == [f"error: {expected}"]
    assert not (tmp_path / "bad").exists()


def test_help_lists_a_plugin_flag_only_when_the_plugin_is_loaded(plugin_env):
    env = {k: v for k, v in os.environ.items() if k != "DIT_PLUGINS"}
    bare = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True,
                          env={**env, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert bare.returncode == 0 and "--frames INT" in bare.stdout and "--mlp-hidden-mult" not in bare.stdout
    text = train.training_parser("train", PRESETS, "cpu-demo").format_help()  # plugins loaded first
    assert "the token-mlp architecture (--arch token-mlp):" in text and "the toy-flow process (--process toy-flow):" in text
    assert "--mlp-hidden-mult INT" in text and "(code default: 1)" in text


@pytest.mark.parametrize("flags,expect", [
    (["--arch", "diffussm"], {"model": "DiffuSSM-CPU/1"}),  # the CPU demo's DiT-S/2 is no DiffuSSM
    (["--arch", "video-dit"], {"data": "shapes-video", "samples_per_class": 1}),  # the built-in clips
    (["--process", "flow"], {"sample_sampler": "euler"}),
])
def test_an_architecture_or_process_trains_on_the_cpu_demo_with_no_other_flag(tmp_path, flags, expect):
    assert run_cli(train.main, [*flags, *TINY, "--results-dir", str(tmp_path), "--run-name", "r"]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert {k: config[k] for k in expect} == expect and (tmp_path / "r" / "export.safetensors").is_file()


def test_token_dit_reads_the_cpu_tokenizer_or_names_the_command_that_writes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the vq-diffusion process's default --vae is results/vq-cpu, relative
    tokens = ["--arch", "token-dit", "--process", "vq-diffusion", *TINY, "--run-name", "tok"]
    assert run_cli(train.main, tokens) == 2
    (line,) = last_error(capsys)
    assert "'results/vq-cpu' is not one (train it first: `python train_vq.py` writes results/vq-cpu)" in line
    assert run_cli(train_vq.main, ["--max-steps", "2", "--shapes-images", "64", "--kmeans-iters", "1",
                                   "--no-progress"]) == 0
    assert run_cli(train.main, tokens) == 0
    config = json.loads((tmp_path / "results" / "tok" / "config.json").read_text())
    assert (config["vae"], config["codebook_size"]) == ("results/vq-cpu", 128)  # K read from the tokenizer


def test_precedence_preset_cpu_defaults_recipe_flags():
    assert from_preset("cpu-demo", arch="diffussm", model="DiffuSSM-S/2").model == "DiffuSSM-S/2"  # flags win
    assert from_preset("cpu-demo", arch="video-dit", data="x").data == "x"
    assert from_preset("cpu-demo", "sit", arch="video-dit").process == "flow"  # the recipe over the defaults
    with pytest.raises(UserError, match="unknown DiffuSSM model 'DiT-XL/2'"):  # imagenet-256 is no CPU preset
        from_preset("imagenet-256", arch="diffussm", data="x")
    assert from_preset("video-cpu").samples_per_class == 1  # the preset's own values: no defaults applied


def test_sections_share_a_field_only_if_declared_alike(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Other:
        codebook_size: int = 16  # token-dit, vq-tokenizer and vq-diffusion declare 0

    base = get_architecture("diffussm")
    with pytest.raises(ValueError, match="declares codebook_size: <class 'int'> = 16, but .* declares "
                                         "codebook_size: <class 'int'> = 0; a shared field must be declared identically"):
        register_architecture(dataclasses.replace(base, key="other", section=Other))
    assert "other" not in ARCHITECTURES

    @dataclasses.dataclass(frozen=True)
    class Same:
        codebook_size: int = 0

    @dataclasses.dataclass(frozen=True)
    class Common:
        lr: float = 1.0

    monkeypatch.setitem(ARCHITECTURES._entries, "same", dataclasses.replace(base, key="same", section=Same))
    assert from_preset("cpu-demo").codebook_size == 0
    monkeypatch.setitem(ARCHITECTURES._entries, "lr", Architecture("lr", dict, dict, dict, section=Common))
    with pytest.raises(ValueError, match="the lr architecture's config section declares 'lr', a common training field"):
        from_preset("cpu-demo")


# config.json's fields before the sections (the flat TrainConfig of 80 fields): unchanged for built-ins, so
# every old run's config compares equal on resume (its values: tests/test_legacy_fixture.py resumes one).
FIELDS = """arch process model hidden_size depth num_heads conditioning learn_sigma class_dropout_prob mlp norm pos qk_norm
data image_size vae latent_norm shapes_images flip num_workers frames frame_stride random_offset factorization temporal
given_conditioning joint_images video_masks init_from classifier_pool codebook_size codebook_dim commitment kmeans_iters
restart_every dead_code_threshold vq_timesteps replace_max aux_weight vq_time_sampling schedule timesteps flow_path
prediction time_sampling logit_mean logit_std cosine_loss flow_time_scale global_batch_size grad_accum lr weight_decay
warmup_steps lr_schedule grad_clip ema_decay ema_warmup max_steps mixed_precision grad_checkpointing compile
compile_best_effort distributed seed dist_timeout_min results_dir run_name ckpt_every keep_last log_every sample_every
sample_steps sample_sampler sample_cfg samples_per_class max_nonfinite wandb wandb_project wandb_mode""".split()
# Fields added since: absent from an older run's config.json, which setup.find_resume reads as unchanged.
ADDED = ["unconditional", "image_width", "buckets", "dataset_split", "image_column", "label_column", "caption_column",
         "sampling_steps", "shapes_speed", "given_loss_weight", "meanflow_share", "meanflow_power", "meanflow_cfg",
         "shortcut_steps", "shortcut_share", "teacher", "teacher_steps", "teacher_cfg", "text_tokenizer", "text_length",
         "text_depth", "text_width", "text_encoder"]


@pytest.mark.parametrize("name,presets", [*((n, PRESETS) for n in PRESETS), *((n, CLASSIFIER_PRESETS) for n in
                                           CLASSIFIER_PRESETS), *((n, VQ_PRESETS) for n in VQ_PRESETS)])
def test_the_built_in_configs_keep_their_fields(name, presets):
    extra = {"data": "x"} if not presets[name].get("data", "shapes") else {}
    config = from_preset(name, presets=presets, **extra, **({"codebook_size": 128} if "vq-diffusion" in name else {}))
    plugins = {"mlp_hidden_mult", "toy_time_power"}  # tests/plugins/toy_family.py's, where another test loaded it
    assert set(FIELDS + ADDED) <= set(config.to_dict()) <= set(FIELDS + ADDED) | plugins and len(FIELDS) == 80
    assert type(config)(**config.to_dict()) == config and config.replace() == config
    torch.testing.assert_close(config.lr, presets[name].get("lr", 1e-4))  # common and section fields read alike
    assert config.schedule == "linear" and config.frames == presets[name].get("frames", 8)
