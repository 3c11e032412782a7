"""Video data: the shapes refactor (bit-identical), moving shapes with ground truth, clip npz files,
video folders, GIF/MP4 writers."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from dit.data import shapes, shapes_video, video_folders
from dit.data.folders import center_crop_arr
from dit.data.shapes import COLORS, MAX_ROTATION, _grid, _mask, _supersample
from dit.data.shapes_video import DIRECTIONS, STEPS, InMemoryClips, ShapesVideoDataset, cached_uint8_clips
from dit.data.stream import flip_or_not
from dit.data.video_folders import VideoFolderDataset
from dit.errors import UserError
from dit.io import video


def _render_oracle(label, rng, size=32, color=None):
    """shapes.render as it was before the draw_background/draw_shape split, copied verbatim: the
    refactor must reproduce it bit for bit (cached data and classifiers are keyed by VERSION "1")."""
    gx, gy = _grid(size)
    base = rng.uniform(0.03, 0.16) + rng.uniform(-0.03, 0.03, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    ramp = np.cos(angle) * c[None, :] + np.sin(angle) * c[:, None]  # (H, W)
    bg = base[None, None, :] + rng.uniform(0, 0.12) * ramp[..., None]
    bg = bg + rng.normal(0, 0.015, size=(size, size, 3))
    radius = rng.uniform(0.22, 0.36)
    cx, cy = rng.uniform(radius, 1 - radius, size=2)
    theta = math.radians(rng.uniform(-MAX_ROTATION[label], MAX_ROTATION[label]))
    lo = np.clip(np.floor((np.array([cx, cy]) - 1.15 * radius) * size), 0, size).astype(int)
    hi = np.clip(np.ceil((np.array([cx, cy]) + 1.15 * radius) * size), 0, size).astype(int)
    ss = _supersample(size)
    box = np.s_[lo[1] * ss : hi[1] * ss, lo[0] * ss : hi[0] * ss]
    dx, dy = (gx[box] - cx) / radius, (cy - gy[box]) / radius
    cos, sin = math.cos(theta), math.sin(theta)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    cover = _mask(label, u, v).astype(np.float32)
    h, w = hi[1] - lo[1], hi[0] - lo[0]
    alpha = np.zeros((size, size, 1), np.float32)
    alpha[lo[1] : hi[1], lo[0] : hi[0], 0] = cover.reshape(h, ss, w, ss).mean(axis=(1, 3))
    color = COLORS[label if color is None else color] * rng.uniform(0.85, 1.05) + rng.normal(0, 0.04, size=3)
    img = bg * (1 - alpha) + np.clip(color, 0, 1)[None, None, :] * alpha
    return np.clip(img, 0, 1).astype(np.float32)


# ---------------------------------------------------------------- shapes.py refactor


@pytest.mark.parametrize("size", [16, 32])
def test_render_bit_identical_to_frozen_oracle(size):
    for label in range(10):
        for seed in range(6):
            for color in (None, (label + 3) % 10):
                a = shapes.render(label, np.random.default_rng([seed, label]), size, color)
                b = _render_oracle(label, np.random.default_rng([seed, label]), size, color)
                assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b), (label, seed, color)


def test_render_with_mask_is_render_and_an_exact_coverage():
    for label in range(10):
        img, mask = shapes.render_with_mask(label, np.random.default_rng([3, label]), 32)
        assert np.array_equal(img, shapes.render(label, np.random.default_rng([3, label]), 32))
        assert mask.shape == (32, 32) and mask.dtype == np.float32 and 0 <= mask.min() and mask.max() == 1
        # exact: outside the mask the pixel is the background, fully inside it is one flat colour
        bg = np.clip(shapes.draw_background(np.random.default_rng([3, label]), 32), 0, 1).astype(np.float32)
        assert np.array_equal(img[mask == 0], bg[mask == 0])
        inside = img[mask == 1]
        assert len(inside) > 10 and np.array_equal(inside, np.broadcast_to(inside[0], inside.shape))


# ---------------------------------------------------------------- moving shapes


def _clips(n, size=16, seed=0):
    ds = ShapesVideoDataset(n, size, seed=seed)
    return ds, [ds.render(i) for i in range(n)]


def test_clips_deterministic_per_seed_and_index():
    a, b = ShapesVideoDataset(20), ShapesVideoDataset(20)
    x = a.clip(7)
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert torch.equal(b.clip(7), x)  # b never rendered 0..6: no hidden sequential state
    assert not torch.equal(ShapesVideoDataset(20, seed=1).clip(7), x)
    assert not torch.equal(a.clip(17), x)  # same class, another draw
    assert [a[i][1] for i in range(12)] == [i % 10 for i in range(12)]
    assert not torch.equal(x[0], x[-1])  # it moves


def test_centroid_is_the_mask_centroid():
    _, clips = _clips(100)
    xs = np.arange(16) + 0.5  # pixel centres
    for clip, t in clips:
        m = t["mask"].astype(np.float64)  # (F, H, W)
        assert t["mask"].shape == (8, 16, 16) and clip.shape == (8, 16, 16, 3)
        cx = (m * xs[None, None, :]).sum((1, 2)) / m.sum((1, 2))
        cy = (m * xs[None, :, None]).sum((1, 2)) / m.sum((1, 2))
        np.testing.assert_allclose(t["centroid"], np.stack([cx, cy], -1), atol=1e-4)
        # the parametric centre: only a sliver cut at a wall and antialiasing separate them
        assert np.abs(t["centroid"] - t["center"]).max() < 0.75


def test_direction_speed_and_straight_tracks():
    _, clips = _clips(400)
    straight = [t for _, t in clips if not t["bounced"]]
    assert {t["direction"] for t in straight} == {0, 1, 2, 3}
    for t in straight:
        axis = 0 if DIRECTIONS[t["direction"]] in ("right", "left") else 1
        sign = STEPS[t["direction"]][axis]
        assert 0.3 <= t["speed"] <= 0.6
        np.testing.assert_allclose(np.diff(t["center"][:, axis]), sign * t["speed"], atol=1e-4)
        assert np.ptp(t["center"][:, 1 - axis]) == 0  # the other axis is constant
        # the measured centroid agrees: every step along the axis has the right sign, the other
        # axis stays within 0.5 px (a spinning half-disc's centroid is ~0.2 px off its centre)
        steps = np.diff(t["centroid"][:, axis]) * sign
        assert steps.min() > 0.05, steps
        assert np.ptp(t["centroid"][:, 1 - axis]) < 0.5
        # net motion: exactly 7 * speed >= 2.1 px for the centre; a wall can cut the centroid's to ~1.7
        assert abs(t["centroid"][-1, axis] - t["centroid"][0, axis]) > 1.5
    up = next(t for t in straight if DIRECTIONS[t["direction"]] == "up")
    assert up["centroid"][-1, 1] < up["centroid"][0, 1]  # image y points down


def test_bounces_reverse_and_are_a_minority():
    _, clips = _clips(400)
    truths = [t for _, t in clips]
    fraction = np.mean([t["bounced"] for t in truths])
    assert 0.15 <= fraction <= 0.4, fraction
    mid = 0
    for t in truths:
        r = t["radius"]
        assert (t["center"] >= 0.75 * r - 1e-4).all() and (t["center"] <= 16 - 0.75 * r + 1e-4).all()
        if not t["bounced"]:
            continue
        axis = 0 if t["direction"] < 2 else 1
        steps = np.diff(t["center"][:, axis]) * STEPS[t["direction"]][axis]
        full = np.isclose(np.abs(steps), t["speed"], atol=1e-4)  # all but the step holding the bounce
        assert (~full).sum() <= 1
        signs = np.sign(steps[full])
        assert (np.diff(signs) <= 0).all()  # forward, then backward: one reversal
        assert signs[-1] < 0 or not full[-1]  # it did turn round (or turns in the last step)
        if full[0] and full[-1] and signs[0] > 0:  # a bounce inside the clip: the measured track turns too
            mid += 1
            c = np.diff(t["centroid"][:, axis]) * STEPS[t["direction"]][axis]
            assert c[0] > 0 and c[-1] < 0
    assert mid >= 10


def test_angles_spin_only_for_rotation_proof_classes():
    _, clips = _clips(40)
    for i, (_, t) in enumerate(clips):
        label = i % 10
        step = np.diff(t["angle"])
        if label in shapes_video.SPINNING:
            step = (step + 180) % 360 - 180
            assert np.ptp(step) < 1e-3 and abs(step[0]) <= 15
        else:
            assert (step == 0).all() and abs(t["angle"][0]) <= MAX_ROTATION[label]


def test_speed_scales_with_size():
    _, clips = _clips(20, size=32)
    assert all(0.6 <= t["speed"] <= 1.2 and t["mask"].shape == (8, 32, 32) for _, t in clips)


def test_uint8_cache_round_trip_and_reuse(tmp_path, monkeypatch):
    clips, labels, truth = cached_uint8_clips(20, 16, 8, 0, tmp_path)
    assert clips.shape == (20, 8, 3, 16, 16) and clips.dtype == torch.uint8
    assert labels.tolist() == [i % 10 for i in range(20)]
    ds = ShapesVideoDataset(20)
    assert (clips[5].float() / 127.5 - 1 - ds.clip(5)).abs().max() <= 1 / 127.5
    assert truth["centroid"].shape == (20, 8, 2) and truth["bounced"].dtype == bool
    np.testing.assert_array_equal(truth["centroid"][5], ds.truth(5)["centroid"])
    assert truth["direction"][5] == ds.truth(5)["direction"]
    (file,) = tmp_path.glob("*.npz")
    with np.load(file) as data:
        assert data["clips"].shape == (20, 8, 16, 16, 3)  # the on-disk layout

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(ShapesVideoDataset, "render", no_render)
    again, labels2, truth2 = cached_uint8_clips(20, 16, 8, 0, tmp_path)
    assert torch.equal(again, clips) and torch.equal(labels2, labels)
    assert all(np.array_equal(truth2[k], truth[k]) for k in truth)
    monkeypatch.undo()
    file.write_bytes(file.read_bytes()[:1000])  # a copy cut short: rendered again and replaced
    cut, _, _ = cached_uint8_clips(20, 16, 8, 0, tmp_path)
    assert torch.equal(cut, clips) and np.load(file)["clips"].shape == (20, 8, 16, 16, 3)


def test_in_memory_clips_flip_whole_clip_like_flip_or_not():
    clips, labels, _ = cached_uint8_clips(10, 16, 8, 0, None)
    for flip in (True, False):
        ds = InMemoryClips(clips, labels, flip, 10, shapes.CLASS_NAMES)
        assert len(ds) == 10
        flipped = set()
        for seed in range(12):
            rng, ref = np.random.default_rng(seed), np.random.default_rng(seed)
            x, y, bad = ds.get(3, rng)
            plain = clips[3].float() / 127.5 - 1
            want = flip_or_not(plain, ref, flip)
            assert torch.equal(x, want) and y == 3 and bad is False and x.shape == (8, 3, 16, 16)
            assert rng.random() == ref.random()  # the same number of draws as flip_or_not
            flipped.add(torch.equal(x, plain.flip(-1)))  # every frame mirrored, or none
        assert flipped == ({True, False} if flip else {False})


# ---------------------------------------------------------------- clip .npz files


def test_clip_npz_round_trip(tmp_path):
    clips = np.random.default_rng(0).integers(0, 256, (4, 3, 5, 6, 3), dtype=np.uint8)
    video.write_clip_npz(tmp_path / "a.npz", clips, np.arange(4))
    got, labels = video.read_clip_npz(tmp_path / "a.npz")
    assert np.array_equal(got, clips) and labels.tolist() == [0, 1, 2, 3]
    video.write_clip_npz(tmp_path / "no_suffix", clips)  # no ".npz" appended behind our back
    got, labels = video.read_clip_npz(tmp_path / "no_suffix")
    assert np.array_equal(got, clips) and labels is None
    with pytest.raises(ValueError):
        video.write_clip_npz(tmp_path / "b.npz", clips.astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "no_suffix"]  # no temporary left


def _bad_files(tmp_path):
    ok = np.zeros((2, 3, 4, 4, 3), np.uint8)
    (tmp_path / "text.npz").write_text("not an archive")
    np.save(tmp_path / "array.npy", ok)
    np.savez(tmp_path / "float.npz", ok.astype(np.float32))
    np.savez(tmp_path / "ndim4.npz", ok[0])
    np.savez(tmp_path / "rgba.npz", np.zeros((2, 3, 4, 4, 4), np.uint8))
    np.savez(tmp_path / "labels_len.npz", ok, np.arange(3))
    np.savez(tmp_path / "labels_float.npz", ok, np.zeros(2))
    np.savez(tmp_path / "named.npz", clips=ok)
    np.savez(tmp_path / "pickled.npz", np.array([{"a": 1}], dtype=object))
    return ["missing.npz", "text.npz", "array.npy", "float.npz", "ndim4.npz", "rgba.npz", "labels_len.npz",
            "labels_float.npz", "named.npz", "pickled.npz"]


def test_clip_npz_bad_inputs_are_user_errors(tmp_path):
    for name in _bad_files(tmp_path):
        with pytest.raises(UserError) as e:
            video.read_clip_npz(tmp_path / name)
        msg = str(e.value)
        assert "\n" not in msg and name in msg and "write_clip_npz" in msg, msg


# ---------------------------------------------------------------- GIF and MP4


def _flat_clips(n=6, frames=5, size=8):
    """Clips whose every frame is one flat colour that depends on (clip, frame): easy to find again."""
    colors = np.array([[40 * i + 20, 30 * k + 10, 200 - 20 * i] for i in range(n) for k in range(frames)])
    return np.broadcast_to(colors.reshape(n, frames, 1, 1, 3), (n, frames, size, size, 3)).astype(np.uint8)


def test_clip_grid_and_gif(tmp_path):
    clips = _flat_clips()  # 6 clips, 5 frames, 8 px
    grid = video.clip_grid(clips, ncols=3)
    assert grid.shape == (5, 2 * 10 + 2, 3 * 10 + 2, 3)
    video.write_gif(tmp_path / "g.gif", clips, ncols=3, scale=2, fps=10)
    with Image.open(tmp_path / "g.gif") as im:
        assert im.n_frames == 5 and im.size == (64, 44) and im.info.get("loop") == 0
        for k in (0, 3):
            im.seek(k)
            rgb = np.asarray(im.convert("RGB"))
            # clip 4 is row 1, column 1: its cell starts at pad + (size + pad) in both axes, times 2
            y, x = 2 * (2 + 10) + 5, 2 * (2 + 10) + 5
            assert tuple(rgb[y, x]) == tuple(clips[4, k, 0, 0]), k
    assert video.clip_grid(clips).shape[2] == 3 * 10 + 2  # default: near-square, 3 columns


def test_mp4_writes_and_reads_back(tmp_path):
    clips = _flat_clips()
    video.write_mp4(tmp_path / "g.mp4", clips, ncols=3)  # default scale: 8 px -> 64 px cells
    frames = video_folders.read_frames(tmp_path / "g.mp4")
    assert len(frames) == 5 and frames[0].size == (3 * 8 * 8 + 4 * 16, 2 * 8 * 8 + 3 * 16)
    center = np.asarray(frames[3])[8 * 12 + 32, 8 * 12 + 32].astype(int)  # middle of clip 4's cell
    assert np.abs(center - clips[4, 3, 0, 0]).max() <= 6  # lossy, but a flat colour survives


def test_mp4_without_pyav_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    assert not video.have_pyav()
    with pytest.raises(UserError, match="write_gif"):
        video.write_mp4(tmp_path / "g.mp4", _flat_clips())
    (tmp_path / "x.mp4").write_bytes(b"")
    with pytest.raises(UserError, match="pip install av"):
        video_folders.read_frames(tmp_path / "x.mp4")
    assert not (tmp_path / "g.mp4").exists()


# ---------------------------------------------------------------- video folders


def _frame_folder(path, levels, size=16):
    """A clip as a folder of PNGs whose frame k is flat grey `levels[k]`, with a coloured corner."""
    path.mkdir(parents=True)
    for k, level in enumerate(levels):
        a = np.full((size, size, 3), level, np.uint8)
        a[: size // 4, : size // 4] = (255, 0, 0)  # top-left marker: shows a flip
        Image.fromarray(a).save(path / f"{k:03d}.png")


def test_video_folder_frames_stride_offset_and_flip(tmp_path):
    _frame_folder(tmp_path / "a" / "clip0", [10 * k for k in range(10)])
    _frame_folder(tmp_path / "a" / "clip1", [5 + 10 * k for k in range(10)], size=40)  # resized + cropped
    _frame_folder(tmp_path / "b" / "short", [1, 2, 3])
    _frame_folder(tmp_path / "b" / "clip2", [200 - 10 * k for k in range(12)])
    with pytest.warns(UserWarning, match="1 frame folders"):
        ds = VideoFolderDataset(tmp_path, image_size=16, frames=4, stride=2)
    assert len(ds) == 3 and ds.class_names == ["a", "b"] and ds.num_classes == 2 and len(ds.too_short) == 1
    x, y, bad = ds.read(0)
    assert x.shape == (4, 3, 16, 16) and y == 0 and bad is False
    levels = ((x[:, :, -1, -1] + 1) * 127.5).round().int()[:, 0].tolist()
    assert levels == [0, 20, 40, 60]  # frames 0, 2, 4, 6
    want = center_crop_arr(Image.open(tmp_path / "a" / "clip1" / "002.png"), 16)
    x1, _, _ = ds.read(1)
    assert np.array_equal(((x1[1] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy(), np.asarray(want))

    with pytest.warns(UserWarning, match="1 frame folders"):
        ds = VideoFolderDataset(tmp_path, image_size=16, frames=4, stride=2, random_offset=True, flip=True)
    starts, flips = set(), set()
    for seed in range(20):
        rng, ref = np.random.default_rng(seed), np.random.default_rng(seed)
        x, y, _ = ds.get(2, rng)
        ref.random(), ref.random()
        assert rng.random() == ref.random()  # two draws: offset, flip
        lv = ((x[:, 0, 8, 8] + 1) * 127.5).round().int().tolist()
        assert np.diff(lv).tolist() == [-20] * 3 and (200 - lv[0]) % 10 == 0  # stride 2 from some start
        starts.add(lv[0])
        flips.add(bool(x[0, 0, 0, -1] > 0.9))  # red marker moved to the top-right, in every frame
        assert all(bool(x[k, 0, 0, -1] > 0.9) == bool(x[0, 0, 0, -1] > 0.9) for k in range(4))
    assert starts == {200, 190, 180, 170, 160, 150} and flips == {True, False}  # 12 frames: offsets 0..5


def test_video_folder_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        VideoFolderDataset(tmp_path / "nope")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no clips"):
        VideoFolderDataset(tmp_path / "empty")
    (tmp_path / "v" / "a").mkdir(parents=True)
    (tmp_path / "v" / "a" / "x.mp4").write_bytes(b"\0" * 100)
    monkeypatch.setattr(video_folders, "have_pyav", lambda: False)
    with pytest.raises(UserError, match="x.mp4.*pip install av"):
        VideoFolderDataset(tmp_path / "v")


def test_video_folder_reads_gif_and_mp4_and_skips_bad_files(tmp_path):
    ds = ShapesVideoDataset(2)
    clips = np.stack([shapes_video.to_uint8_clip(ds.render(i)[0]) for i in range(2)])  # (2, 8, 16, 16, 3)
    (tmp_path / "a").mkdir()
    video.write_gif(tmp_path / "a" / "c0.gif", clips[:1], scale=1, pad=0)
    names = ["c0.gif"]
    if video.have_pyav():
        video.write_mp4(tmp_path / "a" / "c1.mp4", clips[1:], scale=1, pad=0)
        (tmp_path / "a" / "c2.mp4").write_bytes(b"garbage" * 50)
        names += ["c1.mp4", "c2.mp4"]
    folder = VideoFolderDataset(tmp_path, image_size=16, frames=8)
    assert len(folder) == len(names)
    x, y, bad = folder.read(0)
    got = ((x + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
    assert y == 0 and bad is False and np.abs(got - clips[0]).mean() < 3  # GIF: one global palette
    if video.have_pyav():
        x, _, _ = folder.read(1)
        got = ((x + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
        assert np.abs(got - clips[1]).mean() < 12  # H.264 4:2:0 at 16 px: colour blurs at edges
        with pytest.warns(UserWarning, match="c2.mp4"):
            x2, _, bad = folder.read(2)  # garbage: the next clip (the GIF) stands in, flagged
        assert bad is True and torch.equal(x2, folder.read(0)[0]) and str(tmp_path / "a" / "c2.mp4") in folder.skipped
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert folder.scan() == [str(tmp_path / "a" / "c2.mp4")] and len(folder) == 2
        (tmp_path / "a" / "c2.mp4").unlink()
    short = VideoFolderDataset(tmp_path, image_size=16, frames=9)  # only 8 frames each: all too short
    with pytest.warns(UserWarning, match="fewer than the 9"), pytest.raises(UserError, match="no usable clips"):
        short.read(0)

