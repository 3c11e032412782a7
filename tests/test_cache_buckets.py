"""Latent caches of any size: non-square caches, caches that store each image's aspect-ratio bucket, the
same cache written as WebDataset tar shards (read back by tarfile and numpy alone, and training on it
equal to the bit to training on the safetensors chunks), buckets over Hugging Face datasets and shards,
and the refusals."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_buckets import BUCKETS, aspect_folder
from test_cli_errors import refused
from test_train import check_exact_resume, metrics, same_tensors, train_run

import cache_latents
import train
from dit.autoencoders.vae import Autoencoder
from dit.cli import run_cli
from dit.data.folders import ImageFolderDataset, to_tensor
from dit.data.latent_cache import LatentCache
from dit.data.sources import Images

FLAGS = ["--model", "DiT-S/2", "--global-batch-size", 4, "--num-workers", 0]


def encode(data, out, vae_dir, *extra):
    argv = ["--data", data, "--out", out, "--image-size", 16, "--vae", vae_dir, "--chunk-size", 4, "--batch-size", 3,
            "--num-workers", 0, "--no-progress", *extra]
    return run_cli(cache_latents.main, [str(a) for a in argv])


@pytest.fixture(scope="module")
def caches(tmp_path_factory, tiny_vae_dir):
    """Three aspect ratios, 6 images each, cached with buckets as safetensors and as shards."""
    root = tmp_path_factory.mktemp("cb")
    folder = aspect_folder(root / "images")
    out = {"folder": folder}
    for fmt in ("safetensors", "webdataset"):
        out[fmt] = root / fmt
        assert encode(folder, out[fmt], tiny_vae_dir, "--buckets", BUCKETS, "--out-format", fmt) == 0
    return out


def test_a_bucketed_cache_holds_each_image_at_its_bucket(caches, tiny_vae_dir):
    cache = LatentCache(caches["safetensors"])
    index = json.loads((caches["safetensors"] / "index.json").read_text())
    assert cache.buckets == [(24, 16), (16, 16), (16, 24)] and cache.bucket_shapes == [(4, 12, 8), (4, 8, 8), (4, 8, 12)]
    # 6 images per bucket in chunks of 4: 2 chunks a bucket, each of one bucket.
    assert [c["bucket"] for c in index["chunks"]] == [0, 0, 1, 1, 2, 2] and len(cache) == 18
    folder = ImageFolderDataset(caches["folder"], 16)
    images = Images(folder, 16, None, False, [(24, 16), (16, 16), (16, 24)])
    vae = Autoencoder.load(str(tiny_vae_dir))
    indices = torch.cat([load_file(str(caches["safetensors"] / c["name"]))["indices"] for c in index["chunks"]])
    for row in range(18):  # the image each row came from, its bucket, and its moments at that bucket's size
        i = int(indices[row])
        assert cache.bucket_of[row] == images.bucket_of[i]
        mean, _, label = cache.moments(row, False)
        ref, _ = vae.encode_moments(to_tensor(folder.image(i), *images.size_of(i))[None])
        assert mean.shape == cache.bucket_shapes[cache.bucket_of[row]] and label == folder.label(i)
        torch.testing.assert_close(mean, ref[0], atol=2e-3, rtol=2e-3)  # stored as float16


def test_the_shards_hold_the_same_rows_readable_without_this_code(caches):
    st, wds = LatentCache(caches["safetensors"]), LatentCache(caches["webdataset"])
    assert st.bucket_of == wds.bucket_of and st.bucket_shapes == wds.bucket_shapes
    index = json.loads((caches["webdataset"] / "index.json").read_text())
    assert [c["name"] for c in index["chunks"]][:2] == ["shard-00000.tar", "shard-00001.tar"]
    for row in range(18):
        for flipped in (False, True):
            a, b = st.moments(row, flipped), wds.moments(row, flipped)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    # A WebDataset reader sees samples <key>.mean.npy, <key>.std.npy, <key>.cls: tarfile and numpy are enough.
    chunk = load_file(str(caches["safetensors"] / "chunk_00002.safetensors"))
    with tarfile.open(caches["webdataset"] / "shard-00002.tar") as tar:
        names = tar.getnames()
        assert names[:3] == [f"{int(chunk['indices'][0]):09d}.{e}" for e in ("mean.npy", "std.npy", "cls")]
        mean = np.load(io.BytesIO(tar.extractfile(names[0]).read()), allow_pickle=False)
        assert int(tar.extractfile(names[2]).read()) == int(chunk["labels"][0])
    assert mean.dtype == np.float16 and torch.equal(torch.from_numpy(mean), chunk["mean"][0])


def test_training_on_the_shards_equals_training_on_the_chunks_and_resumes_exactly(caches, tiny_vae_dir, tmp_path):
    flags = [*FLAGS, "--vae", tiny_vae_dir]
    full = check_exact_resume(tmp_path / "wds", *flags, "--data", caches["webdataset"])
    st = train_run(tmp_path, *flags, "--data", caches["safetensors"], "--max-steps", 4, "--ckpt-every", 2, name="st")
    for name in ("model.safetensors", "ema.safetensors"):
        same_tensors(load_file(str(full / "checkpoints" / "step_000000004" / name)),
                     load_file(str(st / "checkpoints" / "step_000000004" / name)))
    assert [m["loss"] for m in metrics(st)] == [m["loss"] for m in metrics(full)]


def test_a_non_square_cache_trains_at_its_size(caches, tiny_vae_dir, tmp_path):
    out = tmp_path / "wide"
    assert encode(caches["folder"], out, tiny_vae_dir, "--image-size", "16x24") == 0
    cache = LatentCache(out)
    assert cache.latent_shape == (4, 8, 12) and cache.buckets is None and len(cache) == 18
    run = train_run(tmp_path, *FLAGS, "--vae", tiny_vae_dir, "--data", out, "--image-size", 16, 24, "--max-steps", 2)
    assert json.loads((run / "config.json").read_text())["image_width"] == 24
    assert all(np.isfinite(m["loss"]) for m in metrics(run))


def test_buckets_over_a_hugging_face_dataset_and_shards(caches, tmp_path):
    import datasets
    from PIL import Image

    files = sorted(caches["folder"].glob("*.png"))
    ds = datasets.Dataset.from_dict({"image": [str(f) for f in files]}).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"))
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "s-0.tar", "w") as tar:
        for i, f in enumerate(files):
            tar.add(f, arcname=f"{i:04d}.png")
    want = Images(ImageFolderDataset(caches["folder"], 16), 16, None, False, [(24, 16), (16, 16), (16, 24)]).bucket_of
    assert want == [1] * 6 + [2] * 6 + [0] * 6
    for data in (tmp_path / "saved", shards):
        run = train_run(tmp_path, "--data", data, "--buckets", BUCKETS, "--model", "DiT-S/4", "--global-batch-size", 4,
                        "--num-workers", 0, "--max-steps", 2, name=f"run-{data.name}")
        assert all(np.isfinite(m["loss"]) for m in metrics(run))
    from dit.data.hf import HFImages, load_hf
    from dit.data.webdataset import ShardImages, shard_paths

    for source in (HFImages(load_hf(str(tmp_path / "saved"), "disk")), ShardImages(shard_paths(str(shards)))):
        got = Images(source, 16, None, False, [(24, 16), (16, 16), (16, 24)])
        assert got.bucket_of == want
        for i in (0, 7, 13):  # the same pixels as the folder's at the bucket's size
            assert torch.equal(got.read(i)[0], to_tensor(Image.open(files[i]).convert("RGB"), *got.size_of(i)))


def test_cache_refusals(caches, tiny_vae_dir, tmp_path, capsys):
    cases = {
        "bfloat16 shards": (["--out-format", "webdataset", "--dtype", "bfloat16"], "no bfloat16"),
        "bucket step": (["--buckets", "16x18"], "not a multiple of 4"),
        "three sizes": (["--image-size", 16, 16, 16], "takes H, HxW or H W"),
    }
    for name, (extra, expected) in cases.items():
        capsys.readouterr()
        assert encode(caches["folder"], tmp_path / "c", tiny_vae_dir, *extra) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (name, err)
        assert not (tmp_path / "c").exists(), name
    base = ["--results-dir", tmp_path / "runs", "--run-name", "x", "--vae", tiny_vae_dir, "--max-steps", 1,
            "--no-progress", "--num-workers", 0, "--global-batch-size", 4, "--image-size", 16]
    for extra, match in (
        (["--data", caches["webdataset"], "--buckets", BUCKETS], "drop --buckets"),
        (["--data", caches["webdataset"], "--model", "DiT-S/8"], "not a multiple of 16"),
        (["--data", caches["webdataset"], "--arch", "diffussm"], "buckets need images of any size"),
    ):
        assert match in refused(capsys, train.main, [*base, *extra])
        assert not (tmp_path / "runs" / "x").exists()


def test_a_cut_shard_is_detected_and_rewritten_by_the_same_command(caches, tiny_vae_dir, tmp_path):
    import shutil

    from dit.errors import UserError

    out = tmp_path / "shards"
    shutil.copytree(caches["webdataset"], out)
    whole = (out / "shard-00001.tar").read_bytes()
    (out / "shard-00001.tar").write_bytes(whole[: len(whole) // 2])  # a copy killed half-way
    with pytest.raises(UserError, match="shard-00001.tar is damaged.*re-run cache_latents.py"):
        LatentCache(out)
    assert encode(caches["folder"], out, tiny_vae_dir, "--buckets", BUCKETS, "--out-format", "webdataset") == 0
    assert (out / "shard-00001.tar").read_bytes() == whole
