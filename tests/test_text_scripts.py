"""The text-conditioned DiT through the real scripts: train.py --arch text-dit on the captioned scenes (exact
resume, two processes like one), sample.py --prompt / --prompts (grid and npz), and the one-line refusals of
captions without a text network, a text network without captions, flips, and prompts to a class model."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, free_port
from safetensors.torch import load_file

import sample
from dit.cli import run_cli
from dit.networks.text_config import TEXT_CONDITIONINGS
from test_train import ENV, check_exact_resume, same_tensors, torchrun, train_run

TEXT = ["--arch", "text-dit", "--text-depth", "1", "--text-length", "16"]


def test_resume_is_exact_and_two_processes_train_like_one(tmp_path):
    flags = [*TEXT, "--conditioning", "joint"]
    full = check_exact_resume(tmp_path, *flags)  # 4 steps vs cut at 2 and resumed: same weights, EMA, losses
    config = json.loads((full / "config.json").read_text())
    assert config["data"] == "shapes-captions" and config["flip"] is False  # the architecture's CPU defaults
    sd = load_file(str(full / "export.safetensors"))
    assert sd["text_encoder.token_embedding.weight"].shape[0] == 2 + 45  # PAD, UNK and the scenes' 45 words
    one = train_run(tmp_path, *flags, "--max-steps", 3, name="one")
    out = torchrun(tmp_path, "dist", *flags, "--run-name", "two", "--max-steps", 3, port=free_port())
    r0, r1 = load_file(str(out / "rank0_model.safetensors")), load_file(str(out / "rank1_model.safetensors"))
    same_tensors(r0, r1)
    same_tensors(r0, load_file(str(one / "checkpoints" / "step_000000003" / "model.safetensors")), atol=1e-5)


@pytest.mark.parametrize("conditioning", TEXT_CONDITIONINGS)
def test_sample_from_prompts(tmp_path, conditioning, capsys):
    run = train_run(tmp_path, *TEXT, "--conditioning", conditioning, "--process", "flow", "--max-steps", 2)
    assert (run / "samples.png").is_file()  # the preview drew the scenes' prompts
    grid = tmp_path / "grid.png"
    assert run_cli(sample.main, ["--ckpt", str(run), "--prompt", "a red square at the top left", "--prompt",
                                 "a blue circle left of a green plus", "--steps", "3", "--out", str(grid),
                                 "--no-progress"]) == 0
    assert grid.is_file() and "euler: 3.0 function evaluations per batch (2 network passes each with guidance)" \
        in capsys.readouterr().out  # guided by the null text
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red plus\n\na large cyan triangle at the bottom\n")
    npz = tmp_path / "p.npz"
    assert run_cli(sample.main, ["--ckpt", str(run), "--prompts", str(prompts), "--steps", "2", "--cfg-scale", "1",
                                 "--npz", str(npz), "--no-progress"]) == 0
    data = np.load(npz)
    assert data["arr_0"].shape == (2, 16, 16, 3) and list(data["prompts"]) == ["a red plus",
                                                                              "a large cyan triangle at the bottom"]


def captioned_folder(root, n: int = 8):
    """n random 16 px images with metadata.jsonl captions (a Hugging Face imagefolder); image i says CAPTIONS[i % 2]."""
    from PIL import Image

    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(40, 216, (16, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": CAPTIONS[i % 2]})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


CAPTIONS = ("a red dot", "two blue lines")


def test_captions_of_your_own_data(tmp_path, capsys):
    """An imagefolder with metadata.jsonl captions (a Hugging Face dataset) and WebDataset shards with .txt
    captions train a text DiT; its vocabulary is the captions' words; a plain folder is refused."""
    from PIL import Image

    from test_webdataset import write_shards

    folder = captioned_folder(tmp_path / "captioned")
    common = [*TEXT, "--no-flip", "--process", "flow", "--max-steps", 2]
    run = train_run(tmp_path, *common, "--data", folder, name="hf")  # --caption-column text: the default
    recorded = json.loads((run / "config.json").read_text())
    from dit.io.checkpoint import load_weights

    cfg = load_weights(str(run / "export.safetensors")).config
    assert cfg.vocabulary == "a blue dot lines red two"
    assert run_cli(sample.main, ["--ckpt", str(run), "--prompt", "a red dot", "--steps", "2", "--out",
                                 str(tmp_path / "hf.png"), "--no-progress"]) == 0
    shards = write_shards(tmp_path / "shards")
    run = train_run(tmp_path, *common, "--data", shards, name="shards")
    assert load_weights(str(run / "export.safetensors")).config.vocabulary == " ".join(
        sorted([*(str(i) for i in range(12)), "sample"]))
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(plain / "a.png")
    _refused(tmp_path, "train.py", *TEXT, "--no-flip", "--data", plain, "--results-dir", tmp_path / "none",
             says="without captions")
    assert recorded["caption_column"] == ""  # the default, recorded as given


@pytest.mark.parametrize("fmt", ["safetensors", "webdataset"])
def test_captions_in_a_latent_cache(tmp_path, tiny_vae_dir, fmt, capsys):
    """cache_latents.py --captions keeps each image's caption in its chunk (the header, or a shard's .txt); a
    text DiT trains from the cache and samples a prompt; a cache without captions is refused in one line."""
    import cache_latents
    from dit.data.latent_cache import LatentCache

    folder = captioned_folder(tmp_path / "captioned", n=10)
    encode = ["--data", folder, "--image-size", 16, "--vae", tiny_vae_dir, "--chunk-size", 4, "--num-workers", 0,
              "--no-progress", "--out-format", fmt]
    cache = tmp_path / "cache"
    assert run_cli(cache_latents.main, [str(a) for a in [*encode, "--out", cache, "--captions"]]) == 0
    latents = LatentCache(cache, flip=False)
    assert latents.captioned and len(latents) == 10
    assert latents.captions() == [CAPTIONS[i % 2] for i in range(10)]  # rows in the source's order
    assert run_cli(cache_latents.main, [str(a) for a in [*encode, "--out", cache, "--captions"]]) == 0  # resumes: all there
    run = train_run(tmp_path, *TEXT, "--no-flip", "--data", cache, "--vae", tiny_vae_dir, "--model", "DiT-S/2",
                    "--process", "flow", "--max-steps", 2, name="cached")
    from dit.io.checkpoint import load_weights

    assert load_weights(str(run / "export.safetensors")).config.vocabulary == "a blue dot lines red two"
    assert run_cli(sample.main, ["--ckpt", str(run), "--prompt", "two blue lines", "--steps", "2", "--out",
                                 str(tmp_path / "cached.png"), "--no-progress"]) == 0
    bare = tmp_path / "bare"
    assert run_cli(cache_latents.main, [str(a) for a in [*encode, "--out", bare]]) == 0
    _refused(tmp_path, "train.py", *TEXT, "--no-flip", "--data", bare, "--vae", tiny_vae_dir, "--results-dir",
             tmp_path / "none", says="re-encode it with `cache_latents.py --captions`")
    assert not (tmp_path / "none").exists()


def test_cache_caption_refusals(tmp_path, tiny_vae_dir, capsys):
    import cache_latents
    from test_cli_errors import refused
    from test_text_encoders import write_encoder

    folder, out = captioned_folder(tmp_path / "captioned", n=2), tmp_path / "cache"
    base = ["--data", folder, "--out", out, "--image-size", 16, "--vae", tiny_vae_dir, "--no-progress"]
    enc = write_encoder(tmp_path / "clip", "clip")
    for extra, says in ((["--caption-column", "text"], "add --captions"), (["--text-encoder", enc], "add --captions"),
                        (["--captions", "--text-encoder", tmp_path], "no config.json"),
                        (["--captions", "--text-encoder", enc, "--out-format", "webdataset"], "drop --out-format")):
        assert says in refused(capsys, cache_latents.main, [*base, *extra])
    assert not (out / "index.json").exists()


def test_the_text_cpu_preset_trains_the_benchmark_setting(tmp_path):
    """`train.py text-cpu` is text_to_image.py's default setting (benchmarks/text_to_image/tables.py) with the pooled
    conditioning, through the real script (one step on a few scenes here)."""
    import train
    from dit.eval.tables import benchmark_module

    tables = benchmark_module("text_to_image", "tables")
    argv = ["text-cpu", "--results-dir", tmp_path, "--run-name", "preset", "--max-steps", 1, "--shapes-images", 32]
    assert run_cli(train.main, [str(a) for a in argv]) == 0
    config = json.loads((tmp_path / "preset" / "config.json").read_text())
    assert config["arch"] == "text-dit" and config["conditioning"] == "adaln-zero" and config["depth"] == 4
    assert config["logit_mean"] == tables.LOGIT_MEAN and config["time_sampling"] == "logit-normal"
    assert config["text_length"] == 16 and config["image_size"] == 32 and config["model"] == "DiT-S/4"


def test_evaluate_judges_prompts(tmp_path, capsys):
    import evaluate

    run = train_run(tmp_path, *TEXT, "--process", "flow", "--max-steps", 1)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a large red circle at the top left\na small blue square left of a large green plus\n")
    out = tmp_path / "scenes.json"
    assert run_cli(evaluate.main, ["--ckpt", str(run), "--metric", "scenes", "--prompts", str(prompts), "--per-prompt",
                                   "3", "--steps", "2", "--cfg-scale", "2", "--cache-dir", str(tmp_path / "cache"),
                                   "--classifier-steps", "40", "--out", str(out), "--no-progress"]) == 0
    record = json.loads(out.read_text())
    assert record["metric"] == "scenes" and record["num_samples"] == 6 and record["prompts"] == 2
    assert record["cfg_scale"] == 2 and record["nfe"] == 2 and 0 <= record["joint"] <= record["shape"] <= 1
    assert len(record["joint_ci"]) == 2 and record["reader_accuracy"] > 0.25
    samples = np.load(record["samples"])
    assert samples["arr_0"].shape == (6, 16, 16, 3) and list(samples["prompts"][:3]) == ["a large red circle at the top left"] * 3
    prompts.write_text("a red plus\n")  # not a scene the judge reads: refused before anything is drawn
    _refused(tmp_path, "evaluate.py", "--ckpt", run, "--metric", "scenes", "--prompts", prompts,
             says="is not a scene prompt the judge reads")


def _refused(tmp_path, script, *args, says):
    res = subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_refusals(tmp_path, capsys):
    import train
    from test_cli_errors import refused

    out = tmp_path / "none"
    for argv, says in ((["--arch", "text-dit", "--data", "shapes"], "--arch text-dit trains on captions, and --data "
                        "shapes is the built-in shapes (classes): use --data shapes-captions"),
                       (["--data", "shapes-captions"], "holds captions, not classes"),
                       (["--arch", "text-dit", "--flip", "true"], "add --no-flip"),
                       (["--arch", "text-dit", "--conditioning", "in-context"],
                        "choose one of adaln-zero, cross-attention, joint")):
        assert says in refused(capsys, train.main, [*argv, "--results-dir", out])
    assert not out.exists()
    run = train_run(tmp_path, "--max-steps", 1, name="classes")
    assert "does not read text" in refused(capsys, sample.main, ["--ckpt", run, "--prompt", "a red circle", "--out",
                                                                 tmp_path / "x.png"])
    assert "no such file" in refused(capsys, sample.main, ["--ckpt", run, "--prompts", tmp_path / "missing.txt"])
    assert not (tmp_path / "x.png").exists()
    _refused(tmp_path, "sample.py", "--ckpt", run, "--prompt", "a", "--classes", "1",  # the real entry point
             says="--classes does not apply to --prompt")
