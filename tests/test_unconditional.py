"""Unconditional data through the real scripts: a flat folder (or --unconditional) trains a model of
the null class only; it samples without labels, refuses guidance and labels in one line, and exports
to diffusers with every label reading the null row."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY as TINY_NET, randomize
from helpers_compare import capture_floats
from PIL import Image
from test_cli_errors import refused
from test_diffusers_roundtrip import export, pipeline
from test_train import train_run

import evaluate
import sample
import train
from dit.cli import run_cli
from dit.io.checkpoint import load_model, load_weights
from dit.networks.conditioning import null_class
from dit.networks.dit import DiT
from dit.networks.dit_config import ModelConfig
from dit.sampling.generate import generate_images


def flat_folder(root, n=12, size=(20, 24), seed=0):
    """n mid-range random RGB images (H x W = size) directly in `root`: no class sub-directories."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(40, 216, (*size, 3), dtype=np.uint8)).save(root / f"img{i:02d}.png")
    return root


def test_flat_folder_trains_a_null_class_model_that_samples_without_labels(tmp_path, capsys, monkeypatch):
    data = flat_folder(tmp_path / "flat")
    run = train_run(tmp_path, "--data", data, "--max-steps", 2, "--num-workers", 0)
    ckpt = load_weights(str(run / "export.safetensors"))
    assert ckpt.config.num_classes == 0 and ckpt.meta["unconditional"] is True and ckpt.meta["class_names"] == []
    assert (run / "samples.png").is_file()  # the preview: null-label samples, no guidance

    # A grid without labels, drawn as generate_images draws the null label (floats, before quantisation).
    model, _ = load_model(str(run))
    with capture_floats(monkeypatch) as got:
        assert run_cli(sample.main, ["--ckpt", str(run), "--num-samples", "3", "--steps", "3", "--sampler", "ddim",
                                     "--out", str(tmp_path / "grid.png"), "--no-progress", "--device", "cpu"]) == 0
    assert (tmp_path / "grid.png").is_file()
    with capture_floats(monkeypatch) as want:
        from dit.autoencoders import load_autoencoder
        from dit.processes import process_from_meta

        generate_images(model.eval(), load_autoencoder("none"), process_from_meta(ckpt.meta), [0, 1, 2],
                        [null_class(0)] * 3, "ddim", 3, 1.0)
    torch.testing.assert_close(got.cat(), want.cat(), rtol=0, atol=0)
    assert got.cat()[0].sub(got.cat()[1]).abs().mean() > 0.05  # seeds differ: the comparison can fail

    # Whatever label it is handed, the network reads the null row (its only row).
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([10.0, 500.0])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, torch.tensor([0, 0])), model(x, t, torch.tensor([5, 9])), rtol=0, atol=0)

    # An evaluation batch: the null label recorded for every sample.
    npz = tmp_path / "eval.npz"
    assert run_cli(sample.main, ["--ckpt", str(run), "--num-samples", "4", "--npz", str(npz), "--steps", "2",
                                 "--no-progress", "--device", "cpu"]) == 0
    with np.load(npz) as f:
        assert f["arr_0"].shape == (4, 16, 16, 3) and f["arr_1"].tolist() == [null_class(0)] * 4

    # evaluate.py: no class accuracy or class counts for samples that have no class.
    rec = tmp_path / "eval.json"
    assert run_cli(evaluate.main, ["--ckpt", str(run), "--num-samples", "4", "--metric", "shapes", "--cache-dir",
                                   str(tmp_path / "cache"), "--classifier-steps", "20", "--steps", "2", "--no-progress",
                                   "--out", str(rec)]) == 0
    got = json.loads(rec.read_text())
    assert got["cfg_scale"] == 1.0 and got["class_counts"] is None and "class_acc" not in got and got["fd_shapes"] > 0

    # Guidance and labels: one line each, nothing written.
    for argv, match in ((["--num-samples", "2", "--cfg-scale", "3"], "unconditional, so classifier-free guidance"),
                        (["--classes", "1", "2"], "drop --classes and give --num-samples")):
        line = refused(capsys, sample.main, ["--ckpt", run, *argv, "--out", tmp_path / "never.png", "--device", "cpu"])
        assert match in line, line
        assert not (tmp_path / "never.png").exists()
    # --cfg-scale 1 is allowed: it is what is drawn anyway.
    assert run_cli(sample.main, ["--ckpt", str(run), "--num-samples", "1", "--cfg-scale", "1", "--steps", "2",
                                 "--out", str(tmp_path / "one.png"), "--no-progress", "--device", "cpu"]) == 0


def test_unconditional_flag_drops_the_labels_of_any_dataset(tmp_path):
    run = train_run(tmp_path, "--unconditional", "true", "--max-steps", 2)  # the built-in shapes: 10 classes
    ckpt = load_weights(str(run / "export.safetensors"))
    assert ckpt.config.num_classes == 0 and ckpt.meta["unconditional"] is True
    assert json.loads((run / "config.json").read_text())["unconditional"] is True


def test_folders_that_are_neither_layout_are_refused_before_anything_is_written(tmp_path, capsys):
    mixed = flat_folder(tmp_path / "mixed", n=2)
    flat_folder(mixed / "cats", n=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    for data, match in ((mixed, "mixes images at its top level"), (empty, "no images and no class sub-directories")):
        argv = ["--model", "DiT-S/4", "--image-size", 16, "--data", data, "--results-dir", tmp_path / "runs",
                "--run-name", "x", "--max-steps", 1, "--no-progress"]
        assert match in refused(capsys, train.main, argv)
        assert not (tmp_path / "runs" / "x").exists()


@pytest.mark.parametrize("overrides", [{"num_classes": 0}, {"num_classes": 10, "class_dropout_prob": 1.0}])
def test_unconditional_export_reads_the_null_row_for_every_label(tmp_path, tiny_vae_dir, capsys, overrides):
    """No classes, or class dropout 1: diffusers reads the label it is given, so every row of the exported
    table is the null row; its transformer then equals ours (on DiT's frequencies) for any label."""
    model, process, ckpt, out = export(tmp_path, tiny_vae_dir, **overrides)
    assert "the model is unconditional: every row" in capsys.readouterr().out
    transformer = pipeline(out, dit_frequencies=True).transformer
    table = transformer.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight
    assert len(table) == 1001 and torch.equal(table, table[-1:].expand_as(table))
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 4, 8, 8, generator=g), torch.tensor([5, 400, 999])
    with torch.no_grad():
        theirs = [transformer(x, timestep=t, class_labels=torch.tensor(y)).sample for y in ([0, 3, 9], [1000, 7, 2])]
        want = model(x, t.float(), torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(theirs[0], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(theirs[1], want, atol=1e-5, rtol=0)
    # The export reads back as the same unconditional model: sample.py draws it without labels.
    back, _ = load_model(str(out))
    assert back.num_classes == model.num_classes
    assert run_cli(sample.main, ["--ckpt", str(out), "--num-samples", "2", "--steps", "2", "--out",
                                 str(tmp_path / "back.png"), "--no-progress", "--device", "cpu"] +
                   ([] if overrides["num_classes"] == 0 else ["--cfg-scale", "1"])) == 0


class Brightness(torch.nn.Module):
    """A stand-in noise-aware classifier of 2 classes: bright (0) or dark (1) by the mean pixel."""

    num_classes = 2

    def forward(self, x, t, cond=None):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([4 * m, -4 * m], 1)


def test_a_classifier_guides_an_unconditional_network_towards_its_own_classes(monkeypatch):
    """The network reads the null label; the labels reach the classifier only (ADM's unconditional base)."""
    from dit.autoencoders import load_autoencoder
    from dit.processes import GaussianDiffusion

    net = randomize(DiT.from_config(ModelConfig(**{**TINY_NET, "in_channels": 3, "num_classes": 0}))).eval()
    process, pixels = GaussianDiffusion.from_schedule(), load_autoencoder("none")
    means = {}
    for labels, scale in (([0, 0], 0.0), ([1, 1], 0.0), ([0, 0], 30.0), ([1, 1], 30.0)):
        with capture_floats(monkeypatch) as got:
            generate_images(net, pixels, process, [3, 4], labels, "ddim", 5, 1.0, classifier=Brightness(),
                            classifier_scale=scale)
        means[(labels[0], scale)] = got.cat().mean().item()
    assert means[(0, 0.0)] == means[(1, 0.0)]  # unguided: the labels are not the network's
    assert means[(0, 30.0)] > means[(0, 0.0)] + 0.05 and means[(1, 30.0)] < means[(1, 0.0)] - 0.05, means


def test_a_grid_of_drawn_labels_is_the_evaluation_batch_of_the_same_flags(tiny_export, tmp_path, monkeypatch):
    """--num-samples without --npz: a grid whose labels are drawn as an evaluation batch draws them
    (--labels, --seed), so the two give the same samples (floats before quantisation)."""
    flags = ["--ckpt", str(tiny_export), "--num-samples", "4", "--labels", "balanced", "--seed", "7", "--steps", "2",
             "--cfg-scale", "2", "--no-progress", "--device", "cpu"]
    with capture_floats(monkeypatch) as grid:
        assert run_cli(sample.main, [*flags, "--out", str(tmp_path / "grid.png")]) == 0
    with capture_floats(monkeypatch) as batch:
        assert run_cli(sample.main, [*flags, "--npz", str(tmp_path / "batch.npz")]) == 0
    torch.testing.assert_close(grid.cat(), batch.cat(), rtol=0, atol=0)
    with np.load(tmp_path / "batch.npz") as f:
        assert sorted(f["arr_1"].tolist()) != [0, 0, 0, 0]  # drawn labels, not the null label
