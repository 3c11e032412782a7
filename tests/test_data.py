"""The built-in shapes data, its classifier, and the image-folder loader (bad files included)."""

import numpy as np
import pytest
import torch
from PIL import Image

from dit.data import shapes
from dit.eval import shapes_judge
from dit.data.folders import ImageFolderDataset, center_crop_arr
from dit.errors import UserError

# ---------------------------------------------------------------- shapes


def test_shapes_deterministic_per_index():
    a, b = shapes.ShapesDataset(20, 16, seed=0), shapes.ShapesDataset(20, 16, seed=0)
    assert torch.equal(b[7][0], a[7][0])  # b never rendered 0..6: no hidden sequential state
    assert torch.equal(a[7][0], a[7][0])
    assert not torch.equal(shapes.ShapesDataset(20, 16, seed=1)[7][0], a[7][0])
    assert not torch.equal(a[17][0], a[7][0])  # same class, different draw


@pytest.mark.parametrize("size", [16, 32])
def test_shapes_range_shape_and_balance(size):
    ds = shapes.ShapesDataset(50, size)
    images, labels = ds.tensors()
    assert images.shape == (50, 3, size, size) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert images.max() > 0.5 and images.min() < -0.5  # bright shapes on a dark background
    assert torch.bincount(labels).tolist() == [5] * 10
    assert [ds[i][1] for i in range(10)] == list(range(10))


def test_shapes_flip_mirrors():
    ds = shapes.ShapesDataset(10, 16, flip=True)
    torch.manual_seed(0)
    seen = {torch.equal(ds[3][0], ds.image(3).flip(-1)) for _ in range(20)}
    assert seen == {True, False}


def test_shapes_classes_have_distinct_colours():
    """Foreground colour per class (pixels far from the image's median) differs between classes."""
    images, labels = shapes.ShapesDataset(200, 16).tensors()
    fg = []
    for k in range(10):
        x = images[labels == k]  # (20, 3, H, W)
        dist = (x - x.median(dim=-1, keepdim=True).values.median(dim=-2, keepdim=True).values).norm(dim=1)
        fg.append(x.permute(0, 2, 3, 1)[dist > 0.8].mean(0))
    fg = torch.stack(fg)
    gaps = torch.cdist(fg, fg) + torch.eye(10) * 10
    assert gaps.min() > 0.4, gaps.min()


def test_write_image_folder_matches_dataset(tmp_path):
    root = shapes.write_image_folder(tmp_path / "shapes", images_per_class=2, image_size=16)
    ds = ImageFolderDataset(root, image_size=16)
    assert ds.class_names == shapes.folder_names() and ds.num_classes == 10 and len(ds) == 20
    ref = shapes.ShapesDataset(20, 16)
    for i, (path, label) in enumerate(ds.samples):
        k = int(path[-10:-4])  # file name is the ShapesDataset index
        assert label == ref.label(k)
        assert (ds[i][0] - ref.image(k)).abs().max() <= 1 / 127.5 + 1e-6  # uint8 quantisation only


# ---------------------------------------------------------------- classifier


@pytest.fixture
def one_thread():
    """On a loaded two-core machine, two OpenMP threads spin against other processes and run
    ~10x slower than one (measured: 19 s vs 2 s for this training), so use one here."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_classifier_learns_and_cache_reloads(tmp_path, one_thread, monkeypatch):
    # 16 px and 200 steps keep this to ~6 s; the default (32 px, 600 steps) gives >= 99%.
    model = shapes_judge.load_or_train(tmp_path, image_size=16, steps=200)
    assert model.heldout_accuracy > 0.9, model.heldout_accuracy
    path = shapes_judge.cache_path(tmp_path, image_size=16, steps=200)
    assert path.exists() and not list(tmp_path.glob("*.tmp"))

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(shapes_judge, "train_classifier", no_training)
    again = shapes_judge.load_or_train(tmp_path, image_size=16, steps=200)
    assert again.heldout_accuracy == round(model.heldout_accuracy, 4)
    for (k, v), w in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k
    x, y = shapes.ShapesDataset(100, 16, seed=99).tensors()
    assert shapes_judge.accuracy(again, x, y) == shapes_judge.accuracy(model, x, y) > 0.9
    assert again.features(x[:4]).shape == (4, shapes_judge.FEATURE_DIM)
    assert again(x[:4]).shape == (4, 11)  # ten classes and OTHER


# ---------------------------------------------------------------- image folders


def test_center_crop_keeps_the_centre():
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, :100], wide[:, 100:200], wide[:, 200:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    for img in (Image.fromarray(wide), Image.fromarray(wide).transpose(Image.Transpose.ROTATE_90)):
        out = np.asarray(center_crop_arr(img, 16)).astype(int)
        assert out.shape == (16, 16, 3)
        assert (out[2:-2, 2:-2] == (0, 255, 0)).all()  # the middle third; bicubic blurs the border
        assert (out[..., 1] > 200).all()
    for size in [(37, 101), (5, 5), (64, 64), (1000, 33)]:
        assert center_crop_arr(Image.new("RGB", size), 32).size == (32, 32)


def _bad_and_odd_files(folder):
    """Write the awkward cases into `folder`; return {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    p = {n: folder / n for n in ["empty.png", "truncated.jpg", "text.jpg", "grey.png", "cmyk.jpg",
                                 "grey16.png", "rgba.png", "tiny.png", "palette.png"]}  # fmt: skip
    p["empty.png"].write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "full.jpg", quality=95)
    data = (folder / "full.jpg").read_bytes()
    (folder / "full.jpg").unlink()
    p["truncated.jpg"].write_bytes(data[: len(data) // 2])
    p["text.jpg"].write_text("not an image\n")
    Image.new("L", (20, 20), 100).save(p["grey.png"])
    Image.new("RGB", (20, 20), (200, 30, 30)).convert("CMYK").save(p["cmyk.jpg"], quality=95)
    Image.fromarray(np.full((20, 20), 32768, np.uint16)).save(p["grey16.png"])  # mid-grey, 16 bit
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, 8:] = (255, 0, 0, 255)  # left half fully transparent black, right half opaque red
    Image.fromarray(rgba, "RGBA").save(p["rgba.png"])
    Image.new("RGB", (5, 5), (0, 0, 255)).save(p["tiny.png"])
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0])  # index 1 = green
    palette.save(p["palette.png"])
    return p


def test_image_folder_survives_bad_files(tmp_path):
    root = shapes.write_image_folder(tmp_path / "data", images_per_class=1, image_size=16)
    files = _bad_and_odd_files(root / "00_red_circle")
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        ds = ImageFolderDataset(root, image_size=16)
        items = [ds[i] for i in range(len(ds))]  # never raises
    bad = {str(files[n]) for n in ["empty.png", "truncated.jpg", "text.jpg"]}
    assert ds.skipped == bad and len(items) == 10 + 9
    assert all(x.shape == (3, 16, 16) and -1 <= x.min() and x.max() <= 1 for x, _ in items)

    index = {path: i for i, (path, _) in enumerate(ds.samples)}
    rgb = {n: (ds[index[str(f)]][0] + 1) * 127.5 for n, f in files.items()}  # back to 0..255
    assert (rgb["grey16.png"] - 128).abs().max() < 2  # scaled to 8 bit, not clipped to white
    assert (rgb["grey.png"] - 100).abs().max() < 1
    assert (rgb["cmyk.jpg"].mean((1, 2)) - torch.tensor([200.0, 30, 30])).abs().max() < 10
    assert (rgb["tiny.png"] - torch.tensor([0.0, 0, 255])[:, None, None]).abs().max() < 1  # upscaled
    assert (rgb["palette.png"] - torch.tensor([0.0, 200, 0])[:, None, None]).abs().max() < 1
    assert (rgb["rgba.png"][:, :, :6] > 254).all()  # transparent -> white, not the hidden black
    assert (rgb["rgba.png"][:, :, 10:] - torch.tensor([255.0, 0, 0])[:, None, None]).abs().max() < 1
    # A bad file yields the next readable one, the same every time.
    i = index[str(files["empty.png"])]
    assert torch.equal(ds[i][0], ds[(i + 1) % len(ds)][0])

    scanned = ImageFolderDataset(root, image_size=16)
    with pytest.warns(UserWarning):
        assert set(scanned.scan()) == bad
    assert len(scanned) == len(ds) - 3


def test_image_folder_flip_is_seeded(tmp_path):
    root = shapes.write_image_folder(tmp_path / "data", images_per_class=1, image_size=16)
    runs = []
    for _ in range(2):
        ds = ImageFolderDataset(root, 16, flip=True, generator=torch.Generator().manual_seed(0))
        runs.append(torch.stack([ds[i % 10][0] for i in range(30)]))
    assert torch.equal(*runs)
    plain = ImageFolderDataset(root, 16)
    flipped = [not torch.equal(runs[0][i], plain[i % 10][0]) for i in range(30)]
    assert 0 < sum(flipped) < 30


def test_image_folder_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(UserError, match="no class sub-directories"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="has no images"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "cats" / "a.png").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(UserError, match="no readable images"):
        ImageFolderDataset(tmp_path, scan=True)
