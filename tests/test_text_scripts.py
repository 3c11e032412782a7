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


def test_captions_of_your_own_data(tmp_path, capsys):
    """An imagefolder with metadata.jsonl captions (a Hugging Face dataset) and WebDataset shards with .txt
    captions train a text DiT; its vocabulary is the captions' words; a plain folder is refused."""
    import json as json_

    from PIL import Image

    from test_webdataset import write_shards

    folder = tmp_path / "captioned"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        Image.fromarray(rng.integers(40, 216, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": ["a red dot", "two blue lines"][i % 2]})
    (folder / "metadata.jsonl").write_text("\n".join(json_.dumps(r) for r in rows))
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
