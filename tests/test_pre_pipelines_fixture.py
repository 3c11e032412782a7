"""An evaluation batch half-written before the dit/pipelines/ refactor (tests/fixtures/pre_pipelines, made by
commit b6ce869 with make_pre_pipelines.py) resumes with today's sample.py, and the same command from scratch
draws the same samples.

The fixture holds a tiny pixel-space flow export, sample.py's argv (command.json), the 3 of 6 shards an
interrupted run left (out.npz.parts/, each with its settings record) and the complete out.npz that code wrote.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
from conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "pre_pipelines"
COMMAND = json.loads((FIXTURE / "command.json").read_text())
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
with np.load(FIXTURE / "out.npz") as _f:
    WANT_IMAGES, WANT_LABELS = _f["arr_0"], _f["arr_1"]


def marker(a, b):
    """What a kept shard's images are overwritten with: image i is the constant (37 i + 11) mod 256, a value the
    sampler would not draw for all 192 values of an image, so a redrawn shard cannot pass for a kept one."""
    return np.stack([np.full(WANT_IMAGES.shape[1:], (37 * i + 11) % 256, np.uint8) for i in range(a, b)])


def run_sample(cwd):
    """The recorded command through the real script, in a copy of the fixture (its paths are relative)."""
    res = subprocess.run([sys.executable, str(ROOT / "sample.py"), *COMMAND["argv"]], cwd=cwd, capture_output=True,
                         text=True, timeout=600, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (cwd / "out.npz.parts").exists()  # assembled, then the shards removed
    with np.load(cwd / "out.npz") as f:
        return f["arr_0"], f["arr_1"]


def assert_same_samples(got, want):
    # The same samples, but not always the same bits: float rounding differs across CPUs (the fixture was written on
    # an AMD EPYC; an AVX-512 Xeon's matmul kernels round differently), so a value on a rounding boundary may land
    # one uint8 level away (tests/test_npz_shards.py, tests/test_legacy_fixture.py measured the same). A real change
    # is far larger: a guidance scale 1% off (2.02 for 2) already moves ~40% of the values, by up to 3 levels.
    assert got.shape == want.shape and got.dtype == want.dtype == np.uint8
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01, (diff.max(), int((diff > 0).sum()))


def test_fixture_is_what_it_says():
    kept = sorted(p.name for p in (FIXTURE / "out.npz.parts").glob("*.npz"))
    assert kept == COMMAND["kept_shards"] and len(kept) == 3
    assert WANT_IMAGES.shape == (12, 8, 8, 3) and sorted(WANT_LABELS.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert COMMAND["argv"][COMMAND["argv"].index("--batch-size") + 1] == "2"  # 6 shards of 2


def test_shards_written_before_the_refactor_are_kept(tmp_path):
    shutil.copy(FIXTURE / "model.safetensors", tmp_path)
    parts = tmp_path / "out.npz.parts"
    shutil.copytree(FIXTURE / "out.npz.parts", parts)
    ranges = []
    for shard in sorted(parts.glob("*.npz")):
        with np.load(shard) as z:
            images, labels, meta = z["images"], z["labels"], z["meta"]
        record = json.loads(str(meta[()]))  # {"settings": ..., "start": a, "stop": b}: left as the old code wrote it
        a, b = record["start"], record["stop"]
        assert np.array_equal(images, WANT_IMAGES[a:b]) and np.array_equal(labels, WANT_LABELS[a:b])
        np.savez(shard, images=marker(a, b), labels=labels, meta=meta)
        ranges.append((a, b))
    assert ranges == [(0, 2), (4, 6), (10, 12)]
    images, labels = run_sample(tmp_path)
    assert np.array_equal(labels, WANT_LABELS)
    redrawn = np.ones(len(images), bool)
    for a, b in ranges:  # the kept shards' settings record still matches: their (marked) images were not redrawn
        assert np.array_equal(images[a:b], marker(a, b)), f"shard {a}..{b - 1} was redrawn: its settings record no " \
                                                          "longer matches what sample.py records for this command"
        redrawn[a:b] = False
    assert_same_samples(images[redrawn], WANT_IMAGES[redrawn])  # the missing shards: the very samples of the old code


def test_from_scratch_the_same_samples_as_before_the_refactor(tmp_path):
    shutil.copy(FIXTURE / "model.safetensors", tmp_path)
    images, labels = run_sample(tmp_path)
    assert np.array_equal(labels, WANT_LABELS)
    assert_same_samples(images, WANT_IMAGES)
