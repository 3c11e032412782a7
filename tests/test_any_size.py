"""Any size (--image-size H W): the 2-D tables of an h x w token grid against their closed forms, a
16 x 24 DiT trained, resumed exactly and sampled through the real scripts, its forward pass on a
square input equal to a square model's, and the sizes nothing can draw refused in one line."""

import math

import numpy as np
import pytest
import torch
from conftest import TINY, randomize
from PIL import Image
from test_cli_errors import refused
from test_train import check_exact_resume
from test_unconditional import flat_folder

import sample
import train
from dit.cli import run_cli
from dit.data.folders import center_crop_arr, center_crop_hw
from dit.io.checkpoint import load_model, load_weights, save_export
from dit.networks.dit import DiT
from dit.networks.dit_config import ModelConfig
from dit.networks.layers import get_2d_sincos_pos_embed


def test_2d_sincos_table_of_a_wide_grid_is_the_closed_form():
    # Token k of a (rows, cols) grid sits at row k // cols, column k % cols; its first D/2 channels are
    # [sin(col w_i), cos(col w_i)], the last D/2 the same of its row, w_i = 10000^(-i / (D/4)) (MAE, DiT §3.1).
    D, rows, cols = 16, 3, 5
    table = get_2d_sincos_pos_embed(D, (rows, cols)).double()
    assert table.shape == (rows * cols, D)
    freqs = [10000 ** (-i / (D / 4)) for i in range(D // 4)]
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        want = [math.sin(c * f) for f in freqs] + [math.cos(c * f) for f in freqs]
        want += [math.sin(r * f) for f in freqs] + [math.cos(r * f) for f in freqs]
        torch.testing.assert_close(table[k], torch.tensor(want, dtype=torch.float64), atol=1e-6, rtol=0)
    assert torch.equal(get_2d_sincos_pos_embed(D, 4), get_2d_sincos_pos_embed(D, (4, 4)))  # square: the same table


@pytest.mark.parametrize("pos", ["sincos", "rope2d", "sincos+rope2d"])
def test_a_wide_dit_on_a_square_input_is_the_square_dit_bit_exact(pos):
    """The same weights at 8 x 12 and 8 x 8: on an 8 x 8 input the wide network computes its grid's tables
    (sin-cos, RoPE), which must be exactly what the square network stored or computes."""
    wide = randomize(DiT.from_config(ModelConfig(**{**TINY, "pos": pos, "input_width": 12}))).eval()
    square = DiT.from_config(ModelConfig(**{**TINY, "pos": pos})).eval()
    square.load_state_dict({k: v for k, v in wide.state_dict().items() if k != "pos_embed"}, strict=False)
    assert wide.input_shape == (4, 8, 12) and wide.pos_embed.shape[1] == 4 * 6
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(3, 4, 8, 8, generator=g), torch.tensor([3.0, 400.0, 999.0]), torch.tensor([0, 4, 10])
    with torch.no_grad():
        torch.testing.assert_close(wide(x, t, y), square(x, t, y), rtol=0, atol=0)
        out = wide(torch.randn(3, 4, 8, 12, generator=g), t, y)
    assert out.shape == (3, 8, 8, 12)


def test_centre_crop_to_any_aspect_ratio():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (40, 90, 3), dtype=np.uint8))
    assert center_crop_hw(img, 16, 16).tobytes() == center_crop_arr(img, 16).tobytes()  # square: ADM's, to the bit
    assert center_crop_hw(img, 16, 24).size == (24, 16) and center_crop_hw(img, 24, 16).size == (16, 24)
    # A horizontal ramp cropped to a wide window keeps its centre: the middle column is mid-grey.
    ramp = Image.fromarray(np.tile(np.linspace(0, 255, 200).astype(np.uint8)[None, :, None], (50, 1, 3)))
    mid = np.asarray(center_crop_hw(ramp, 16, 32))[:, 16, 0]
    assert abs(float(mid.mean()) - 127.5) < 6


def test_a_16x24_model_trains_resumes_exactly_and_samples(tmp_path, capsys):
    data = flat_folder(tmp_path / "wide", n=10, size=(30, 44))
    full = check_exact_resume(tmp_path, "--data", data, "--image-size", "16x24", "--num-workers", 0)
    ckpt = load_weights(str(full / "export.safetensors"))
    assert (ckpt.config.input_size, ckpt.config.input_width) == (16, 24)
    assert (ckpt.meta["image_size"], ckpt.meta["image_width"]) == (16, 24)
    npz = tmp_path / "s.npz"
    assert run_cli(sample.main, ["--ckpt", str(full), "--num-samples", "2", "--npz", str(npz), "--steps", "2",
                                 "--no-progress", "--device", "cpu"]) == 0
    assert np.load(npz)["arr_0"].shape == (2, 16, 24, 3)
    # Another size where the position table extends (DiT's sin-cos): 24 x 32, and square 16 x 16.
    for size, shape in ((["24", "32"], (24, 32)), (["16x16"], (16, 16))):
        out = tmp_path / f"{shape[0]}x{shape[1]}.npz"
        assert run_cli(sample.main, ["--ckpt", str(full), "--num-samples", "2", "--npz", str(out), "--steps", "2",
                                     "--image-size", *size, "--no-progress", "--device", "cpu"]) == 0
        assert np.load(out)["arr_0"].shape == (2, *shape, 3)
    # The trained size said again is the trained size: the same samples as without --image-size.
    again = tmp_path / "again.npz"
    assert run_cli(sample.main, ["--ckpt", str(full), "--num-samples", "2", "--npz", str(again), "--steps", "2",
                                 "--image-size", "16", "24", "--no-progress", "--device", "cpu"]) == 0
    assert np.array_equal(np.load(again)["arr_0"], np.load(npz)["arr_0"])
    line = refused(capsys, sample.main, ["--ckpt", full, "--num-samples", "1", "--image-size", "18x24",
                                         "--out", tmp_path / "never.png", "--device", "cpu"])
    assert "not divisible by patch size 4" in line and not (tmp_path / "never.png").exists()


def test_sizes_that_cannot_be_drawn_are_refused(tmp_path, capsys):
    data = flat_folder(tmp_path / "flat", n=2)
    base = ["--model", "DiT-S/4", "--results-dir", tmp_path / "runs", "--run-name", "x", "--max-steps", 1, "--no-progress"]
    for extra, match in (
        (["--data", "shapes", "--image-size", "16x24"], "the built-in shapes are square"),
        (["--data", data, "--image-size", "16x24", "--arch", "diffussm", "--model", "DiffuSSM-S/2"], "takes square inputs only"),
        (["--data", data, "--image-size", "16", "24", "32"], "--image-size takes H, HxW or H W"),
        (["--data", data, "--image-size", "16x"], "expected a size"),
    ):
        assert match in refused(capsys, train.main, [*base, *extra])
        assert not (tmp_path / "runs" / "x").exists()
    # A network whose positions do not extend (DiffuSSM's) samples its trained size only.
    from dit.networks.diffussm import DiffuSSM, DiffuSSMConfig

    net = DiffuSSM(DiffuSSMConfig(input_size=8, patch_size=1, in_channels=3, hidden_size=32, depth=2, state_size=16,
                                  hourglass=2, num_classes=10))
    path = tmp_path / "ssm.safetensors"
    save_export(path, net, arch="diffussm", image_size=8, vae="none")
    line = refused(capsys, sample.main, ["--ckpt", path, "--classes", "1", "--image-size", "16", "--out",
                                         tmp_path / "never.png", "--device", "cpu"])
    assert "takes the 8x8 it was trained on" in line and not (tmp_path / "never.png").exists()
    load_model(str(path))  # and at its own size it loads


def test_a_wide_model_does_not_export_to_diffusers():
    from dit.errors import UserError
    from dit.io.diffusers_transformer import check_exportable

    with pytest.raises(UserError, match="8x12 .*DiTTransformer2DModel is square"):
        check_exportable(ModelConfig(**{**TINY, "input_width": 12}))


def test_a_square_config_writes_the_dict_it_wrote_before_the_width_existed():
    """Square models keep their export headers byte for byte (the CPU demo's export sha256 is recorded in
    RESULTS.md): input_width appears in the dict only where it is set."""
    square, wide = ModelConfig(**TINY), ModelConfig(**{**TINY, "input_width": 12})
    assert "input_width" not in square.to_dict() and wide.to_dict()["input_width"] == 12
    assert ModelConfig.from_dict(square.to_dict()) == square and ModelConfig.from_dict(wide.to_dict()) == wide
