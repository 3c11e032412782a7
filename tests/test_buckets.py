"""Aspect-ratio buckets (dit/data/buckets.py): the sizes, the nearest bucket, a stream whose every global
batch holds one bucket and stays a function of the step (every index once per epoch, resume, any process
count), and train.py on a folder of three aspect ratios on 1 and 2 processes."""

import math

import numpy as np
import pytest
from conftest import free_port
from PIL import Image
from safetensors.torch import load_file
from test_cli_errors import refused
from test_train import check_exact_resume, metrics, same_tensors, torchrun, train_run

import train
from dit.data.buckets import BucketedBatches, nearest_bucket, parse_buckets
from dit.errors import UserError

BUCKETS = "16x16,16x24,24x16"


def aspect_folder(root, per_group=6, seed=0):
    """Images of three aspect ratios (square, wide, tall), each larger than its bucket."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate([(20, 20)] * per_group + [(18, 30)] * per_group + [(30, 18)] * per_group):
        Image.fromarray(rng.integers(40, 216, (h, w, 3), dtype=np.uint8)).save(root / f"img{i:02d}.png")
    return root


def test_bucket_sizes():
    auto = parse_buckets("auto", (256, 256), 16)
    assert (256, 256) in auto and len(auto) == 7
    for h, w in auto:  # multiples of the step, about the same pixel count, ratios 1:2 .. 2:1
        assert h % 16 == 0 and w % 16 == 0 and abs(h * w / 256**2 - 1) < 0.15 and 0.45 < w / h < 2.2
    assert parse_buckets(BUCKETS, (16, 16), 4) == [(24, 16), (16, 16), (16, 24)]  # by aspect ratio
    for bad, match in (("16x18", "not a multiple of 4"), ("16", "HxW"), ("axb", "HxW"), ("", "HxW")):
        with pytest.raises(UserError, match=match):
            parse_buckets(bad, (16, 16), 4)


def test_nearest_bucket_in_log_ratio():
    buckets = [(24, 16), (16, 16), (16, 24)]
    assert [nearest_bucket(h, w, buckets) for h, w in ((100, 100), (100, 160), (160, 100), (100, 121), (100, 124))] \
        == [1, 2, 0, 1, 2]  # 1.21 is nearer 1 than 1.5 in log ratio (0.19 < 0.21); 1.24 nearer 1.5 (0.215 > 0.19)
    assert math.log(1.21) < abs(math.log(1.5) - math.log(1.21)) and math.log(1.24) > abs(math.log(1.5) - math.log(1.24))


def test_every_global_batch_is_one_bucket_and_the_stream_is_a_function_of_the_step():
    bucket_of = [0] * 13 + [1] * 9 + [2] * 20  # 3 + 2 + 5 = 10 batches of 4 an epoch; 2 images wait
    B, steps = 4, 25
    one = BucketedBatches(bucket_of, B, 1, 0, 1, seed=3)
    batches = [[i for _, i in one.micro_batch(s, 0)] for s in range(steps)]
    for b in batches:
        assert len({bucket_of[i] for i in b}) == 1
    for e in range(2):  # within an epoch every index at most once, and the leftover differs by epoch
        seen = sum(batches[10 * e:10 * e + 10], [])
        assert len(seen) == len(set(seen)) == 40
    assert set(sum(batches[:10], [])) != set(sum(batches[10:20], []))
    positions = [p for s in range(steps) for p, _ in one.micro_batch(s, 0)]
    assert positions == list(range(steps * B))  # keys for the per-sample rng, as without buckets
    # 2 processes x 2 accumulation slice the same global batches; a resumed stream continues them.
    for P, accum in ((2, 1), (2, 2), (1, 4)):
        parts = {}
        for r in range(P):
            it = iter(BucketedBatches(bucket_of, B, P, r, accum, seed=3, start_step=7))
            for s in range(7, 12):
                for k in range(accum):
                    parts.setdefault(s, []).extend(next(it))
        for s in range(7, 12):
            assert sorted(parts[s]) == sorted(one.micro_batch(s, 0))
    with pytest.raises(UserError, match="no bucket holds a global batch of 24"):
        BucketedBatches(bucket_of, 24, 1, 0, 1, seed=0)


def test_buckets_train_resume_exactly_and_agree_across_process_counts(tmp_path):
    data = aspect_folder(tmp_path / "data")
    flags = ["--data", data, "--buckets", BUCKETS, "--global-batch-size", 4, "--num-workers", 0]
    check_exact_resume(tmp_path, *flags)
    one = train_run(tmp_path, *flags, "--max-steps", 3, name="one")
    out = torchrun(tmp_path, "dist", *flags, "--run-name", "two", "--max-steps", 3, port=free_port())
    r0 = load_file(str(out / "rank0_model.safetensors"))
    same_tensors(r0, load_file(str(out / "rank1_model.safetensors")))
    # Measured tolerance (as test_train's two-process test): the same samples and noise, float rounding apart.
    same_tensors(r0, load_file(str(one / "checkpoints" / "step_000000003" / "model.safetensors")), atol=1e-5)
    for m, m1 in zip(metrics(tmp_path / "two"), metrics(one)):
        assert m["loss"] == pytest.approx(m1["loss"], rel=1e-5)


def test_bad_bucket_inputs_are_one_line_and_write_nothing(tmp_path, capsys):
    data = aspect_folder(tmp_path / "data", per_group=2)
    small = aspect_folder(tmp_path / "small", per_group=2)
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(small / "tiny.png")  # wide, under its 16x24 bucket
    base = ["--model", "DiT-S/4", "--hidden-size", 32, "--depth", 2, "--num-heads", 2, "--image-size", 16,
            "--results-dir", tmp_path / "runs", "--run-name", "x", "--max-steps", 1, "--no-progress", "--num-workers", 0]
    for extra, match in (
        (["--data", small, "--buckets", BUCKETS, "--global-batch-size", 2], "is 10x30, smaller than its bucket 16x24"),
        (["--data", "shapes", "--buckets", "auto"], "buckets need images of any size"),
        (["--data", data, "--buckets", "16x18"], "not a multiple of 4"),
        (["--data", data, "--buckets", BUCKETS, "--global-batch-size", 8], "no bucket holds a global batch of 8"),
    ):
        assert match in refused(capsys, train.main, [*base, *extra])
        assert not (tmp_path / "runs" / "x").exists()
