"""WebDataset tar shards as --data (dit/data/webdataset.py): every way to name them, each sample read by
its offsets equal to the file that went in, and training on 2 processes that resumes after a SIGKILL
to the weights of an uninterrupted run (the same samples, none twice in an epoch); bad shards refused
in one line before anything is written."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import torch
from conftest import ROOT, free_port
from PIL import Image
from safetensors.torch import load_file
from test_cli_errors import refused
from test_train import ENV, TINY, same_tensors, train_run

import train
from dit.data.folders import center_crop_hw, load_image
from dit.data.stream import StreamBatches
from dit.data.sources import Images
from dit.data.webdataset import ShardImages, shard_paths
from dit.training.state import list_checkpoints


def write_shards(root, shards=3, per_shard=4, seed=0, labels=True):
    """`shards` tars of `per_shard` samples each: a PNG, its .cls label (i % 3) and a .txt caption."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for s in range(shards):
        with tarfile.open(root / f"train-{s:03d}.tar", "w") as tar:
            for j in range(per_shard):
                i = s * per_shard + j
                buf = io.BytesIO()
                Image.fromarray(rng.integers(40, 216, (20, 22, 3), dtype=np.uint8)).save(buf, format="PNG")
                members = {"png": buf.getvalue(), "txt": f"sample {i}".encode()}
                if labels:
                    members["cls"] = str(i % 3).encode()
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def test_shards_are_named_three_ways_and_read_back_exactly(tmp_path):
    root = write_shards(tmp_path / "shards")
    brace = str(root / "train-{000..002}.tar")
    assert shard_paths(str(root)) == shard_paths(brace) == sorted(root.glob("*.tar"))
    assert shard_paths(str(root / "train-001.tar")) == [root / "train-001.tar"]
    shards = ShardImages(shard_paths(brace), tmp_path / "cache")
    base = Images(shards, 16, None, False)
    assert len(base) == 12 and base.class_names == ["0", "1", "2"] and shards.caption(5) == "sample 5"
    assert list((tmp_path / "cache").glob("wds-*.json"))  # the offsets, read once
    with tarfile.open(root / "train-002.tar") as tar:  # sample 9: its PNG as written, cropped as folders are
        png = tar.extractfile("000009.png").read()
    want = np.asarray(center_crop_hw(load_image(io.BytesIO(png)), 16, 16))
    x, y, replaced = base.get(9, np.random.default_rng(0))
    assert torch.equal(x, torch.from_numpy(want.copy()).permute(2, 0, 1).float().div(127.5).sub(1))
    assert (y, replaced) == (0, False)
    assert ShardImages(shard_paths(str(write_shards(tmp_path / "u", labels=False)))).num_classes == 0


def test_an_epoch_of_shards_sees_every_sample_once_on_any_process_count():
    for P in (1, 2):
        seen = [i for r in range(P) for s in range(3) for _, i in StreamBatches(12, 4, P, r, 1, seed=0).micro_batch(s, 0)]
        assert sorted(seen) == list(range(12))


def test_two_processes_resume_after_sigkill_to_the_uninterrupted_weights(tmp_path):
    data = write_shards(tmp_path / "shards")
    flags = ["--data", data, "--global-batch-size", 4, "--num-workers", 0, "--max-steps", 6, "--ckpt-every", 1,
             "--keep-last", 0]
    reference = train_run(tmp_path, *flags, name="reference")  # one process, never interrupted
    out = tmp_path / "dist"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "tests" / "dist_train.py"), str(out),
           *[str(a) for a in [*TINY, "--results-dir", tmp_path, "--run-name", "killed", *flags]]]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(list_checkpoints(tmp_path / "killed")) < 2:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = list_checkpoints(tmp_path / "killed")[-1][0]
    assert 2 <= killed_at < 6
    cmd[cmd.index("--master_port") + 1] = str(free_port())
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)  # the same command: resumes
    assert res.returncode == 0, res.stderr[-3000:]
    state = json.loads((tmp_path / "killed" / "checkpoints" / "step_000000006" / "train_state.json").read_text())
    assert state["images_seen"] == 24  # 6 steps of 4: nothing read twice, nothing skipped
    # Measured tolerance (test_train's two-process test): the same samples and noise, float rounding apart.
    same_tensors(load_file(str(out / "rank0_model.safetensors")),
                 load_file(str(reference / "checkpoints" / "step_000000006" / "model.safetensors")), atol=1e-5)


def test_bad_shards_are_one_line_and_write_nothing(tmp_path, capsys):
    good = write_shards(tmp_path / "good")
    corrupt = write_shards(tmp_path / "corrupt")
    (corrupt / "train-001.tar").write_bytes(b"\x00not a tar at all" * 40)
    mixed = write_shards(tmp_path / "mixed")
    with tarfile.open(mixed / "train-003.tar", "w") as tar:  # one more sample, without a label
        buf = io.BytesIO()
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(buf, format="PNG")
        info = tarfile.TarInfo("000099.png")
        info.size = len(buf.getvalue())
        tar.addfile(info, io.BytesIO(buf.getvalue()))
    base = ["--model", "DiT-S/4", "--image-size", 16, "--results-dir", tmp_path / "runs", "--run-name", "x",
            "--max-steps", 1, "--no-progress", "--num-workers", 0]
    for data, match in ((corrupt, "train-001.tar is not a readable tar"),
                        (str(good / "train-{000..004}.tar"), "train-003.tar does not exist"),
                        (mixed, "has no label (.cls or json \"label\"), others have")):
        assert match in refused(capsys, train.main, [*base, "--data", data])
        assert not (tmp_path / "runs" / "x").exists()
