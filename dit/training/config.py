"""Training configuration: one typed dataclass, named presets, flat overrides with type checks.

    python train.py                      # the CPU demo on the built-in shapes (PRESETS["cpu-demo"])
    python train.py xl2-256 --data /imagenet/train --global-batch-size 256

Every field is a flag (`--global-batch-size 512`); a preset sets some of them; flags win. The
resolved config is printed at start, saved as `config.json` in the run directory and inside every
checkpoint, and compared on resume (`RESUME_MAY_CHANGE` lists what may differ).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass

from dit.autoencoders.vae import DEFAULT_VAE
from dit.errors import UserError
from dit.networks import ARCHITECTURES, DEFAULT_ARCH, get_architecture
from dit.precision import ALIASES, PRECISIONS
from dit.processes import DEFAULT_PROCESS, PROCESSES, get_process
from dit.processes.schedules import SCHEDULE, TIMESTEPS
from dit.sampling import check_sampler, default_sampler

SHAPES = "shapes"  # `data` value of the built-in procedural dataset (dit/data/shapes.py)
SHAPES_VIDEO = "shapes-video"  # the same shapes in motion, clips for --arch video-dit (dit/data/shapes_video.py)
DISTRIBUTED = ("ddp", "fsdp")
PREVIEW_SAMPLERS = {"gaussian": "ddim"}  # previews take few steps: DDIM over the registry default (ddpm)


@dataclass(frozen=True)
class TrainConfig:
    # --- what is trained: registry keys (dit/networks/registry.py, dit/processes/registry.py) ---
    arch: str = DEFAULT_ARCH
    process: str = DEFAULT_PROCESS

    # --- model (DiT Table 1 preset, optionally resized for small experiments) ---
    model: str = "DiT-XL/2"
    hidden_size: int | None = None  # None: the preset's
    depth: int | None = None
    num_heads: int | None = None
    conditioning: str = "adaln-zero"
    learn_sigma: bool | None = None  # None: as the process prefers (gaussian: learned-range variance + hybrid loss, as the paper; flow: no)
    class_dropout_prob: float = 0.1  # label dropout for classifier-free guidance (DiT §4); 1: unconditional
    mlp: str = "gelu"  # gelu (DiT) or swiglu (LightningDiT, parameter-matched)
    norm: str = "layernorm"  # layernorm (DiT) or rmsnorm, for every norm of the blocks and final layer
    pos: str = "sincos"  # sincos (DiT's added table), rope2d (rotary on q, k) or sincos+rope2d (LightningDiT)
    qk_norm: bool = False  # per-head RMSNorm of q and k (LightningDiT)

    # --- data ---
    data: str = SHAPES  # "shapes", "shapes-video", an ImageFolder root (clip folders for video), or a latent cache
    image_size: int = 256
    vae: str = DEFAULT_VAE  # ema, mse, none (pixel space), a hub id or a local diffusers directory
    latent_norm: str = "scalar"  # scalar (the VAE's scale only) or channel: per-channel mean/std of a latent cache
    shapes_images: int = 20000  # size of the built-in dataset (images, or clips for shapes-video)
    flip: bool = True  # random horizontal flip, the paper's only augmentation
    num_workers: int = 4

    # --- video (--arch video-dit: dit/networks/video_dit.py, VDT's masks: dit/data/video_masks.py) ---
    frames: int = 8  # frames per clip (the temporal table's length)
    frame_stride: int = 1  # video folders: a clip takes every Nth frame (StyleGAN-V/Latte's subsample factor, UCF101 3)
    random_offset: bool = True  # video folders: each draw starts the clip at a random frame (else at the first)
    factorization: str = "interleaved"  # Latte's variants: interleaved, late-fusion, factorized-attention, split-heads
    temporal: bool = True  # False: no temporal parts (every frame alone; the ablation)
    given_conditioning: str = "replace"  # how given frames reach the network: replace, concat, adaln, cross-attention
    joint_images: int = 0  # Latte+IMG: single same-class frames added to each clip, through the spatial blocks only
    video_masks: str = "vdt"  # vdt: VDT's mix of given-frame and in-painting masks; vdt-uncond[:S]: a share S (0.5) of the clips with nothing given, the rest VDT's; none: nothing given
    init_from: str = ""  # an image DiT checkpoint or export whose weights start the spatial blocks (Latte)

    # --- the noise-aware classifier (--arch noisy-classifier, train_classifier.py) ---
    classifier_pool: str = "query"  # query (a learned query attends over the tokens) or mean-query (ADM's)

    # --- VQ tokens: the tokenizer (--arch vq-tokenizer, train_vq.py) and the vq-diffusion process ---
    codebook_size: int = 0  # K, token ids 0..K-1: the tokenizer's codebook, and the vq-diffusion process's (0: unset)
    codebook_dim: int = 0  # dimension of a codebook vector (0: the --model preset's)
    commitment: float = 0.25  # beta of VQ-VAE's commitment term beta ||z_e - sg[e]||^2 (van den Oord et al. 2017, eq. 3)
    kmeans_iters: int = 10  # Lloyd iterations initialising the codebook on the first batch's encoder outputs (0: random init)
    restart_every: int = 100  # every N training forwards, re-seed dead codes from the batch's encoder outputs (0: never)
    dead_code_threshold: float = 0.1  # dead: usage (EMA of the share of tokens) below this fraction of 1/K
    vq_timesteps: int = 100  # T of the vq-diffusion process (the paper's 100)
    replace_max: float = 0.0  # replace mass K bbar_T (0: the released schedule, pure masking; 0.1: the paper's text)
    aux_weight: float = 5e-4  # lambda of the auxiliary x0 cross-entropy (the released configs)
    vq_time_sampling: str = "uniform"  # uniform or importance (the released code's; depends on batch and process count)

    # --- the Gaussian process ---
    schedule: str = SCHEDULE
    timesteps: int = TIMESTEPS

    # --- the flow process (dit/processes/flow.py; SiT, LightningDiT) ---
    flow_path: str = "linear"  # linear (rectified flow), gvp, vp
    prediction: str = "velocity"  # velocity, noise, score
    time_sampling: str = "uniform"  # uniform or logit-normal (t = sigmoid(m + s n), data at t = 1)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    cosine_loss: float = 0.0  # weight of LightningDiT's cosine velocity loss (0: off)
    flow_time_scale: float = 1.0  # the network sees scale * t (SiT: 1)

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
    sample_sampler: str = ""  # "": the process's default (gaussian: ddim, flow: euler)
    sample_cfg: float = 4.0
    samples_per_class: int = 1  # preview grid rows = classes shown, columns = samples each
    max_nonfinite: int = 10  # consecutive non-finite losses / gradients before the run stops
    wandb: bool = False
    wandb_project: str = "dit"
    wandb_mode: str = "offline"  # offline by default: nothing needs a network

    def __post_init__(self):
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        object.__setattr__(self, "mixed_precision", ALIASES.get(self.mixed_precision, self.mixed_precision))
        positive = ["image_size", "shapes_images", "timesteps", "global_batch_size", "grad_accum", "max_steps",
                    "ckpt_every", "log_every", "sample_steps", "samples_per_class", "max_nonfinite", "dist_timeout_min"]
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{_flag(name)} must be positive, got {getattr(self, name)}")
        for name in ("num_workers", "warmup_steps", "keep_last", "sample_every", "weight_decay", "grad_clip"):
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
        for key in PROCESSES.keys():
            changed = [f for f in get_process(key).run_fields if getattr(self, f) != _DEFAULTS[f]]
            if key != self.process and changed:
                raise UserError(f"--{_flag(changed[0])} is a setting of the {key} process: add --process {key}")
        for key in ARCHITECTURES.keys():
            changed = [f for f in get_architecture(key).run_fields if getattr(self, f) != _DEFAULTS[f]]
            if key != self.arch and changed:
                raise UserError(f"--{_flag(changed[0])} is a setting of the {key} architecture: add --arch {key}")
        if self.frames < 1 or self.frame_stride < 1:
            raise UserError(f"--frames and --frame-stride must be positive, got {self.frames} and {self.frame_stride}")
        if (self.frame_stride != 1 or not self.random_offset) and self.data == SHAPES_VIDEO:
            raise UserError(f"--frame-stride {self.frame_stride} / --random-offset {str(self.random_offset).lower()} "
                            "choose the frames of a video folder's clips; shapes-video renders its clips frame by "
                            "frame: pass --frame-stride 1 --random-offset true, or --data DIR")
        if self.joint_images < 0:
            raise UserError(f"--joint-images must be >= 0, got {self.joint_images}")
        if self.joint_images and (self.given_conditioning != "replace" or self.factorization == "split-heads"):
            raise UserError("--joint-images: the images pass the spatial blocks only, which --factorization split-heads "
                            "and --given-conditioning concat, adaln and cross-attention (each shows them the clip) do "
                            "not separate; use --given-conditioning replace and another factorization")
        from dit.data.video_masks import unconditional_share
        unconditional_share(self.video_masks)  # a UserError for an unknown mix or share
        if not self.sample_sampler:
            object.__setattr__(self, "sample_sampler", PREVIEW_SAMPLERS.get(self.process) or default_sampler(self.process))
        # Unknown keys, a preview sampler the process lacks or a step count it cannot take fail here, before any work.
        check_sampler(self.make_process(), self.sample_sampler, self.sample_steps)
        arch = get_architecture(self.arch)
        if arch.check_run is not None:
            arch.check_run(self)  # the network's flags (e.g. hidden size vs heads), before any data is read

    def network_config(self, data: dict):
        """The network of this run once the data is known: `data` holds in_channels, input_size,
        num_classes, image_size and downsample (the autoencoder's factor)."""
        return get_architecture(self.arch).config_for_run(self, data)

    def make_process(self):
        return get_process(self.process).from_run(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **overrides) -> TrainConfig:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise UserError(f"unknown training options {unknown}; see `python train.py --help`")
        if "process" in overrides:  # what follows from the process is resolved again, unless given
            overrides = {"learn_sigma": None, "sample_sampler": "", **overrides}
        return dataclasses.replace(self, **overrides)


LR_SCHEDULES = ("constant", "cosine", "linear")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

# Fields a resumed run may change: they affect bookkeeping, not what is being trained.
RESUME_MAY_CHANGE = {
    "max_steps", "ckpt_every", "keep_last", "log_every", "sample_every", "sample_steps", "sample_sampler",
    "sample_cfg", "samples_per_class", "num_workers", "wandb", "wandb_project", "wandb_mode", "results_dir",
    "max_nonfinite", "compile", "compile_best_effort", "grad_checkpointing", "dist_timeout_min",
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
    # The CPU demo's network (width 128, depth 4 spatial + 4 temporal blocks, patch 2) over 8-frame
    # clips of the moving shapes at 16 px in pixel space: 512 tokens a clip. Measured alone on the
    # 2-core machine: 3.87 steps/s of 4 clips (1.24 of 16), so 4,500 steps with the cosine schedule
    # ending there take about 20 minutes; batch 16 for 1,500 steps, the same time, did no better.
    # Masks: three clips in four with nothing given, the rest VDT's mix (vdt-uncond:0.75). At this
    # budget one model cannot have both: VDT's own mix (~16% of clips with nothing given) starves
    # class-conditional generation (per-frame class accuracy 0.12 against 0.36) and this one leaves
    # prediction at chance (direction agreement 0.22 against VDT's 0.39; chance 0.25). The preset
    # keeps generation, what the demo shows (benchmarks/RESULTS.md, "Video"); --video-masks vdt for
    # prediction.
    # Trained as the time-to-quality winner (recipe flow-ln: rectified flow, logit-normal t), not
    # DiT's eps recipe: on this budget the eps model's x0 estimate at high noise is still noise, and
    # its clips (800 steps, unconditional masks, DDIM-50, cfg 3) are scattered speckles of the class
    # colour where the flow model's, same budget, Euler-50, are moving blobs. `--recipe dit` restores it.
    _CPU_DEMO, arch="video-dit", data=SHAPES_VIDEO, frames=8, samples_per_class=1, global_batch_size=4, max_steps=4500,
    ckpt_every=500, log_every=250, process="flow", time_sampling="logit-normal", video_masks="vdt-uncond:0.75",
)
# VQ-Diffusion's token space on the CPU: the built-in shapes at 16 px through the vq-cpu tokenizer
# (train_vq.py's default run, results/vq-cpu: VQ-T/2, 8x8 ids of K = 128; --vae names another) and a
# TokenDiT at the CPU demo's size (width 128, depth 4, 2 heads). K is read from the tokenizer.
# Measured: benchmarks/vq_diffusion.py.
VQ_TOKENIZER_CPU = "results/vq-cpu"
_VQ_DIFFUSION_CPU = dict(
    _CPU_DEMO, arch="token-dit", process="vq-diffusion", model="TokenDiT-CPU", hidden_size=None, depth=None,
    num_heads=None, vae=VQ_TOKENIZER_CPU, global_batch_size=32, lr=1e-3, warmup_steps=100, max_steps=4000,
    sample_steps=50, sample_cfg=3.0,
)
_IMAGENET = dict(data="", image_size=256, vae=DEFAULT_VAE, num_workers=8, ckpt_every=50_000, log_every=100)
PRESETS: dict[str, dict] = {
    "cpu-demo": _CPU_DEMO,
    "video-cpu": _VIDEO_CPU,
    "vq-diffusion-cpu": _VQ_DIFFUSION_CPU,
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

# Recipes: HOW a network is trained (process, time sampling, loss, block options), orthogonal to a
# preset's model, data and schedule; `--recipe NAME` sets all of these fields, flags still win. They
# are the cumulative steps of LightningDiT's ablation, measured side by side by
# benchmarks/time_to_quality.py (benchmarks/RESULTS.md, "Time to quality").
_RECIPE_FIELDS = dict(process="gaussian", learn_sigma=None, time_sampling="uniform", cosine_loss=0.0, mlp="gelu",
                      norm="layernorm", pos="sincos", grad_clip=0.0)
RECIPES: dict[str, dict] = {
    "dit": _RECIPE_FIELDS,  # DiT: Gaussian diffusion, eps + learned sigma, hybrid loss, uniform t
    "sit": dict(_RECIPE_FIELDS, process="flow"),  # SiT: rectified flow (linear path, velocity), uniform t
    "flow-ln": dict(_RECIPE_FIELDS, process="flow", time_sampling="logit-normal"),  # + logit-normal t
    # + the cosine velocity loss, with LightningDiT's gradient clipping at norm 1 (its configs' max_grad_norm):
    # the cosine's gradient at the zero-initialised output is ~1/eps, and unclipped it ruins AdamW's second moment
    "flow-ln-cos": dict(_RECIPE_FIELDS, process="flow", time_sampling="logit-normal", cosine_loss=1.0, grad_clip=1.0),
    "lightningdit": dict(_RECIPE_FIELDS, process="flow", time_sampling="logit-normal", cosine_loss=1.0, grad_clip=1.0,
                         mlp="swiglu", norm="rmsnorm", pos="rope2d"),  # + SwiGLU, RMSNorm, 2-D RoPE
}


def from_preset(name: str = DEFAULT_PRESET, recipe: str | None = None, presets: dict | None = None,
                resolve=None, **overrides) -> TrainConfig:
    """The preset's config (from `presets`, default the generators' PRESETS), with a recipe's fields
    over it (its run name then says so), flags over both. `resolve(values) -> values`, if given,
    sees the merged values before they are checked (train.py: what a tokenizer --vae implies)."""
    presets = PRESETS if presets is None else presets
    if name not in presets:
        raise UserError(f"unknown preset '{name}'; choose one of {', '.join(presets)}")
    if recipe is not None and recipe not in RECIPES:
        raise UserError(f"unknown recipe '{recipe}'; choose one of {', '.join(RECIPES)}")
    values = {**presets[name], **RECIPES.get(recipe, {}), **overrides}
    default_name = name if recipe is None else f"{name}-{recipe}"
    values.setdefault("run_name", default_name)
    if not values.get("run_name"):
        values["run_name"] = default_name
    if resolve is not None:
        values = resolve(values)
    return TrainConfig().replace(**values)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def field_types() -> dict[str, type]:
    """Field name -> the plain type a flag parses to (int, float, bool, str)."""
    out = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        out[name] = args[0] if args else hint
    return out


def _coerce(name: str, value, hint):
    """Check one field's value against its annotation; ints are accepted for floats."""
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    if value is None and optional:
        return None
    want = field_types()[name]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise UserError(f"--{_flag(name)} must be of type {want.__name__}, got {value!r}")
    return value
