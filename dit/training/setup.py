"""What train.py builds before its loop: the accelerator, the data and autoencoder, the network
config, and the checkpoint to resume from (all of which only read: bad input fails before anything
is written); then the run directory's config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path

from dit.autoencoders import Autoencoder, load_autoencoder, peek_autoencoder
from dit.autoencoders.base import LATENT_NORMS
from dit.dist import check_world, force_cpu
from dit.errors import UserError
from dit.layout import TOKENS
from dit.networks import get_architecture
from dit.networks.conditioning import NO_CLASSES
from dit.networks.base import ImageInit, supports
from dit.training import state as train_state
from dit.training.config import RESUME_MAY_CHANGE, SHAPES, SHAPES_VIDEO, TrainConfig
from dit.training.step import learning_rate


def make_accelerator(config: TrainConfig, cpu: bool):
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    # A collective that waits longer than this (a process died or hangs) fails the job instead of hanging it.
    kwargs = [InitProcessGroupKwargs(timeout=timedelta(minutes=config.dist_timeout_min)),
              DistributedDataParallelKwargs(find_unused_parameters=False)]
    try:
        accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=force_cpu(cpu), kwargs_handlers=kwargs)
    except ValueError as e:  # e.g. fp16 without a GPU
        raise UserError(f"cannot set up --mixed-precision {config.mixed_precision}: {e}") from None
    check_world(accelerator.state)
    return accelerator


@dataclass
class RunData:
    base: object  # a dataset with get(index, rng), num_classes, class_names
    autoencoder: Autoencoder
    shape: tuple[int, ...]  # one training input, (C, H, W) or a clip (F, C, H, W): what the stream and process see
    encode_on_the_fly: bool  # pixels in the stream, encoded through the VAE at every step
    network_config: object  # the architecture's config for this data
    mask: object = None  # rng -> GIVEN mask of one training sample (video mask modelling), or None
    buckets: tuple | None = None  # (bucket of each index, latent shape of each bucket) with --buckets


def check_latent_norm(config: TrainConfig) -> None:
    """--latent-norm's value, checked as soon as the flags are read (before any file is touched)."""
    if config.latent_norm not in LATENT_NORMS:
        raise UserError(f"--latent-norm must be one of {', '.join(LATENT_NORMS)}, got {config.latent_norm!r}")


def build_data(config: TrainConfig, device) -> RunData:
    """The base dataset, the autoencoder, the shape of one training input and the network config, in
    steps: what --data is (and a latent cache's header), the autoencoder, the network's input it gives
    (`network_input`), the network's sizes checked before any image is rendered or scanned, the images,
    and the network config for the classes found."""
    check_latent_norm(config)
    if get_architecture(config.arch).data_kind == "clip":
        return build_clip_data(config, device)
    if config.data == SHAPES_VIDEO:
        raise UserError(f"--data {SHAPES_VIDEO} holds clips, but --arch {config.arch} models images: add --arch "
                        "video-dit (or use --data shapes)")
    if not config.data:
        raise UserError("no --data given: pass an ImageFolder root (<root>/<class>/<image>) or a latent cache "
                        "written by cache_latents.py; `--data shapes` uses the built-in dataset")
    cached, norm = _open_cache(config)
    vae = load_autoencoder(config.vae, device)
    if cached is not None:
        _check_cache(config, cached, vae)
    spec = network_input(config, vae)
    if cached is None:  # a cache knows its classes; the built-in shapes have 10, a folder's are not scanned yet
        probe = config.network_config({**spec, "num_classes": _classes_before_reading(config)})
    sizes = bucket_sizes(config, cached, vae, probe if cached is None else None)
    base, encode_on_the_fly = _images(config, cached, vae, norm, sizes)
    if config.unconditional and base.num_classes:
        from dit.data.stream import Unlabelled

        base = Unlabelled(base)
    shape = tuple(vae.latent_shape(*config.image_hw))  # (C, h, w) latents, (h, w) token ids
    if hasattr(base, "latent_shape") and tuple(base.latent_shape) != shape:
        raise UserError(f"latent cache {config.data} holds latents {base.latent_shape}, but --vae {config.vae} at "
                        f"{config.image_size}px gives {shape}")
    buckets = (base.bucket_of, [vae.latent_shape(h, w) for h, w in sizes]) if sizes else None
    if buckets:  # checked before anything is written
        from dit.data.buckets import batches_per_epoch

        batches_per_epoch(base.bucket_of, config.global_batch_size)
    return RunData(base, vae, shape, encode_on_the_fly, config.network_config({**spec, "num_classes": base.num_classes}),
                   buckets=buckets)


def bucket_sizes(config: TrainConfig, cached, vae: Autoencoder, network_config) -> list[tuple[int, int]] | None:
    """--buckets' (height, width) sizes, multiples of the autoencoder's factor x the patch (None without)."""
    from dit.data.buckets import parse_buckets

    if config.buckets and (cached is not None or config.data in (SHAPES, SHAPES_VIDEO)
                           or not get_architecture(config.arch).any_size):
        raise UserError("--buckets needs a folder of images (--data DIR) and an architecture of any size (--arch dit)")
    return parse_buckets(config.buckets, config.image_hw, vae.downsample * network_config.patch_size) \
        if config.buckets else None


def network_input(config: TrainConfig, vae: Autoencoder) -> dict:
    """What the network is sized by (Architecture.config_for_run's `data`, less the classes): channels and
    side of the autoencoder's output at --image-size, the image size, its factor, and K for token ids."""
    tokens = vae.data_kind == TOKENS  # x0 is a grid of ids (train.py checked arch and process)
    wide = {}
    if config.image_width:  # H != W: only an architecture that declares any_size takes it
        if not get_architecture(config.arch).any_size or config.data in (SHAPES, SHAPES_VIDEO):
            what = (f"the built-in {config.data} are square" if config.data in (SHAPES, SHAPES_VIDEO) else
                    f"--arch {config.arch} takes square inputs only")
            raise UserError(f"--image-size {config.image_size}x{config.image_width}: {what}; train a {config.image_size}"
                            f"x{config.image_width} model with --arch dit on a folder of images (--data DIR)")
        wide = {"input_width": vae.latent_size(config.image_width), "image_width": config.image_width}
    return {"in_channels": vae.latent_channels, "input_size": vae.latent_size(config.image_size),
            "image_size": config.image_size, "downsample": vae.downsample, **wide,
            **({"codebook_size": vae.codebook_size} if tokens else {})}


def _classes_before_reading(config: TrainConfig) -> int:
    """The class count known before any data is read: the built-in shapes', else 1 (any will do for sizes)."""
    from dit.data.shapes import CLASS_NAMES

    if config.unconditional:
        return NO_CLASSES
    return len(CLASS_NAMES) if config.data in (SHAPES, SHAPES_VIDEO) else 1


def _open_cache(config: TrainConfig):
    """(the latent cache --data names, its per-channel statistics for --latent-norm channel), or Nones;
    reads headers only."""
    from dit.data.latent_cache import LatentCache, is_cache

    cached = None
    if config.data != SHAPES and is_cache(config.data):
        cached = LatentCache(config.data, flip=config.flip)
        made_with = cached.settings.get("vae")
        if made_with is not None and made_with != config.vae:  # checked before loading a VAE that may be absent
            raise UserError(f"latent cache {config.data} was encoded with --vae {made_with}, but --vae is {config.vae}; "
                            f"pass --vae {made_with} (latents only decode with the VAE that made them)")
    if config.latent_norm != "channel":
        return cached, None
    if cached is None:  # the statistics are measured over a cache: refuse anything else now
        what = "the built-in shapes" if config.data == SHAPES else "an image folder"
        if peek_autoencoder(config.vae).get("identity"):
            what += f" in pixel space (--vae {config.vae})"
        raise UserError(f"--latent-norm channel needs a latent cache with per-channel statistics, but --data "
                        f"{config.data} is {what}; "
                        "write one with `python cache_latents.py --data IMAGES --out CACHE` and pass --data CACHE, "
                        "or use --latent-norm scalar")
    return cached, cached.read_channel_norm()


def _check_cache(config: TrainConfig, cached, vae: Autoencoder) -> None:
    """The cache was written by this autoencoder at this image size, in latent space."""
    recorded = {k: cached.settings.get(k, default) for k, default in (("scale", vae.scale), ("shift", 0.0))}
    if recorded != {"scale": vae.scale, "shift": vae.shift}:
        raise UserError(f"latent cache {config.data} was encoded with scale {recorded['scale']} and shift "
                        f"{recorded['shift']}, but the VAE {config.vae} now has scale {vae.scale} and shift "
                        f"{vae.shift}: it is not the VAE that made the cache; re-encode with cache_latents.py")
    if cached.settings.get("codebook_size") != vae.codebook_size:  # None for both in a cache of latents
        made = (f"token ids of K = {cached.settings.get('codebook_size')}" if cached.tokens else "latents")
        have = f"a tokenizer of K = {vae.codebook_size}" if vae.data_kind == TOKENS else "a VAE"
        raise UserError(f"latent cache {config.data} holds {made}, but --vae {config.vae} is now {have}: it is not "
                        "what made the cache; re-encode with cache_latents.py")
    made = cached.settings["image_size"], cached.settings.get("image_width") or cached.settings["image_size"]
    if made != config.image_hw:
        raise UserError(f"latent cache {config.data} holds {'x'.join(map(str, made))} images but --image-size is "
                        f"{'x'.join(map(str, config.image_hw))}; pass --image-size {'x'.join(map(str, made))}")
    if vae.identity:
        raise UserError(f"--vae {config.vae}, but --data is a latent cache: pass the VAE it was encoded with "
                        "(--vae ema)")


def _images(config: TrainConfig, cached, vae: Autoencoder, norm, buckets=None):
    """(the base dataset, whether its pixels are encoded during training): the cache, the built-in shapes
    (rendered from seed 0, the same on every process, kept on disk for the next run) or an image folder."""
    from dit.data.stream import FolderImages, InMemoryImages

    if cached is not None:
        cached.norm = vae.with_norm(norm).channel_norm  # get() normalises; decoding (previews, checkpoints) inverts
        return cached, False
    if config.data == SHAPES:
        from dit.data.shapes import CLASS_NAMES, cached_uint8

        images, labels = cached_uint8(config.shapes_images, config.image_size, 0, Path(config.results_dir) / ".cache")
        return InMemoryImages(images, labels, config.flip, len(CLASS_NAMES), list(CLASS_NAMES)), not vae.identity
    from dit.data.hf import HFImages, hf_kind, load_hf
    from dit.data.webdataset import ShardImages, shard_paths

    shards = shard_paths(config.data)
    kind = hf_kind(config.data) if shards is None else None
    if (shards or kind) and (config.caption_column or buckets):
        raise UserError("--caption-column: no registered architecture conditions on captions yet" if
                        config.caption_column else "--buckets reads image folders only (a --data DIR of images)")
    cache = Path(config.results_dir) / ".cache"
    if shards:
        return ShardImages(shards, config.image_size, config.image_width or None, config.flip, cache), not vae.identity
    if kind is not None:
        ds = load_hf(config.data, kind, config.dataset_split, str(cache / "hf"))
        return HFImages(ds, config.image_size, config.image_width or None, config.flip, config.image_column,
                        config.label_column, config.caption_column, config.data), not vae.identity
    from dit.data.folders import ImageFolderDataset

    return FolderImages(ImageFolderDataset(config.data, config.image_size, width=config.image_width or None,
                                           buckets=buckets),
                        config.flip), not vae.identity


def build_clip_data(config: TrainConfig, device) -> RunData:
    """build_data for an architecture of clips, in the same steps: the moving shapes or a folder of clips,
    pixels or VAE latents frame by frame, and VDT's training masks (dit/data/video_masks.py)."""
    from functools import partial

    from dit.data.latent_cache import is_cache
    from dit.data.video_masks import draw_mask

    if config.data == SHAPES or not config.data:
        raise UserError(f"--arch {config.arch} trains on clips: pass --data {SHAPES_VIDEO} (the built-in moving "
                        "shapes) or a folder of clips (<root>/<class>/<clip>/<frame>.png or <clip>.mp4)")
    if config.latent_norm == "channel":
        raise UserError("--latent-norm channel needs a latent cache, and clips are encoded during training: "
                        "use --latent-norm scalar")
    if config.data != SHAPES_VIDEO and is_cache(config.data):
        raise UserError(f"--data {config.data} is a latent cache of images; --arch {config.arch} reads a folder "
                        "of clips and encodes its frames during training")
    vae = load_autoencoder(config.vae, device)
    spec = network_input(config, vae)
    config.network_config({**spec, "num_classes": _classes_before_reading(config)})  # before rendering or scanning
    base = _clips(config)
    network_config = config.network_config({**spec, "num_classes": base.num_classes})
    if config.joint_images:
        from dit.data.joint import JointImages

        base = JointImages(base, config.joint_images)
    mask = None
    if config.video_masks != "none":
        mask = partial(draw_mask, frames=config.frames, size=spec["input_size"], patch=network_config.patch_size,
                       images=config.joint_images, mix=config.video_masks)
    shape = (config.frames + config.joint_images, vae.latent_channels, spec["input_size"], spec["input_size"])
    return RunData(base, vae, shape, not vae.identity, network_config, mask)  # shape: what the stream and process see


def _clips(config: TrainConfig):
    """The built-in moving shapes (rendered from seed 0, kept on disk) or a folder of clips."""
    if config.data == SHAPES_VIDEO:
        from dit.data.shapes import CLASS_NAMES
        from dit.data.shapes_video import InMemoryClips, cached_uint8_clips

        clips, labels, _ = cached_uint8_clips(config.shapes_images, config.image_size, config.frames, 0,
                                              Path(config.results_dir) / ".cache")
        return InMemoryClips(clips, labels, config.flip, len(CLASS_NAMES), list(CLASS_NAMES))
    from dit.data.video_folders import VideoFolderDataset

    return VideoFolderDataset(config.data, config.image_size, config.frames, config.frame_stride,
                              config.random_offset, config.flip)


def init_from_image(network, spec: str) -> tuple[int, str]:
    """Latte's init: copy an image DiT's weights (checkpoint, export or run directory) into the
    spatial parts of a video network; the temporal parts stay at their identity init. The class table
    is copied when the class counts agree; otherwise (ImageNet's DiT for UCF101's 101 classes) it keeps
    its fresh init. Returns the number of tensors copied and a note on the class table; a checkpoint
    of another shape is a UserError naming the difference."""
    import torch

    from dit.io.checkpoint import load_weights
    from dit.networks.conditioning import classes_in_table

    keys = network.image_state_dict_keys() if supports(network, ImageInit) else []
    if not keys:
        raise UserError("--init-from: this network has no blocks an image DiT maps onto one for one (split-heads "
                        "mixes space and time in one attention); use another --factorization or drop --init-from")
    ckpt = load_weights(spec)
    if ckpt.arch != network.image_arch:
        raise UserError(f"--init-from {spec} holds a {ckpt.arch!r} network; it must be an image DiT (arch "
                        f"{network.image_arch})")
    own = network.state_dict()
    table, note = "y_embedder.embedding_table.weight", "its class table too"
    if table in keys and table in ckpt.state_dict and ckpt.state_dict[table].shape != own[table].shape:
        keys = [k for k in keys if not k.startswith("y_embedder.")]
        # A bare state dict has no config: the count comes from its table's rows (the null row included).
        there = getattr(ckpt.config, "num_classes", None) or classes_in_table(ckpt.state_dict[table].shape[0])
        note = f"the class table left fresh ({there} classes there, {network.num_classes} here)"
    missing = [k for k in keys if k not in ckpt.state_dict]
    wrong = [k for k in keys if k in ckpt.state_dict and ckpt.state_dict[k].shape != own[k].shape]
    if missing or wrong:
        k = (missing or wrong)[0]
        found = "missing" if missing else f"{tuple(ckpt.state_dict[k].shape)}"
        raise UserError(f"--init-from {spec} does not fit this network: {k} is {found}, the video DiT needs "
                        f"{tuple(own[k].shape)}; pass an image DiT of the same --model, width, depth and channels")
    with torch.no_grad():
        for k in keys:
            own[k].copy_(ckpt.state_dict[k])
    return len(keys), note


def check_results_dir(results_dir: str) -> None:
    """--results-dir is, or can become, a folder: no part of it is an existing file (checked before anything
    is read or written, instead of a NotADirectoryError when the first cache or checkpoint is written)."""
    path = Path(results_dir)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"--results-dir {results_dir}: {p} is a file, not a folder; choose another --results-dir")
            return


def find_resume(config: TrainConfig, run_dir: Path, resume: str | None, accelerator=None) -> Path | None:
    """The checkpoint to continue from: --resume, else the newest one of this run, else None.

    Decided on the main process and broadcast, so every process of a multi-node job resumes the
    same checkpoint even where the nodes' views of a shared file system differ for a moment (or
    refuses with the same message, instead of some processes waiting forever for the others)."""
    if accelerator is None or accelerator.num_processes == 1:
        return _find_resume(config, run_dir, resume)
    from accelerate.utils import broadcast_object_list

    decision = [None, None]  # (path, error message)
    if accelerator.is_main_process:
        try:
            found = _find_resume(config, run_dir, resume)
            decision = [None if found is None else str(found), None]
        except UserError as e:
            decision = [None, str(e)]
    path, error = broadcast_object_list(decision, from_process=0)
    if error is not None:
        raise UserError(error)
    return None if path is None else Path(path)


def _find_resume(config: TrainConfig, run_dir: Path, resume: str | None) -> Path | None:
    if resume:
        path = Path(resume)
        if not path.exists():
            raise UserError(f"--resume {resume} does not exist")
        if not (path / train_state.STATE_FILE).is_file():
            found = train_state.list_checkpoints(path)
            if not found:
                raise UserError(f"--resume {resume} is neither a checkpoint nor a run directory with checkpoints")
            path = found[-1][1]
    else:
        found = train_state.list_checkpoints(run_dir)
        if not found:
            return None
        path = found[-1][1]
    train_state.check_files(path)
    # Checkpoints written before the registry keys (and latent_norm) existed hold the defaults (dit, gaussian, scalar).
    recorded = train_state.read_state(path).get("config", {})
    saved = {"arch": TrainConfig.arch, "process": TrainConfig.process, "latent_norm": TrainConfig.latent_norm,
             **recorded}
    arch = get_architecture(config.arch)
    if saved["arch"] == config.arch and arch.saved_before is not None:
        saved.update(arch.saved_before(recorded))  # fields the run's architecture added since: their values then
    changed = sorted(k for k, v in config.to_dict().items()
                     if k not in RESUME_MAY_CHANGE and k != "run_name" and saved.get(k, v) != v)
    if changed:
        diffs = "; ".join(f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in changed)
        raise UserError(f"checkpoint {path} was trained with other settings ({diffs}); pass the same flags to resume "
                        f"it, or choose a new --run-name to start another run")
    if config.lr_schedule != "constant" and saved.get("max_steps", config.max_steps) != config.max_steps:
        # The cosine and linear schedules decay to 0 at max_steps: another max_steps would make the learning rate jump.
        step = train_state.read_state(path)["step"]
        old, new = (learning_rate(SimpleNamespace(**{**config.to_dict(), "max_steps": m}), step)
                    for m in (saved["max_steps"], config.max_steps))
        raise UserError(f"checkpoint {path} follows a {config.lr_schedule} schedule to --max-steps {saved['max_steps']}; resuming with "
                        f"--max-steps {config.max_steps} would make the learning rate jump from {old:.3g} to {new:.3g} "
                        f"at step {step}. Pass --max-steps {saved['max_steps']}, or start a new --run-name")
    return path


def start_run(run_dir: Path, config: TrainConfig, description: str) -> None:
    """Main process: create the run directory, write config.json (atomically), print the resolved config."""
    from dit.io.atomic import write_json

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", config.to_dict())
    print(f"run {run_dir}: {config.arch} network, {config.process} process; {description}")
    print(json.dumps(config.to_dict()))
