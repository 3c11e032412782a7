"""Fréchet Video Distance (Unterthiner et al. 2019) with StyleGAN-V's protocol (Skorokhodov et al. 2022).

FVD is the Fréchet distance (dit/eval/metrics.py `frechet_distance`) between Gaussian fits of I3D
features of real and generated clips. I3D (Carreira & Zisserman 2017, "Quo Vadis, Action
Recognition?") is Inception-v1 (GoogLeNet, Szegedy et al. 2015) inflated to 3-D and trained on
Kinetics-400; `I3D` below is written from the two papers. StyleGAN-V's FVD2048_16f, the number most
video-generation papers report, fixes:
- 16 consecutive frames per clip (`num_frames`), every `subsample_factor`-th frame of the video;
- 2,048 real and 2,048 generated clips (`clip_count`);
- every frame resized (bilinear) to 224 x 224 and scaled from [0, 255] to [-1, 1];
- as features, the 400 Kinetics logits before the softmax ("raw features before the softmax layer",
  as the TF-hub I3D that the original FVD used returns them). `features="pool"` gives the 1,024-d
  average pool that feeds them instead: a different number, recorded as such.

Numbers differ between papers through settings people do not report, so `fvd` records the ones
that change the number in its result: the real split, the subsample factor, the clip count, the
process count (in multi-process implementations such as StyleGAN-V's, which random real clips are
drawn can depend on it), the frame count, resolution, feature kind, the sha256 of the weights and
BatchNorm's epsilon (see I3D). Here the clips are the first `clip_count` given, from their first
frame: the caller chooses them, and the number does not depend on how the work is split.

Weights: nothing is downloaded. `load_i3d` reads a local state dict in the layout of pytorch_i3d
(the `i3d_pretrained_400.pt` of VideoGPT, TATS and DIGAN: module names Conv3d_1a_7x7 ... Mixed_5c,
logits, which `I3D` reproduces) as safetensors or with torch.load(weights_only=True), after checking
its sha256. StyleGAN-V's own `i3d_torchscript.pt` is a TorchScript archive (code runs when it is
loaded) and is refused. Note (StyleGAN-V's source): the TF-hub weights differ from the originally
released ones, so FVDs from different weight files may differ; the sha256 in the result says which.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dit.digest import sha256_of
from dit.errors import UserError
from dit.eval.metrics import feature_statistics, frechet_distance

# sha256 of the I3D weight file everybody uses. None: no source available offline lists one, so
# none is enforced and the result records the hash of whatever was loaded.
EXPECTED_SHA256: str | None = None
NUM_CLASSES = 400  # Kinetics-400
POOL_DIM = 1024


@dataclasses.dataclass(frozen=True)
class FVDSettings:
    """Everything that changes an FVD. The defaults are StyleGAN-V's FVD2048_16f."""

    num_frames: int = 16
    clip_count: int = 2048  # real clips and generated clips, each
    subsample_factor: int = 1  # use every k-th frame (applied to real and generated clips alike)
    real_split: str = "train"  # which real clips the caller passed (recorded: cannot be checked here)
    num_processes: int = 1  # how many processes the caller split the work over (recorded)
    resolution: int = 224
    features: str = "logits"  # "logits" (400, the protocol's) or "pool" (1024)

    def __post_init__(self):
        if self.features not in ("logits", "pool"):
            raise UserError(f"FVD features must be 'logits' (the protocol's) or 'pool', got {self.features!r}")
        for name in ("num_frames", "clip_count", "subsample_factor", "num_processes", "resolution"):
            if getattr(self, name) < 1:
                raise UserError(f"FVD setting {name} must be >= 1, got {getattr(self, name)}")
        if self.clip_count < 2:
            raise UserError("FVD needs clip_count >= 2 to estimate a covariance (the protocol uses 2048)")


# --- the network ---------------------------------------------------------------------------------


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding of one axis (I3D was trained in TF): output ceil(size / stride), the extra
    pixel, if odd, at the end."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Unit3D(nn.Module):
    """Conv3d with TF 'SAME' padding, then BatchNorm and ReLU; the logits layer has a bias and
    neither norm nor activation."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), logits: bool = False,
                 bn_eps: float = 1e-3):  # fmt: skip
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=logits)
        self.bn = None if logits else nn.BatchNorm3d(cout, eps=bn_eps, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = [_same_padding(s, k, st) for s, k, st in zip(x.shape[2:], self.kernel, self.stride)]
        x = self.conv3d(F.pad(x, [p for pair in reversed(pads) for p in pair]))  # F.pad wants W first
        return x if self.bn is None else F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
    """Max pooling with TF 'SAME' padding; zeros pad, which is exact after a ReLU (inputs >= 0)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = [_same_padding(s, k, st) for s, k, st in zip(x.shape[2:], self.kernel, self.stride)]
        return F.max_pool3d(F.pad(x, [p for pair in reversed(pads) for p in pair]), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Inception-v1's module inflated: four branches concatenated on channels,
    1x1x1 | 1x1x1 -> 3x3x3 | 1x1x1 -> 3x3x3 | 3x3x3 max pool -> 1x1x1
    (the 5x5 branch of 2-D Inception-v1 is 3x3x3 in I3D). `widths` = (b0, b1a, b1b, b2a, b2b, b3b)."""

    def __init__(self, cin: int, widths: tuple[int, ...], bn_eps: float = 1e-3):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(cin, w0, bn_eps=bn_eps)
        self.b1a, self.b1b = Unit3D(cin, w1a, bn_eps=bn_eps), Unit3D(w1a, w1b, (3, 3, 3), bn_eps=bn_eps)
        self.b2a, self.b2b = Unit3D(cin, w2a, bn_eps=bn_eps), Unit3D(w2a, w2b, (3, 3, 3), bn_eps=bn_eps)
        self.b3a, self.b3b = MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, w3b, bn_eps=bn_eps)
        self.out_channels = w0 + w1b + w2b + w3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# Inception-v1's module widths (Szegedy et al. 2015, Table 1), unchanged by the inflation.
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}  # fmt: skip


class I3D(nn.Module):
    """Inflated Inception-v1 for RGB clips (B, 3, T, H, W) in [-1, 1] -> {"pool" (B, 1024), "logits" (B, 400)}.

    Carreira & Zisserman 2017, §2.4 and Fig. 3: the 7x7x7 stem conv strides 2 in time too; the first
    two max pools are 1x3x3 (no temporal pooling early, "to preserve motion at fine time scales"),
    then 3x3x3 and 2x2x2 pools with temporal stride 2; every conv is followed by BatchNorm and
    ReLU. The final 2x7x7 average pool of the 16 x 224 x 224 protocol input covers the whole 2 x 7 x 7
    map, so it is written as a global mean (also defined for the small inputs of tests), followed
    by a 1x1x1 conv to the 400 logits. Module names follow pytorch_i3d's state dicts.

    bn_eps: BatchNorm's epsilon, 1e-3 in the TF original the weights were trained with; the copy of
    pytorch_i3d in VideoGPT (and TATS, DIGAN) runs the same weights with PyTorch's 1e-5, which moves
    their FVDs a little. It is recorded with every FVD.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, bn_eps: float = 1e-3):
        super().__init__()
        self.bn_eps = bn_eps
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        cin = 192
        for name, widths in MIXED.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            block = InceptionBlock(cin, widths, bn_eps)
            setattr(self, name, block)
            cin = block.out_channels
        self.logits = Unit3D(POOL_DIM, num_classes, logits=True)
        self.weights_sha256: str | None = None  # set by load_i3d

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for name, module in self.named_children():
            if name == "logits":
                break
            x = module(x)  # children in definition order: the stem, then pools and Mixed blocks
        pool = x.mean(dim=(2, 3, 4), keepdim=True)  # (B, 1024, 1, 1, 1)
        return {"pool": pool.flatten(1), "logits": self.logits(pool).flatten(1)}


# --- weights -------------------------------------------------------------------------------------


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:  # TorchScript archives carry their code; state dicts do not
        return any("/code/" in name for name in z.namelist())


def load_i3d(path: str | os.PathLike, sha256: str | None = EXPECTED_SHA256, device: str | torch.device = "cpu",
             bn_eps: float = 1e-3) -> I3D:  # fmt: skip
    """The Kinetics-400 I3D from a local state dict (.safetensors, or a torch file read with
    weights_only=True), checked against `sha256` when one is given; eval mode, with the file's
    hash in `.weights_sha256`. Every problem is a UserError naming the fix. bn_eps: see I3D."""
    path = Path(path)
    source = ("the pytorch_i3d Kinetics-400 state dict i3d_pretrained_400.pt (used by VideoGPT, TATS, DIGAN)"
              " or a safetensors copy of it")  # fmt: skip
    if not path.is_file():
        raise UserError(f"I3D weights {path} not found: put {source} there (nothing is downloaded) and pass its path")
    digest = sha256_of(path)
    if sha256 is not None and digest != sha256.lower():
        raise UserError(f"{path} has sha256 {digest}, expected {sha256}: the file is damaged or another network; "
                        f"fetch {source} again, or pass the sha256 of the file you mean to use")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        if zipfile.is_zipfile(path) and _is_torchscript(path):
            raise UserError(f"{path} is a TorchScript archive (like StyleGAN-V's i3d_torchscript.pt), which runs "
                            f"code when loaded; pass {source} instead")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - refused objects or a damaged file: either way unusable
            raise UserError(f"{path} is not a plain state dict ({type(e).__name__}); pass {source}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict; pass {source}")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    net = I3D(bn_eps=bn_eps)
    expected = net.state_dict()
    # BatchNorm's step counter is not used in eval mode and files saved by old PyTorch lack it.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise UserError(f"{path} is not an I3D state dict of the pytorch_i3d layout (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}); pass {source}")
    net.load_state_dict(state, strict=False)  # only num_batches_tracked can be absent (checked above)
    net.weights_sha256 = digest
    return net.to(device).eval()


# --- the protocol --------------------------------------------------------------------------------


def i3d_inputs(clips_uint8: np.ndarray | torch.Tensor, settings: FVDSettings) -> torch.Tensor:
    """uint8 clips (N, F, H, W, 3) -> float (N, 3, num_frames, R, R) in [-1, 1]: frames 0, k, 2k, ...
    (k = subsample_factor), each resized bilinearly (half-pixel centres, no antialiasing) to R x R
    (R = resolution) and scaled x / 127.5 - 1."""
    x = torch.as_tensor(np.ascontiguousarray(clips_uint8))
    need = (settings.num_frames - 1) * settings.subsample_factor + 1
    if x.dtype != torch.uint8 or x.ndim != 5 or x.shape[-1] != 3:
        raise UserError(f"FVD takes uint8 clips (N, F, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    if x.shape[1] < need:
        raise UserError(f"clips have {x.shape[1]} frames; {settings.num_frames} frames every "
                        f"{settings.subsample_factor} need {need}: give longer clips or change num_frames")
    x = x[:, : need : settings.subsample_factor]  # (N, T, H, W, 3)
    n, t, h, w, _ = x.shape
    frames = x.reshape(n * t, h, w, 3).permute(0, 3, 1, 2).float()
    if (h, w) != (settings.resolution, settings.resolution):
        frames = F.interpolate(frames, size=(settings.resolution,) * 2, mode="bilinear", align_corners=False)
    frames = frames.div(127.5).sub(1)
    return frames.view(n, t, 3, settings.resolution, settings.resolution).permute(0, 2, 1, 3, 4)


@torch.no_grad()
def i3d_features(clips_uint8: np.ndarray, net: I3D, settings: FVDSettings = FVDSettings(),
                 batch_size: int = 8) -> np.ndarray:  # fmt: skip
    """(N, 400) logits (or (N, 1024) pool features) float64 of uint8 clips (N, F, H, W, 3)."""
    device = next(net.parameters()).device
    net.eval()
    out = []
    for i in range(0, len(clips_uint8), batch_size):
        x = i3d_inputs(clips_uint8[i : i + batch_size], settings).to(device)
        out.append(net(x)[settings.features].double().cpu())
    return torch.cat(out).numpy()


def fvd(real_clips: np.ndarray, fake_clips: np.ndarray, net: I3D, settings: FVDSettings = FVDSettings(),
        batch_size: int = 8) -> dict:  # fmt: skip
    """FVD between the first settings.clip_count real and generated uint8 clips (N, F, H, W, 3):
    {"fvd": float, "settings": everything that changes the number (JSON-ready)}."""
    for what, clips in (("real", real_clips), ("generated", fake_clips)):
        if len(clips) < settings.clip_count:
            raise UserError(f"FVD takes {settings.clip_count} {what} clips (StyleGAN-V's protocol: 2048) but got "
                            f"{len(clips)}: give more clips, or set clip_count={len(clips)}, which changes the "
                            f"number (it is recorded)")
    real = i3d_features(real_clips[: settings.clip_count], net, settings, batch_size)
    fake = i3d_features(fake_clips[: settings.clip_count], net, settings, batch_size)
    value = frechet_distance(*feature_statistics(fake), *feature_statistics(real))
    record = dataclasses.asdict(settings)
    record.update(num_real=len(real), num_fake=len(fake), feature_dim=real.shape[1],
                  clip_selection="the first clip_count clips, frames 0, k, 2k, ... of each",
                  resize="bilinear per frame, half-pixel centres, no antialiasing; x / 127.5 - 1",
                  weights_sha256=getattr(net, "weights_sha256", None), bn_eps=getattr(net, "bn_eps", None))  # fmt: skip
    return {"fvd": value, "settings": record}
