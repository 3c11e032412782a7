"""Training configuration: typed fields by section, named presets, flat overrides with type checks.

    python train.py                      # the CPU demo on the built-in shapes (PRESETS["cpu-demo"])
    python train.py xl2-256 --data /imagenet/train --global-batch-size 256
    python train.py --arch diffussm      # another architecture (or --process) on the CPU demo

Sections. `TrainConfig` below holds the common fields: what is trained, the network's size, the data,
the optimisation, checkpoints and logging. Each architecture and process declares the fields only it
reads beside its registration (`Architecture(section=...)`, `Process.section`: DiT's block options in
dit/networks/dit_config.py, the flow process's in dit/processes/flow.py, a plugin's in its own
module); dit/training/sections.py gathers them into one table. A config reads them all alike
(`config.lr`, `config.schedule`, `config.frames`), every one is a flag, `to_dict()` is the flat dict of
all of them, and a field of a section that neither --arch nor --process declares is refused unless at
its default ("--frames is a setting of the video-dit architecture: add --arch video-dit").

Precedence, lowest first:
    1. the preset (`PRESETS`; train_classifier.py and train_vq.py have their own);
    2. over a CPU preset (`CPU_PRESETS`), when --arch picks another architecture than the preset's,
       its `cpu_defaults`, then, when --process picks another process, that process's `cpu_defaults`:
       what the preset lacks for them to train on the built-in data (`--arch video-dit`: the
       built-in clips; `--process vq-diffusion`: the tokenizer train_vq.py writes);
    3. the recipe (`--recipe`, RECIPES);
    4. the flags.
The resolved config is printed at start, saved as `config.json` in the run directory and inside every
checkpoint, and compared on resume (`RESUME_MAY_CHANGE` lists what may differ).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dit.autoencoders.vae import DEFAULT_VAE
from dit.errors import UserError
from dit.networks import DEFAULT_ARCH, get_architecture
from dit.networks.text_config import CPU_DEFAULTS as _TEXT_DEFAULTS
from dit.networks.video_config import CPU_DEFAULTS as _VIDEO_DEFAULTS, SHAPES_VIDEO
from dit.precision import ALIASES, PRECISIONS
from dit.processes import DEFAULT_PROCESS, get_process
from dit.processes.vq_diffusion import TOKENIZER_CPU as VQ_TOKENIZER_CPU, VQDiffusion
from dit.sampling import check_sampler, default_sampler
from dit.training.recipes import RECIPES  # HOW a network is trained (--recipe); flags.py and setup.py read it here
from dit.training.sections import check_sections, coerce, field_table, refuse_foreign

SHAPES = "shapes"  # `data` value of the built-in procedural dataset (dit/data/shapes.py)
DISTRIBUTED = ("ddp", "fsdp")
LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass(frozen=True, init=False, eq=False, repr=False)
class TrainConfig:
    """The common fields; the registered sections' fields are read as attributes too (module docstring).
    Built from keywords, any field of either kind: TrainConfig(data="x", schedule="cosine")."""

    # --- what is trained: registry keys (dit/networks/catalog.py, dit/processes/catalog.py) ---
    arch: str = DEFAULT_ARCH
    process: str = DEFAULT_PROCESS

    # --- model size (DiT Table 1's names, optionally resized; each architecture reads its own --model names) ---
    model: str = "DiT-XL/2"
    hidden_size: int | None = None  # None: the preset's
    depth: int | None = None
    num_heads: int | None = None
    learn_sigma: bool | None = None  # None: as the process prefers (gaussian: learned-range variance + hybrid loss, as the paper; flow: no)
    class_dropout_prob: float = 0.1  # label dropout for classifier-free guidance (DiT §4); 1: unconditional

    # --- data ---
    data: str = SHAPES  # "shapes", "shapes-video", an ImageFolder root (clip folders for video), or a latent cache
    unconditional: bool = False  # drop the data's labels: a model of the null class only (a flat folder is so anyway)
    image_size: int = 256  # the height, and the width unless image_width is set (--image-size H W sets both)
    image_width: int = 0  # 0: square images (image_size x image_size)
    buckets: str = ""  # aspect-ratio buckets of an image folder: "auto", or sizes "HxW,HxW" (dit/data/buckets.py)
    # A Hugging Face dataset as --data (dit/data/hf.py): its split and columns, as diffusers' scripts name them.
    dataset_split: str = "train"
    image_column: str = "image"
    label_column: str = ""  # "": the label column where there is one, else unlabelled (unconditional)
    caption_column: str = ""
    vae: str = DEFAULT_VAE  # ema, mse, none (pixel space), a hub id or a local diffusers directory
    latent_norm: str = "scalar"  # scalar (the VAE's scale only) or channel: per-channel mean/std of a latent cache
    shapes_images: int = 20000  # size of the built-in dataset (images, or clips for shapes-video)
    shapes_speed: float = 1.0  # shapes-video: the motion, a multiple of 0.3-0.6 px a frame at 16 px
    flip: bool = True  # random horizontal flip, the paper's only augmentation
    num_workers: int = 4

    # --- optimisation (DiT §4: AdamW, lr 1e-4 constant, no weight decay, batch 256, EMA 0.9999) ---
    global_batch_size: int = 256
    grad_accum: int = 1  # micro-batches per optimizer step (per-process micro-batch = global / (processes * accum))
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # constant (the paper), cosine or linear (decay to 0 at max_steps: short runs; ADM's classifier)
    grad_clip: float = 0.0  # 0: off, as the paper
    ema_decay: float = 0.9999
    ema_warmup: bool = False  # decay min(ema_decay, (1 + step) / (10 + step)): short runs forget the init sooner
    max_steps: int = 400_000
    mixed_precision: str = "no"  # no, bf16, fp16
    grad_checkpointing: bool = False
    compile: bool = False  # torch.compile the blocks; a failure is an error ...
    compile_best_effort: bool = False  # ... unless this is set: then run eagerly and say so
    distributed: str = "ddp"  # ddp or fsdp (sharded parameters, for the large presets)
    seed: int = 0
    dist_timeout_min: int = 30  # a collective stuck this long (a dead or hung process) ends the job

    # --- checkpoints, logging, previews ---
    results_dir: str = "results"
    run_name: str = ""  # default: the preset name; re-running the same command resumes
    ckpt_every: int = 50_000
    keep_last: int = 2  # full training checkpoints kept (0: all)
    log_every: int = 100
    sample_every: int = 0  # preview grid every N steps (0: only at the end)
    sample_steps: int = 50  # preview sampler steps
    sampling_steps: int = 0  # recorded in checkpoints: sample.py's / evaluate.py's --steps default (0: the process's)
    sample_sampler: str = ""  # "": the process's preview sampler, else its default (gaussian: ddim, flow: euler)
    sample_cfg: float = 4.0
    samples_per_class: int = 1  # preview grid rows = classes shown, columns = samples each
    max_nonfinite: int = 10  # consecutive non-finite losses / gradients before the run stops
    wandb: bool = False
    wandb_project: str = "dit"
    wandb_mode: str = "offline"  # offline by default: nothing needs a network

    def __init__(self, **values):
        table = field_table(TrainConfig)
        unknown = sorted(set(values) - set(table))
        if unknown:
            raise UserError(f"unknown training options {unknown}; see `python train.py --help`")
        flat = {name: coerce(f, values.get(name, f.default)) for name, f in table.items()}
        for f in dataclasses.fields(TrainConfig):
            object.__setattr__(self, f.name, flat.pop(f.name))
        object.__setattr__(self, "_sections", flat)  # the sections' fields, by name
        self._check()

    def __getattr__(self, name: str):
        """A section's field (called only for names that are not common fields)."""
        sections = self.__dict__.get("_sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"TrainConfig has no field {name!r} (registered sections: dit/training/sections.py)")

    @property
    def image_hw(self) -> tuple[int, int]:
        """(height, width) of the training images."""
        return self.image_size, self.image_width or self.image_size

    def _check(self) -> None:
        object.__setattr__(self, "mixed_precision", ALIASES.get(self.mixed_precision, self.mixed_precision))
        positive = ["image_size", "shapes_images", "global_batch_size", "grad_accum", "max_steps",
                    "ckpt_every", "log_every", "sample_steps", "samples_per_class", "max_nonfinite", "dist_timeout_min"]
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{_flag(name)} must be positive, got {getattr(self, name)}")
        if self.image_width == self.image_size:  # a square size said twice is the square size
            object.__setattr__(self, "image_width", 0)
        for name in ("num_workers", "warmup_steps", "keep_last", "sample_every", "weight_decay", "grad_clip",
                     "image_width", "sampling_steps"):
            if getattr(self, name) < 0:
                raise UserError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.sample_cfg < 0:
            raise UserError(f"--sample-cfg must be >= 0 (1 = no guidance), got {self.sample_cfg}")
        for name, choices in (("mixed_precision", PRECISIONS), ("distributed", DISTRIBUTED),
                              ("lr_schedule", LR_SCHEDULES),
                              ("wandb_mode", ("offline", "online", "disabled"))):
            if getattr(self, name) not in choices:
                raise UserError(f"--{_flag(name)} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        process = get_process(self.process)
        if self.learn_sigma is None:
            object.__setattr__(self, "learn_sigma", process.learns_variance)
        values = self.to_dict()
        refuse_foreign(values, field_table(TrainConfig), self.arch, self.process)  # another system's settings
        check_sections(values, self.arch, self.process)  # this run's sections check their own fields
        self._check_data()
        if not self.sample_sampler:
            object.__setattr__(self, "sample_sampler", process.preview_sampler or default_sampler(self.process))
        # Unknown keys, a preview sampler the process lacks or a step count it cannot take fail here, before any work.
        check_sampler(self.make_process(), self.sample_sampler, self.sample_steps)
        arch = get_architecture(self.arch)
        if process.reads_span and not arch.takes_span:
            raise UserError(f"--process {self.process} feeds its network a second time (the span); the {self.arch} "
                            "architecture reads none: use --arch dit")
        if arch.check_run is not None:
            arch.check_run(self)  # the network's flags (e.g. hidden size vs heads), before any data is read

    def _check_data(self) -> None:
        """What the data stream reads of the video section (dit/data/): the frames of a clip, the masks."""
        from dit.data.video_masks import unconditional_share

        if (self.frame_stride != 1 or not self.random_offset) and self.data == SHAPES_VIDEO:
            raise UserError(f"--frame-stride {self.frame_stride} / --random-offset {str(self.random_offset).lower()} "
                            "choose the frames of a video folder's clips; shapes-video renders its clips frame by "
                            "frame: pass --frame-stride 1 --random-offset true, or --data DIR")
        if self.shapes_speed != 1 and (self.data != SHAPES_VIDEO or not self.shapes_speed > 0):
            raise UserError(f"--shapes-speed {self.shapes_speed}: a positive multiple of the built-in moving shapes' "
                            f"speed, for --data {SHAPES_VIDEO} only")
        unconditional_share(self.video_masks)  # a UserError for an unknown mix or share

    def network_config(self, data: dict):
        """The network of this run once the data is known: `data` holds in_channels, input_size,
        num_classes, image_size and downsample (the autoencoder's factor)."""
        span = get_process(self.process).reads_span  # a second timestep embedder (MeanFlow, shortcut models)
        return get_architecture(self.arch).config_for_run(self, {**data, "span": span})

    def make_process(self):
        return get_process(self.process).from_run(self)

    def to_dict(self) -> dict:
        """Every field, flat: the common ones, then each registered section's (config.json, checkpoints)."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)}, **self._sections}

    def replace(self, **overrides) -> TrainConfig:
        if "process" in overrides:  # what follows from the process is resolved again, unless given
            overrides = {"learn_sigma": None, "sample_sampler": "", **overrides}
        return TrainConfig(**{**self.to_dict(), **overrides})

    def __eq__(self, other) -> bool:
        return isinstance(other, TrainConfig) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().items()))

    def __repr__(self) -> str:
        return f"TrainConfig({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


def field_default(name: str):
    """A training field's default (a common field's or a registered section's)."""
    return field_table(TrainConfig)[name].default


def field_types() -> dict[str, type]:
    """Field name -> the plain type a flag parses to (int, float, bool, str), sections' fields included."""
    return {name: f.kind for name, f in field_table(TrainConfig).items()}


# Fields a resumed run may change: they affect bookkeeping, not what is being trained.
RESUME_MAY_CHANGE = {
    "max_steps", "ckpt_every", "keep_last", "log_every", "sample_every", "sample_steps", "sample_sampler",
    "sampling_steps", "sample_cfg", "samples_per_class", "num_workers", "wandb", "wandb_project", "wandb_mode", "results_dir",
    "max_nonfinite", "compile", "compile_best_effort", "grad_checkpointing", "dist_timeout_min",
    "init_from",  # only a fresh run reads it (recorded resolved: `cpu-demo-flow-ln` -> results/cpu-demo-flow-ln)
}

_CPU_DEMO = dict(
    # A DiT-S/2-shaped network at width 128 and depth 4 (1.3M parameters) in pixel space on the
    # built-in shapes at 16 px (64 tokens): ~13 steps/s of 16 images on two CPU cores. On a
    # budget of minutes, many small steps and a decaying learning rate learn the most (measured:
    # benchmarks/RESULTS.md, "CPU demo").
    model="DiT-S/2", hidden_size=128, depth=4, num_heads=2, data=SHAPES, shapes_images=10000, image_size=16,
    vae="none", global_batch_size=16, lr=2e-3, warmup_steps=100, lr_schedule="cosine", ema_decay=0.999,
    ema_warmup=True, max_steps=5000, num_workers=0, ckpt_every=1000, log_every=100, sample_every=0,
    sample_steps=50, samples_per_class=4, sample_cfg=3.0,
)
_VIDEO_CPU = dict(
    # The CPU demo's network (width 128, depth 4 spatial + 4 temporal blocks, patch 2) over 8-frame clips
    # of the moving shapes at 16 px in pixel space (512 tokens a clip), trained as the time-to-quality
    # winner (recipe flow-ln: rectified flow, logit-normal t; `--recipe dit` restores DiT's eps recipe,
    # whose clips are still speckles at this budget), batch 4 for 4,500 steps (~20 min alone on 2 cores).
    # One model for both jobs, chosen by issue 33's curve (benchmarks/RESULTS.md, "Video: one preset";
    # 200 clips: class accuracy 0.67, direction agreement 0.45, centroid error 0.5 px below copying):
    # - the shapes move twice the data's default (0.6-1.2 px a frame; --shapes-speed 1 restores it): at
    #   0.3-0.6 px a 16 px clip's motion is sub-pixel, and issue 15's preset predicted at chance;
    # - half the clips with nothing given (class-conditional generation), half with frames 0-3 given
    #   (prediction): VDT's wider mix at the same share generated worse (class accuracy 0.40 against 0.46);
    # - the spatial blocks and embedders start from the flow-ln image demo (Latte's init), the run that
    #   `python train.py cpu-demo --recipe flow-ln` (about 6 minutes) leaves in --results-dir;
    #   `--init-from none` trains from scratch.
    _CPU_DEMO, arch="video-dit", **_VIDEO_DEFAULTS, frames=8, global_batch_size=4, max_steps=4500,
    ckpt_every=500, log_every=250, process="flow", time_sampling="logit-normal", shapes_speed=2.0,
    video_masks="prediction:0.5", init_from="cpu-demo-flow-ln",
)
# VQ-Diffusion's token space on the CPU: the built-in shapes at 16 px through the vq-cpu tokenizer
# (train_vq.py's default run, results/vq-cpu: VQ-T/2, 8x8 ids of K = 128; --vae names another: the
# vq-diffusion process's cpu_defaults) and a TokenDiT at the CPU demo's size (width 128, depth 4, 2
# heads). K is read from the tokenizer. Measured: benchmarks/vq_diffusion/vq_diffusion.py.
_VQ_DIFFUSION_CPU = dict(
    _CPU_DEMO, arch="token-dit", process="vq-diffusion", model="TokenDiT-CPU", hidden_size=None, depth=None,
    num_heads=None, **VQDiffusion.cpu_defaults, global_batch_size=32, lr=1e-3, warmup_steps=100, max_steps=4000,
    sample_steps=50, sample_cfg=3.0,
)
# The text DiT on the captioned scenes (issue 35; benchmarks/RESULTS.md, "Text to image"): 32 px in pixel space,
# 4 x 4 patches, width 128, depth 4, a 2-block text encoder over 16 word tokens, the CPU demo's optimisation and
# rectified flow with t ~ logit-normal(-1.5, 1): drawn towards noise, where a scene's layout is decided (centred
# at 0 the models ignored the position words), 8,000 steps (~10 min alone on 2 cores). The pooled caption
# (adaLN-Zero): over 3 seeds neither cross-attention nor joint attention followed the prompts resolvably better at
# this budget, and its step is the cheapest; `--conditioning joint --depth 3` or `cross-attention` trains another.
_TEXT_CPU = dict(
    _CPU_DEMO, arch="text-dit", **_TEXT_DEFAULTS, conditioning="adaln-zero", text_length=16, shapes_images=20_000,
    max_steps=8000, process="flow", time_sampling="logit-normal", logit_mean=-1.5,
)
_IMAGENET = dict(data="", image_size=256, vae=DEFAULT_VAE, num_workers=8, ckpt_every=50_000, log_every=100)
PRESETS: dict[str, dict] = {
    "cpu-demo": _CPU_DEMO,
    "video-cpu": _VIDEO_CPU,
    "vq-diffusion-cpu": _VQ_DIFFUSION_CPU,
    "text-cpu": _TEXT_CPU,
    # Latte's class-conditional setting (UCF101, 16 frames 3 apart at 256 px through the SD VAE: its
    # ucf101_train.yaml's frame_interval 3), any --model; `--init-from DiT-XL-2-256x256` starts the
    # spatial blocks from the image model.
    "video-256": dict(_IMAGENET, arch="video-dit", model="DiT-XL/2", frames=16, frame_stride=3, max_steps=400_000),
    # DiT §4 / Table 4: the scaling study, any --model, 400K steps.
    "imagenet-256": dict(_IMAGENET, model="DiT-XL/2", max_steps=400_000),
    # DiT Table 2: DiT-XL/2 on ImageNet 256, 7M steps (FID 2.27 with cfg 1.5).
    "xl2-256": dict(_IMAGENET, model="DiT-XL/2", max_steps=7_000_000),
    # DiT Table 3: DiT-XL/2 on ImageNet 512, 3M steps.
    "xl2-512": dict(_IMAGENET, model="DiT-XL/2", image_size=512, max_steps=3_000_000),
}
DEFAULT_PRESET = "cpu-demo"

# Presets of train_classifier.py: noise-aware classifiers for guidance, with ADM's optimisation
# (AdamW 3e-4, weight decay 0.05, linear decay to 0, flips) and no label dropout (labels are targets).
_CLASSIFIER = dict(arch="noisy-classifier", lr=3e-4, weight_decay=0.05, lr_schedule="linear", class_dropout_prob=0.0,
                   warmup_steps=0, ema_decay=0.9999)
CLASSIFIER_PRESETS: dict[str, dict] = {
    # The cpu-demo's data (shapes, 16 px, pixel space) under its Gaussian process; Classifier-T/2 (width
    # 128, depth 4): about 1,500 steps of 32 images in minutes on two cores.
    "classifier-cpu": {**_CPU_DEMO, **_CLASSIFIER, **dict(
        model="Classifier-T/2", hidden_size=None, depth=None, num_heads=None, global_batch_size=32, max_steps=1500,
        ckpt_every=500, ema_decay=0.999, ema_warmup=True)},
    # ImageNet 256 latents (a cache from cache_latents.py), ADM's classifier size (~50M parameters).
    "classifier-256": {**_IMAGENET, **_CLASSIFIER, **dict(
        model="Classifier-ADM/2", global_batch_size=256, max_steps=300_000, ckpt_every=20_000)},
}
DEFAULT_CLASSIFIER_PRESET = "classifier-cpu"

# Presets of train_vq.py: VQ tokenizers (dit/networks/vq_tokenizer.py) on pixels, trained with the
# VQ-VAE loss, k-means codebook init and dead-code restarts (dit/training/vq_objective.py). The export
# is the raw weights (ema_decay 0: the "EMA" is a copy): an average of encoder, codebook and decoder
# over steps in which codes were re-seeded would blend codes the decoder never saw.
_VQ = dict(arch="vq-tokenizer", vae="none", class_dropout_prob=0.0, ema_decay=0.0, ema_warmup=False, weight_decay=0.0,
           commitment=0.25, kmeans_iters=10)
VQ_PRESETS: dict[str, dict] = {
    # The cpu-demo's data (the built-in shapes, 16 px, pixels); VQ-T/2 (0.7M parameters): 8x8 ids of a
    # 128-entry codebook, MSE reconstruction (no perceptual or GAN term: flat shapes at 16 px need none).
    "vq-cpu": {**_CPU_DEMO, **_VQ, **dict(
        model="VQ-T/2", codebook_size=128, hidden_size=None, depth=None, num_heads=None, global_batch_size=16,
        lr=1e-3, warmup_steps=0, lr_schedule="cosine", max_steps=2000, ckpt_every=500, log_every=100,
        restart_every=100)},
    # ImageNet-like images at 256 px (an image folder: the tokenizer encodes pixels, never a latent cache):
    # VQ-B/16, taming's VQGAN f16 encoder/decoder, 16x16 ids of K = 1024 (VQ-Diffusion's ImageNet
    # tokenizer keeps 2,886 codes: --codebook-size 2886). Settings only, not run here; without a
    # perceptual and a GAN term (VQGAN's) reconstructions at 256 px are blurry.
    "vq-256": {**_IMAGENET, **_VQ, **dict(
        model="VQ-B/16", codebook_size=1024, vae="none", global_batch_size=64, lr=2e-4, warmup_steps=1000,
        lr_schedule="constant", max_steps=300_000, ckpt_every=10_000, restart_every=1000)},
}
DEFAULT_VQ_PRESET = "vq-cpu"

# The scripts' default presets: sized for the CPU, so an architecture's or process's cpu_defaults apply over them.
CPU_PRESETS = (DEFAULT_PRESET, DEFAULT_CLASSIFIER_PRESET, DEFAULT_VQ_PRESET)
assert VQ_TOKENIZER_CPU == f"{TrainConfig.results_dir}/{DEFAULT_VQ_PRESET}", "train_vq.py's default run moved"


def from_preset(name: str = DEFAULT_PRESET, recipe: str | None = None, presets: dict | None = None,
                resolve=None, **overrides) -> TrainConfig:
    """The preset's config (from `presets`, default the generators' PRESETS), the cpu_defaults of the
    architecture and process chosen over a CPU preset, a recipe's fields (the run name then says so),
    flags over all (module docstring). `resolve(values) -> values`, if given, sees the merged values
    before they are checked (train.py: what a tokenizer --vae implies)."""
    presets = PRESETS if presets is None else presets
    if name not in presets:
        raise UserError(f"unknown preset '{name}'; choose one of {', '.join(presets)}")
    if recipe is not None and recipe not in RECIPES:
        raise UserError(f"unknown recipe '{recipe}'; choose one of {', '.join(RECIPES)}")
    preset, recipe_values = presets[name], RECIPES.get(recipe, {})
    chosen = {**recipe_values, **overrides}
    systems = system_defaults(preset, chosen) if name in CPU_PRESETS else {}
    values = {**preset, **systems, **chosen}
    default_name = name if recipe is None else f"{name}-{recipe}"
    values.setdefault("run_name", default_name)
    if not values.get("run_name"):
        values["run_name"] = default_name
    if resolve is not None:
        values = resolve(values)
    return TrainConfig(**values)


def system_defaults(preset: dict, chosen: dict) -> dict:
    """The cpu_defaults of the architecture, then of the process, that `chosen` (recipe and flags) picks over
    `preset`: {} for the preset's own (it is sized for them already)."""
    out = {}
    arch, process = chosen.get("arch"), chosen.get("process")
    if arch is not None and arch != preset.get("arch", DEFAULT_ARCH):
        out.update(get_architecture(arch).cpu_defaults)
    if process is not None and process != preset.get("process", DEFAULT_PROCESS):
        out.update(get_process(process).cpu_defaults)
    if {"arch", "process"} & set(out):
        raise ValueError(f"cpu_defaults may not choose the architecture or process (--arch {arch}, --process {process})")
    return out


def _flag(name: str) -> str:
    return name.replace("_", "-")
