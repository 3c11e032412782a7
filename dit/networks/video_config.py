"""The video DiT's configuration: DiT's config (dit_config.py) plus the time axis.

Presets are DiT's names (DiT-S/2 ... DiT-XL/8, Table 1): `depth` counts the spatial blocks, the
image DiT's depth, so an image checkpoint of the same name initialises them one for one. The
temporal parts add to it: interleaved and late fusion one temporal DiT block per spatial block
(Latte's layout, 2 x depth blocks), factorised attention one temporal attention per block, split
heads nothing (half of each block's heads attend over time).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dit.errors import UserError
from dit.networks import dit_config
from dit.networks.dit_config import DiTSection, ModelConfig
from dit.networks.video_given import GIVEN_CONDITIONINGS

# Latte's variants 1-4 (Ma et al. 2024, Fig. 2); "factorized-attention" is also VDT's block.
FACTORIZATIONS = ("interleaved", "late-fusion", "factorized-attention", "split-heads")
DEFAULT_FRAMES = 8
SHAPES_VIDEO = "shapes-video"  # --data of the built-in moving shapes (dit/data/shapes_video.py)


@dataclass(frozen=True)
class VideoSection(DiTSection):
    """The video DiT's training flags (`--arch video-dit`): DiT's block options (it takes adaln-zero and
    sincos only, video_config.VideoConfig says why not), the clips and VDT's masks (dit/networks/video_dit.py,
    dit/data/video_masks.py)."""

    frames: int = DEFAULT_FRAMES  # frames per clip (the temporal table's length)
    frame_stride: int = 1  # video folders: a clip takes every Nth frame (StyleGAN-V/Latte's subsample factor, UCF101 3)
    random_offset: bool = True  # video folders: each draw starts the clip at a random frame (else at the first)
    factorization: str = "interleaved"  # Latte's variants: interleaved, late-fusion, factorized-attention, split-heads
    temporal: bool = True  # False: no temporal parts (every frame alone; the ablation)
    given_conditioning: str = "replace"  # how given frames reach the network: replace, concat, adaln, cross-attention
    joint_images: int = 0  # Latte+IMG: single same-class frames added to each clip, through the spatial blocks only
    # vdt: VDT's mix of given-frame and in-painting masks; vdt-uncond[:S]: a share S (0.5) of the clips with
    # nothing given, the rest VDT's; none: nothing given
    video_masks: str = "vdt"
    given_loss_weight: float = 1.0  # per-task weight: a clip's loss with frames given, against one with none given

    def __post_init__(self):
        if self.frames < 1 or self.frame_stride < 1:
            raise UserError(f"--frames and --frame-stride must be positive, got {self.frames} and {self.frame_stride}")
        if self.joint_images < 0:
            raise UserError(f"--joint-images must be >= 0, got {self.joint_images}")
        if not self.given_loss_weight > 0:
            raise UserError(f"--given-loss-weight must be positive, got {self.given_loss_weight}")
        if self.joint_images and (self.given_conditioning != "replace" or self.factorization == "split-heads"):
            raise UserError("--joint-images: the images pass the spatial blocks only, which --factorization split-heads "
                            "and --given-conditioning concat, adaln and cross-attention (each shows them the clip) do "
                            "not separate; use --given-conditioning replace and another factorization")


# `train.py --arch video-dit` over the CPU demo: the built-in clips, one preview clip per class.
CPU_DEFAULTS = dict(data=SHAPES_VIDEO, samples_per_class=1)


def saved_before(recorded: dict) -> dict:
    """What a run config recorded before --frame-stride and --random-offset existed meant: a folder run
    read every frame of a clip, from the first (the built-in clips are rendered frame by frame)."""
    if "frame_stride" not in recorded and recorded.get("data") != SHAPES_VIDEO:
        return {"frame_stride": 1, "random_offset": False}
    return {}


@dataclass(frozen=True)
class VideoConfig(ModelConfig):
    frames: int = DEFAULT_FRAMES  # the longest clip; the temporal table has this many rows, any F <= it works
    factorization: str = "interleaved"
    # False: no temporal parts at all (each frame is denoised alone by the image DiT): the
    # ablation that shows what the temporal blocks do, and the F = 1 equivalence with an image DiT.
    temporal: bool = True
    # How the clean given frames reach the network (video_given.py): replace (in place, VDT's mask
    # modelling), concat (a context stream along time), adaln (pooled into c), cross-attention.
    # replace is the default as the winner of benchmarks/video_cpu/video_cpu.py's parameter-matched comparison
    # (RESULTS.md, "Video": 0.88 px against 1.27 for concat and ~5 for adaln and cross-attention).
    given_conditioning: str = "replace"

    def __post_init__(self):
        super().__post_init__()
        if self.input_width:
            raise UserError("video networks take square frames (input_width 0); train H x W images with --arch dit")
        if self.frames < 1:
            raise UserError(f"frames must be a positive integer, got {self.frames}")
        if self.factorization not in FACTORIZATIONS:
            raise UserError(f"unknown factorization {self.factorization!r}; choose one of {', '.join(FACTORIZATIONS)}")
        if self.given_conditioning not in GIVEN_CONDITIONINGS:
            raise UserError(f"unknown given conditioning {self.given_conditioning!r}; choose one of "
                            f"{', '.join(GIVEN_CONDITIONINGS)}")
        if self.conditioning != "adaln-zero":
            raise UserError(f"the video DiT conditions through adaLN-Zero only, got conditioning {self.conditioning!r}")
        if self.pos != "sincos":
            raise UserError(f"the video DiT uses the fixed sin-cos tables (pos sincos), got pos {self.pos!r}")
        if self.temporal and self.factorization == "split-heads" and self.num_heads < 2:
            raise UserError("factorization split-heads needs at least 2 heads (half attend over time); raise --num-heads")

    def replace(self, **overrides) -> "VideoConfig":
        return VideoConfig.from_dict({**self.to_dict(), **overrides})


def config_for_run(run, data: dict) -> VideoConfig:
    """The video DiT of a training run: DiT's `--model` preset and resizing (dit_config.config_for_run)
    with the run's --frames, --factorization and --temporal."""
    image = dit_config.config_for_run(run, data)
    return VideoConfig(**image.to_dict(), frames=run.frames, factorization=run.factorization, temporal=run.temporal,
                       given_conditioning=run.given_conditioning)


def check_run(run) -> None:
    patch = int(run.model.rpartition("/")[2]) if run.model in dit_config.MODEL_NAMES else 1
    config_for_run(run, {"in_channels": 3, "input_size": patch, "num_classes": 10})


def describe(cfg: VideoConfig) -> str:
    image = dit_config.describe(ModelConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(ModelConfig)}))
    time = f"{cfg.factorization} space-time" if cfg.temporal else "no temporal blocks"
    return f"video {image}, {cfg.frames} frames, {time}"
