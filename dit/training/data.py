"""The data of a training run (train.py, through dit/training/setup.py): what --data is (a latent cache,
the built-in shapes, a folder, a Hugging Face dataset or WebDataset shards of images, or clips), the
autoencoder, the shape of one training input, aspect-ratio buckets, and the network config for the
classes found. Everything here only reads: bad input fails before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dit.autoencoders import Autoencoder, load_autoencoder, peek_autoencoder
from dit.autoencoders.base import LATENT_NORMS
from dit.errors import UserError
from dit.layout import TOKENS
from dit.networks import get_architecture
from dit.networks.conditioning import NO_CLASSES
from dit.networks.text_config import SHAPES_CAPTIONS
from dit.training.captions import caption_column, caption_settings, check_captions
from dit.training.config import SHAPES, SHAPES_VIDEO, TrainConfig

BUILT_IN = (SHAPES, SHAPES_VIDEO, SHAPES_CAPTIONS)  # the rendered datasets: square, no files


@dataclass
class RunData:
    base: object  # a dataset with get(index, rng), num_classes, class_names
    autoencoder: Autoencoder
    shape: tuple[int, ...]  # one training input, (C, H, W) or a clip (F, C, H, W): what the stream and process see
    encode_on_the_fly: bool  # pixels in the stream, encoded through the VAE at every step
    network_config: object  # the architecture's config for this data
    mask: object = None  # rng -> GIVEN mask of one training sample (video mask modelling), or None
    buckets: tuple | None = None  # (bucket of each index, latent shape of each bucket) with --buckets
    captions: object = None  # a captioned run's vocabulary and preview prompts (dit/training/captions.py), or None


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
    captioned = check_captions(config, cached)
    vae = load_autoencoder(config.vae, device)
    if cached is not None:
        _check_cache(config, cached, vae)
    spec = network_input(config, vae) | ({"text": caption_settings(config).text} if captioned else {})
    if cached is None:  # a cache knows its classes; the built-in shapes have 10, a folder's are not scanned yet
        probe = config.network_config({**spec, "num_classes": _classes_before_reading(config)})
    sizes = bucket_sizes(config, cached, vae, probe if cached is None else None)
    base, encode_on_the_fly = _images(config, cached, vae, norm, sizes)
    captions = caption_settings(config, base) if captioned else None
    if captions:
        spec["text"] = captions.text
    shape = tuple(vae.latent_shape(*config.image_hw))  # (C, h, w) latents, (h, w) token ids
    if cached is not None and tuple(cached.latent_shape) != shape:
        raise UserError(f"latent cache {config.data} holds latents {cached.latent_shape}, but --vae {config.vae} at "
                        f"{config.image_size}px gives {shape}")
    buckets = (base.bucket_of, [vae.latent_shape(h, w) for h, w in sizes]) if sizes else None
    if cached is not None and cached.buckets:  # written with buckets: trained with them
        buckets = (cached.bucket_of, cached.bucket_shapes)
        _check_cache_buckets(config, cached, vae, network_input(config, vae))
    if config.unconditional and base.num_classes:
        from dit.data.stream import Unlabelled

        base = Unlabelled(base)
    if buckets:  # checked before anything is written
        from dit.data.buckets import batches_per_epoch

        batches_per_epoch(base.bucket_of, config.global_batch_size)
    return RunData(base, vae, shape, encode_on_the_fly, config.network_config({**spec, "num_classes": base.num_classes}),
                   buckets=buckets, captions=captions)


def bucket_sizes(config: TrainConfig, cached, vae: Autoencoder, network_config) -> list[tuple[int, int]] | None:
    """--buckets' (height, width) sizes, multiples of the autoencoder's factor x the patch (None without)."""
    from dit.data.buckets import parse_buckets

    if config.buckets and cached is not None:
        raise UserError(f"--buckets: latent cache {config.data}'s buckets were chosen when it was written "
                        "(cache_latents.py --buckets); drop --buckets")
    if (config.buckets or (cached is not None and cached.buckets)) and (
            config.data in BUILT_IN or not get_architecture(config.arch).any_size):
        raise UserError("buckets need images of any size (a folder, a Hugging Face dataset, shards, or a cache written "
                        "with --buckets) and an architecture of any size (--arch dit)")
    return parse_buckets(config.buckets, config.image_hw, vae.downsample * network_config.patch_size) \
        if config.buckets else None


def network_input(config: TrainConfig, vae: Autoencoder) -> dict:
    """What the network is sized by (Architecture.config_for_run's `data`, less the classes): channels and
    side of the autoencoder's output at --image-size, the image size, its factor, and K for token ids."""
    tokens = vae.data_kind == TOKENS  # x0 is a grid of ids (train.py checked arch and process)
    wide = {}
    if config.image_width:  # H != W: only an architecture that declares any_size takes it
        if not get_architecture(config.arch).any_size or config.data in BUILT_IN:
            what = (f"the built-in {config.data} are square" if config.data in BUILT_IN else
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

    if config.unconditional or config.data == SHAPES_CAPTIONS:
        return NO_CLASSES
    return len(CLASS_NAMES) if config.data in (SHAPES, SHAPES_VIDEO) else 1


def _open_cache(config: TrainConfig):
    """(the latent cache --data names, its per-channel statistics for --latent-norm channel), or Nones;
    reads headers only."""
    from dit.data.latent_cache import LatentCache, is_cache

    cached = None
    if config.data not in BUILT_IN and is_cache(config.data):
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
    (rendered from seed 0, the same on every process, kept on disk for the next run), or a source of images
    (a folder, a Hugging Face dataset or shards: dit/data/sources.py)."""
    from dit.data.stream import InMemoryImages

    if cached is not None:
        cached.norm = vae.with_norm(norm).channel_norm  # get() normalises; decoding (previews, checkpoints) inverts
        return cached, False
    if config.data == SHAPES:
        from dit.data.shapes import CLASS_NAMES, cached_uint8

        images, labels = cached_uint8(config.shapes_images, config.image_size, 0, Path(config.results_dir) / ".cache")
        return InMemoryImages(images, labels, config.flip, len(CLASS_NAMES), list(CLASS_NAMES)), not vae.identity
    if config.data == SHAPES_CAPTIONS:
        from dit.data.shapes_captions import cached_dataset

        return cached_dataset(config.shapes_images, config.image_size, 0, Path(config.results_dir) / ".cache"), \
            not vae.identity
    from dit.data.sources import Images, open_source

    source = open_source(config.data, Path(config.results_dir) / ".cache", config.dataset_split, config.image_column,
                         config.label_column, caption_column(config))
    return Images(source, config.image_size, config.image_width or None, config.flip, buckets), not vae.identity


def _check_cache_buckets(config: TrainConfig, cached, vae: Autoencoder, spec: dict) -> None:
    """A bucketed cache's every bucket tiles into whole patches of the network."""
    patch = config.network_config({**spec, "num_classes": cached.num_classes}).patch_size
    bad = [b for b, s in zip(cached.buckets, cached.bucket_shapes) if s[-2] % patch or s[-1] % patch]
    if bad:
        raise UserError(f"latent cache {config.data}'s bucket {bad[0][0]}x{bad[0][1]} is not a multiple of "
                        f"{vae.downsample * patch} (the autoencoder's factor x the patch {patch}) on both sides; "
                        f"re-encode it with cache_latents.py --patch {patch}, or train a smaller patch")


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
                                              Path(config.results_dir) / ".cache", config.shapes_speed)
        return InMemoryClips(clips, labels, config.flip, len(CLASS_NAMES), list(CLASS_NAMES))
    from dit.data.video_folders import VideoFolderDataset

    return VideoFolderDataset(config.data, config.image_size, config.frames, config.frame_stride,
                              config.random_offset, config.flip)


