"""Video DiTs through the real scripts: train.py (resume, two processes, folders, --init-from), sample.py
(grids, npz, completion) and evaluate.py (generation and prediction metrics), bad flags."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, free_port
from helpers_compare import capture_floats
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_train import ENV, check_exact_resume, metrics, same_tensors, tiny_argv, train_run

import evaluate
import sample
from dit.pipelines import Pipeline
from dit.pipelines.images import class_rows
import train
from dit.cli import run_cli
from dit.autoencoders.pixels import from_uint8
from dit.errors import UserError
from dit.io.checkpoint import load_model, load_weights
from dit.io.video import read_clip_npz, write_clip_npz

VIDEO = ["--arch", "video-dit", "--data", "shapes-video", "--frames", 4, "--factorization", "factorized-attention",
         "--samples-per-class", 1]


def step_dir(run, step):
    return run / "checkpoints" / f"step_{step:09d}"


@pytest.mark.slow("trains a video model in one and two processes, resumes it, samples and completes clips")
def test_video_training_resumes_exactly_two_processes_match_one_and_samples_within_measured_tol(tmp_path, monkeypatch):
    full = check_exact_resume(tmp_path, *VIDEO)
    joint = train_run(tmp_path, *VIDEO, "--max-steps", 2, "--joint-images", 2,
                      name="joint")
    assert all(np.isfinite(m["loss"]) for m in metrics(joint))
    ckpt = load_weights(str(full))
    assert ckpt.arch == "video-dit" and ckpt.config.frames == 4 and ckpt.config.factorization == "factorized-attention"

    # `accelerate launch --multi_gpu` (torchrun underneath; gloo on CPU), as users run it: 2 processes
    # train the same weights as one
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(ROOT / "train.py"), *tiny_argv(tmp_path, "two", *VIDEO, "--max-steps", 3)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode == 0 and "2 process(es)" in res.stdout, res.stderr[-3000:]
    one = train_run(tmp_path, *VIDEO, "--max-steps", 3, name="one")
    same_tensors(load_file(str(step_dir(two, 3) / "model.safetensors")),
                 load_file(str(step_dir(one, 3) / "model.safetensors")), atol=1e-5)

    # Sampling: an animated grid, per-seed clips (batch 1 vs 3), and completion from given frames.
    gif = tmp_path / "grid.gif"
    assert run_cli(sample.main, ["--ckpt", str(full), "--classes", "0", "1", "--steps", "3", "--sampler", "ddim",
                                 "--out", str(gif), "--no-progress", "--device", "cpu"]) == 0
    from PIL import Image
    with Image.open(gif) as im:
        assert im.n_frames >= 2 and im.size[1] > 1.5 * im.size[0]  # one row per class: 2 rows of 1 clip
    assert [class_rows(c) for c in ([0, 1], [0, 0, 1, 1], [0, 1, 0], [0, 0, 1], None)] == [1, 2, None, None, None]
    npz, floats = {}, {}
    for bs in (1, 3):
        npz[bs] = tmp_path / f"clips-{bs}.npz"
        with capture_floats(monkeypatch) as got:
            assert run_cli(sample.main, ["--ckpt", str(full), "--num-samples", "3", "--npz", str(npz[bs]), "--steps",
                                         "3", "--sampler", "ddim", "--batch-size", str(bs), "--no-progress",
                                         "--device", "cpu"]) == 0
        floats[bs] = got.cat()
    assert np.load(npz[1])["arr_0"].shape == (3, 4, 16, 16, 3) and floats[1].shape == (3, 4, 3, 16, 16)
    # Measured tolerance, batch 1 against batch 3: the clips are 99.4% saturated as uint8 (equal for nearly any
    # change), so their floats before quantisation are compared. Measured (x86 CPU, OMP_NUM_THREADS=1, torch 2.x):
    # equal to the bit; 1e-3 (at |x| ~ 110) leaves room for other kernels at another batch size. Seeding by the
    # position in the batch (every batch-1 clip from the first seed) misses by up to 894 on 2/3 of the values.
    torch.testing.assert_close(floats[1], floats[3], rtol=0, atol=1e-3)
    assert (floats[3][0] - floats[3][1]).abs().mean() > 1.0  # another seed and class: another clip (~180 here)
    short = tmp_path / "short.npz"  # clips shorter than the checkpoint's F: the temporal table's first rows
    assert run_cli(sample.main, ["--ckpt", str(full), "--num-samples", "2", "--npz", str(short), "--steps", "3",
                                 "--sampler", "ddim", "--frames", "2", "--no-progress", "--device", "cpu"]) == 0
    assert np.load(short)["arr_0"].shape == (2, 2, 16, 16, 3)

    # Completion. The uint8 clips are ~99.5% saturated (the tiny model's floats lie far outside [-1, 1], median
    # |x| ~ 110), so "the generated frames differ from the input" holds for any random input: the floats before
    # quantisation are checked instead, the given pixels held exactly and the generated ones moved by what the model
    # is given. The 4-step model's adaLN-Zero gates have hardly opened (other given frames, labels or --cfg-scale 1
    # move its generated floats by <= 1.5e-5, one float32 ulp at ~100), so completion runs on its weights plus
    # seeded noise (std 0.05), a network that reads its given pixels, label and guidance.
    noisy = tmp_path / "noisy.safetensors"
    with safe_open(str(full / "export.safetensors"), "pt") as f:
        header = f.metadata()
    g = torch.Generator().manual_seed(31)
    save_file({k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
               for k, v in load_file(str(full / "export.safetensors")).items()}, str(noisy), metadata=header)
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (3, 4, 16, 16, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (3, 4, 16, 16, 3), dtype=np.uint8)  # other pixels where the model is given any
    write_clip_npz(tmp_path / "in.npz", clips, np.array([1, 2, 3]))
    done = tmp_path / "done.npz"

    def complete(clips_in, labels, *task):
        write_clip_npz(tmp_path / "task.npz", clips_in, labels)
        with capture_floats(monkeypatch) as got:
            assert run_cli(sample.main, ["--ckpt", str(noisy), "--video-in", str(tmp_path / "task.npz"), *task,
                                         "--npz", str(done), "--steps", "3", "--sampler", "ddim", "--no-progress",
                                         "--device", "cpu"]) == 0
        return read_clip_npz(done), got.cat()

    def check_moved(what, moved):
        # Measured (x86 CPU, OMP_NUM_THREADS=1, torch 2.x), |difference| of the generated floats, mean / max:
        # other given frames 0.74 / 5.7; labels 0 instead of 1-3: 2.6 / 14.5 (15.3 in the box); --cfg-scale 4
        # instead of 1 (then the default 4, since completion's 1): 2.1 / 9.8; other pixels around the box: 7.5 / 103. A pipeline that drops what
        # the model is given (pixels, label, scale) moves them by exactly 0: the bounds are 5x below what was seen.
        assert moved.mean() > 0.1 and moved.amax() > 1.0, (what, float(moved.mean()), float(moved.amax()))

    as_float = from_uint8(torch.from_numpy(clips).permute(0, 1, 4, 2, 3))  # (N, F, 3, H, W), the network's input
    given = ["--given-frames", "0,3"]
    (got, labels), floats = complete(clips, np.array([1, 2, 3]), *given)
    assert np.array_equal(got[:, [0, 3]], clips[:, [0, 3]]) and labels.tolist() == [1, 2, 3]
    assert torch.equal(floats[:, [0, 3]], as_float[:, [0, 3]])  # bit-exact: the sampler's result holds them
    swapped = clips.copy()
    swapped[:, [0, 3]] = other[:, [0, 3]]
    check_moved("given frames", (complete(swapped, np.array([1, 2, 3]), *given)[1] - floats)[:, 1:3].abs())
    check_moved("labels", (complete(clips, np.array([0, 0, 0]), *given)[1] - floats)[:, 1:3].abs())
    guided = complete(clips, np.array([1, 2, 3]), *given, "--cfg-scale", "4")[1]  # completion's default: 1
    check_moved("cfg scale", (guided - floats)[:, 1:3].abs())
    (got, _), _ = complete(clips[:, :3], np.array([1, 2, 3]), "--given-frames", "0")  # 3 of the model's 4 frames
    assert got.shape == (3, 3, 16, 16, 3) and np.array_equal(got[:, 0], clips[:, 0])
    write_clip_npz(tmp_path / "in5.npz", np.concatenate([clips, clips[:, :1]], 1))  # more than it has
    # spatial in-painting: a box generated in every frame, every other pixel the input's (bit-exact, floats too);
    # what is generated in the box moves with the pixels around it and the label
    box = np.zeros((16, 16), bool)
    box[4:12, 2:8] = True
    inside = torch.from_numpy(box)
    inpaint = ["--inpaint-box", "4,2,8,6"]
    (got, _), floats = complete(clips, np.array([1, 2, 3]), *inpaint)
    assert np.array_equal(got[:, :, ~box], clips[:, :, ~box])
    assert torch.equal(floats[..., ~inside], as_float[..., ~inside])
    around = np.where(box[None, None, :, :, None], clips, other)
    check_moved("around the box", (complete(around, np.array([1, 2, 3]), *inpaint)[1] - floats)[..., inside].abs())
    check_moved("box labels", (complete(clips, np.array([0, 0, 0]), *inpaint)[1] - floats)[..., inside].abs())

    # evaluate.py: generated clips through the moving-shapes metric (judges at a tiny budget), and FVD's inputs.
    rec = tmp_path / "eval.json"
    assert run_cli(evaluate.main, ["--ckpt", str(full), "--num-samples", "4", "--metric", "video-shapes",
                                   "--classifier-steps", "10", "--cache-dir", str(tmp_path / "cache"), "--steps", "2",
                                   "--sampler", "ddim", "--device", "cpu", "--out", str(rec), "--no-progress"]) == 0
    record = json.loads(rec.read_text())
    assert record["arch"] == "video-dit" and record["num_samples"] == 4 and record["sampler"] == "ddim"
    assert {"class_acc", "coherent_motion", "fd_video", "motion_confident"} <= record.keys()
    # ... and prediction: --ref's clips completed from frames 0-1, the rest scored against them
    from dit.data.shapes_video import cached_uint8_clips
    real, real_labels, _ = cached_uint8_clips(4, 16, 4, 1, None)
    write_clip_npz(tmp_path / "real.npz", real.permute(0, 1, 3, 4, 2).numpy(), real_labels.numpy())
    pred = ["--ckpt", str(full), "--num-samples", "3", "--metric", "video-shapes", "--ref", str(tmp_path / "real.npz"),
            "--classifier-steps", "10", "--cache-dir", str(tmp_path / "cache"), "--steps", "2", "--sampler", "ddim",
            "--device", "cpu", "--no-progress"]
    assert run_cli(evaluate.main, [*pred, "--given-frames", "0-1", "--out", str(rec)]) == 0
    record = json.loads(rec.read_text())
    assert record["given_frames"] == "0-1" and record["num_clips"] == 3 and record["reference_sha256"]
    assert {"direction_agree_given", "centroid_error"} <= record.keys() and "class_acc" not in record
    for bad, match in ((["--given-frames", "1-2"], "from the first frames"), (["--given-frames", "0-3"], "2 to 2"),
                       (["--given-frames", "0-1", "--num-samples", "9"], "holds 4 clips")):
        with pytest.raises(UserError, match=match):
            evaluate.main([*pred, *bad])
    with pytest.raises(UserError, match="--given-frames scores prediction"):
        evaluate.main(["--ckpt", str(full), "--num-samples", "3", "--metric", "video-shapes", "--given-frames", "0-1"])
    with pytest.raises(UserError, match="--i3d-weights"):
        evaluate.main(["--samples", str(done), "--metric", "fvd", "--ref", str(tmp_path / "in.npz")])
    with pytest.raises(UserError, match="i3d.pt not found"):
        evaluate.main(["--samples", str(done), "--metric", "fvd", "--ref", str(tmp_path / "in.npz"),
                       "--i3d-weights", str(tmp_path / "i3d.pt"), "--fvd-clips", "3", "--fvd-frames", "4"])
    with pytest.MonkeyPatch.context() as mp:  # from a checkpoint: FVD's inputs are checked before generating
        mp.setattr(evaluate, "generate", lambda *a: pytest.fail("generated before checking FVD's inputs"))
        fvd_args = ["--ckpt", str(full), "--metric", "fvd", "--ref", str(tmp_path / "in.npz"), "--i3d-weights",
                    str(tmp_path / "i3d.pt"), "--device", "cpu"]
        for extra, match in ((["--num-samples", "3"], "in.npz holds 3 clips; --fvd-clips 2048"),
                             (["--num-samples", "3", "--fvd-clips", "3"], "need 16"),
                             (["--num-samples", "2", "--fvd-clips", "3", "--fvd-frames", "4"], "--num-samples 2 <"),
                             (["--num-samples", "3", "--fvd-clips", "3", "--fvd-frames", "4", "--frames", "3"],
                              "draws 3-frame clips; --fvd-frames 4"),
                             (["--num-samples", "3", "--fvd-clips", "3", "--fvd-frames", "4"], "i3d.pt not found")):
            with pytest.raises(UserError, match=match):
                evaluate.main([*fvd_args, *extra])

    # Bad input: one line, nothing written.
    image_ckpt = train_run(tmp_path, "--max-steps", 1, name="image")
    for argv, match in (
        (["--ckpt", str(full), "--video-in", str(tmp_path / "in.npz"), "--given-frames", "0-9", "--npz", "x.npz"],
         "names frame 4"),
        (["--ckpt", str(full), "--video-in", str(tmp_path / "missing.npz"), "--given-frames", "0", "--npz", "x.npz"],
         "missing.npz"),
        (["--ckpt", str(full), "--video-in", str(tmp_path / "in.npz"), "--npz", "x.npz"], "go together"),
        (["--ckpt", str(full), "--inpaint-box", "0,0,4,4", "--npz", "x.npz"], "go together"),
        (["--ckpt", str(full), "--video-in", str(tmp_path / "in.npz"), "--given-frames", "0", "--inpaint-box",
          "0,0,4,4", "--npz", "x.npz"], "not both"),
        (["--ckpt", str(full), "--video-in", str(tmp_path / "in.npz"), "--inpaint-box", "0,0,4", "--npz", "x.npz"],
         "TOP,LEFT,HEIGHT,WIDTH"),
        (["--ckpt", str(full), "--video-in", str(tmp_path / "in.npz"), "--inpaint-box", "8,8,12,4", "--npz", "x.npz"],
         "inside the 16x16 frame"),
        (["--ckpt", str(image_ckpt), "--video-in", str(tmp_path / "in.npz"), "--given-frames", "0", "--npz", "x.npz"],
         "needs a video checkpoint"),
        (["--ckpt", str(image_ckpt), "--classes", "1", "--out", str(tmp_path / "x.gif")], "GIF and MP4 grids are for clips"),
        (["--ckpt", str(full), "--classes", "1", "--frames", "5", "--out", str(tmp_path / "x.gif")],
         "at most 4 frames"),
        (["--ckpt", str(full), "--video-in", str(tmp_path / "in5.npz"), "--given-frames", "0", "--npz", "x.npz"],
         "5-frame 16x16 clips; this checkpoint completes clips of at most 4 frames"),
        (["--ckpt", str(image_ckpt), "--classes", "1", "--frames", "2"], "holds an image network"),
        (["--ckpt", str(full), "--video-in", str(tmp_path / "in.npz"), "--given-frames", "0", "--frames", "2",
          "--npz", "x.npz"], "drop --classes / --num-samples / --frames"),
    ):
        with pytest.raises(UserError, match=match):
            sample.main([*argv, "--steps", "2", "--sampler", "ddim", "--device", "cpu", "--no-progress"])
    assert not (tmp_path / "x.gif").exists() and not (tmp_path / "x.npz").exists()
    with pytest.MonkeyPatch.context() as mp:  # a grid file the samples cannot be is refused before sampling
        mp.setattr(Pipeline, "generate", lambda *a, **k: pytest.fail("sampled before checking --out"))
        with pytest.raises(UserError, match="GIF and MP4 grids are for clips"):
            sample.main(["--ckpt", str(image_ckpt), "--classes", "1", "--out", str(tmp_path / "x.mp4"), "--device", "cpu"])


def test_training_on_a_folder_of_clips_with_a_frame_stride(tmp_path):
    """--data DIR (class folders of clips, here frame folders) through train.py, every 2nd frame."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a/c0", "a/c1", "b/c0", "b/c1"):
        (tmp_path / "clips" / name).mkdir(parents=True)
        for k in range(9):  # 4 frames 2 apart need 7; a random start among 3
            frame = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(frame).save(tmp_path / "clips" / name / f"{k}.png")
    flags = ["--arch", "video-dit", "--data", tmp_path / "clips", "--frames", 4, "--num-workers", 0,
             "--global-batch-size", 2, "--max-steps", 2]
    run = train_run(tmp_path, *flags, "--frame-stride", 2, name="folder")
    ckpt = load_weights(str(run))
    assert ckpt.config.num_classes == 2 and ckpt.config.frames == 4
    assert json.loads((run / "config.json").read_text())["frame_stride"] == 2
    assert all(np.isfinite(m["loss"]) for m in metrics(run))
    with pytest.raises(UserError, match="no clips of at least 10 frames .* lower --frames or --frame-stride"):
        train.main(tiny_argv(tmp_path, "long", *flags, "--frame-stride", 3))
    for flag in (["--frame-stride", 2], ["--no-random-offset"]):
        with pytest.raises(UserError, match="shapes-video renders its clips"):
            train.main(tiny_argv(tmp_path, "x", *VIDEO, *flag))
    with pytest.raises(UserError, match="--random-offset is a setting of the video-dit architecture"):
        train.main(tiny_argv(tmp_path, "x", "--no-random-offset"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "long").exists()

    # a folder run recorded before these flags existed read every frame from the first: resuming it
    # asks for those settings rather than silently changing its data
    old = train_run(tmp_path, *flags, "--max-steps", 1, "--no-random-offset", name="old")
    state = next((old / "checkpoints").iterdir()) / "train_state.json"
    record = json.loads(state.read_text())
    del record["config"]["frame_stride"], record["config"]["random_offset"]
    state.write_text(json.dumps(record))
    with pytest.raises(UserError, match="random_offset: False -> True"):
        train.main(tiny_argv(tmp_path, "old", *flags, "--max-steps", 2))
    train_run(tmp_path, *flags, "--max-steps", 2, "--no-random-offset", name="old")
    assert json.loads((step_dir(old, 2) / "train_state.json").read_text())["config"]["random_offset"] is False


def test_completing_clips_with_a_model_never_given_frames_warns(tmp_path, capsys):
    run = train_run(tmp_path, *VIDEO, "--max-steps", 1, "--video-masks", "none", name="none")
    assert load_weights(str(run)).meta["video_masks"] == "none"
    clips = np.random.default_rng(0).integers(0, 256, (2, 4, 16, 16, 3), dtype=np.uint8)
    write_clip_npz(tmp_path / "in.npz", clips, np.array([1, 2]))
    capsys.readouterr()
    assert run_cli(sample.main, ["--ckpt", str(run), "--video-in", str(tmp_path / "in.npz"), "--given-frames", "0",
                                 "--npz", str(tmp_path / "out.npz"), "--steps", "2", "--no-progress",
                                 "--device", "cpu"]) == 0
    assert "trained with --video-masks none" in capsys.readouterr().err


def test_init_from_an_image_dit_copies_the_spatial_weights(tmp_path):
    image = train_run(tmp_path, "--max-steps", 2, name="image")
    # named as a run of --results-dir (the video-cpu preset's own: cpu-demo-flow-ln), recorded resolved
    run = train_run(tmp_path, *VIDEO, "--max-steps", 1, "--init-from", "image", "--lr", 1e-9, name="video")
    assert json.loads((run / "config.json").read_text())["init_from"] == str(image)
    # the same command again resumes it (a killed preset run stays resumable), and so does --init-from none
    for init in ("image", "none"):
        train_run(tmp_path, *VIDEO, "--max-steps", 1, "--init-from", init, "--lr", 1e-9, name="video")
    src, dst = load_weights(str(image)).state_dict, load_file(str(step_dir(run, 1) / "model.safetensors"))
    shared = [k for k in src if k in dst]
    assert "blocks.0.attn.qkv.weight" in shared and "x_embedder.proj.weight" in shared
    for k in shared:  # one step at lr 1e-9 moves nothing visible
        torch.testing.assert_close(dst[k], src[k], atol=1e-6, rtol=0)
    # another class count (ImageNet's DiT for UCF101): everything but the class table, which stays fresh
    from dataclasses import replace

    from dit.training.setup import init_from_image, resolve_init
    video_net, _ = load_model(str(run))
    other = type(video_net)(replace(video_net.config, num_classes=4))
    fresh = other.y_embedder.embedding_table.weight.clone()
    copied, note = init_from_image(other, str(image))
    assert copied == len(shared) - 1 and "class table left fresh (10 classes there, 4 here)" in note
    assert torch.equal(other.y_embedder.embedding_table.weight, fresh)
    torch.testing.assert_close(other.state_dict()["blocks.0.attn.qkv.weight"], src["blocks.0.attn.qkv.weight"])
    torch.save(src, tmp_path / "bare.pt")  # a bare state dict, as the official DiT-XL-2-256x256.pt: no config
    assert "(10 classes there, 4 here)" in init_from_image(other, str(tmp_path / "bare.pt"))[1]
    with pytest.raises(UserError, match="split-heads"):
        train.main(tiny_argv(tmp_path, "split", *VIDEO, "--factorization", "split-heads", "--init-from", image))
    with pytest.raises(UserError, match="does not fit"):
        train.main(tiny_argv(tmp_path, "wide", *VIDEO, "--hidden-size", 64, "--init-from", image))
    with pytest.raises(UserError, match=r"train it first \(python train.py cpu-demo --recipe flow-ln --results-dir"):
        train.main(tiny_argv(tmp_path, "gone", *VIDEO, "--init-from", "cpu-demo-flow-ln"))
    with pytest.raises(UserError, match=r"--init-from cpu-demo-flow-ln: .*python train.py cpu-demo --recipe flow-ln"):
        train.main(["video-cpu", "--results-dir", str(tmp_path), "--run-name", "gone", "--max-steps", "1"])  # the preset's
    with pytest.raises(UserError, match="or pass --init-from none"):
        train.main(tiny_argv(tmp_path, "typo", *VIDEO, "--init-from", "imgae"))
    assert resolve_init("none", str(tmp_path)) == resolve_init("", str(tmp_path)) == ""
    assert not any((tmp_path / n).exists() for n in ("split", "wide", "gone", "typo"))


@pytest.mark.parametrize("argv,match", [
    (["--frames", "4"], "setting of the video-dit architecture"),
    (["--data", "shapes-video"], "add --arch video-dit"),
    (["--arch", "video-dit", "--data", "shapes"], "trains on clips"),
    (["--arch", "video-dit", "--data", "shapes-video", "--video-masks", "all"], "--video-masks must be one of"),
    (["--arch", "video-dit", "--data", "shapes-video", "--video-masks", "vdt-uncond:2"], "a number in"),
    (["--arch", "video-dit", "--data", "shapes-video", "--factorization", "diagonal"], "unknown factorization"),
    (["--arch", "video-dit", "--data", "shapes-video", "--joint-images", "2", "--factorization", "split-heads"],
     "spatial blocks only"),
    (["--arch", "video-dit", "--data", "shapes-video", "--joint-images", "2", "--given-conditioning", "adaln"],
     "spatial blocks only"),
    (["--arch", "video-dit", "--data", "shapes-video", "--given-conditioning", "film"], "unknown given conditioning"),
])
def test_bad_video_flags_fail_before_anything_is_written(tmp_path, argv, match):
    with pytest.raises(UserError, match=match):
        train.main(tiny_argv(tmp_path, "bad", *argv))
    assert not (tmp_path / "bad").exists()


