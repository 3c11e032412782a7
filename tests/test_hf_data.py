"""Hugging Face datasets as --data (dit/data/hf.py) through train.py: a local imagefolder with
metadata.jsonl, a save_to_disk dataset, parquet and a hub id (its loading call real, the hub replaced by
local data: there is no network here), each image equal to the file's own centre crop; bad columns
and splits refused in one line before anything is written."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli_errors import refused
from test_train import train_run

import train
from dit.data.folders import center_crop_hw, load_image
from dit.data.hf import HFImages, hf_kind, load_hf
from dit.data.sources import Images
from dit.io.checkpoint import load_weights


@pytest.fixture
def hf_sources(tmp_path):
    """The same 8 images (two classes by name, a caption each) as an imagefolder, a saved dataset and parquet."""
    folder = tmp_path / "imagefolder"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        Image.fromarray(rng.integers(40, 216, (20, 26, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "label": ["dog", "cat"][i % 2], "text": f"picture {i}"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_hf(str(folder), "imagefolder", cache_dir=str(tmp_path / "cache"))
    ds.save_to_disk(str(tmp_path / "saved"))
    ds.to_parquet(str(tmp_path / "data.parquet"))
    return {"imagefolder": folder, "disk": tmp_path / "saved", "parquet": tmp_path / "data.parquet", "ds": ds}


def test_each_layout_is_recognised_and_reads_the_files_own_pixels(hf_sources, tmp_path):
    for kind in ("imagefolder", "disk", "parquet"):
        assert hf_kind(str(hf_sources[kind])) == kind
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(plain / "a.png")
    assert hf_kind("owner/some-dataset") == "hub" and hf_kind(str(plain)) is None  # a folder of images is ours
    base = Images(HFImages(load_hf(str(hf_sources["disk"]), "disk"), source="saved"), 16, 24, False)
    assert base.class_names == ["cat", "dog"] and base.num_classes == 2
    for i in range(3):
        x, y, replaced = base.get(i, np.random.default_rng(0))
        want = np.asarray(center_crop_hw(load_image(hf_sources["imagefolder"] / f"{i}.png"), 16, 24))
        assert torch.equal(x, torch.from_numpy(want.copy()).permute(2, 0, 1).float().div(127.5).sub(1))
        assert base.class_names[y] == ["dog", "cat"][i % 2] and not replaced
    captions = HFImages(hf_sources["ds"], caption_column="text", source="x")
    assert captions.caption(3) == "picture 3"
    unlabelled = HFImages(hf_sources["ds"], label_column="", source="x").ds.remove_columns("label")
    assert HFImages(unlabelled, source="x").num_classes == 0


@pytest.mark.parametrize("kind", ["imagefolder", "disk", "parquet"])
def test_train_on_a_hugging_face_dataset(hf_sources, tmp_path, kind):
    run = train_run(tmp_path, "--data", hf_sources[kind], "--max-steps", 2, "--num-workers", 0)
    ckpt = load_weights(str(run / "export.safetensors"))
    assert ckpt.config.num_classes == 2 and ckpt.meta["class_names"] == ["cat", "dog"]


def test_a_hub_id_goes_to_load_dataset(hf_sources, tmp_path, monkeypatch):
    import datasets

    calls = []

    def hub(name, split=None, cache_dir=None, **kwargs):  # the hub, played by the local copy
        calls.append((name, split))
        return hf_sources["ds"]

    monkeypatch.setattr(datasets, "load_dataset", hub)
    run = train_run(tmp_path, "--data", "someone/shapes-photos", "--dataset-split", "train", "--max-steps", 1,
                    "--num-workers", 0)
    assert calls == [("someone/shapes-photos", "train")] and (run / "export.safetensors").is_file()


def test_bad_hugging_face_inputs_are_one_line_and_write_nothing(hf_sources, tmp_path, capsys, monkeypatch):
    import datasets

    real = datasets.load_dataset

    def offline(name, *args, **kwargs):  # no network here: the hub answers as it does without one
        if name in ("imagefolder", "parquet"):
            return real(name, *args, **kwargs)
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    base = ["--model", "DiT-S/4", "--image-size", 16, "--results-dir", tmp_path / "runs", "--run-name", "x",
            "--max-steps", 1, "--no-progress", "--num-workers", 0]
    for extra, match in (
        (["--data", hf_sources["disk"], "--image-column", "picture"], "--image-column picture: --data"),
        (["--data", hf_sources["parquet"], "--label-column", "kind"], "has no such column; its columns are"),
        (["--data", hf_sources["imagefolder"], "--dataset-split", "test"], "could not read the Hugging Face dataset"),
        (["--data", hf_sources["disk"], "--caption-column", "text"], "train a text-conditioned network on them (--arch text-dit)"),
        (["--data", "nobody/no-such-dataset-here"], "not a local path, so read as a hub id"),
    ):
        assert match in refused(capsys, train.main, [*base, *extra])
        assert not (tmp_path / "runs" / "x").exists()
