"""From a checkpoint to a pipeline: the network, its process and autoencoder, read once and checked once.

`load(source, spec, device)` is the one place where a checkpoint meets the user's flags: what the file
holds (a generator, not a classifier or a tokenizer), the keys it records against --arch/--process, the
sampler and its options against the process, the autoencoder against the network's input space (channels,
size, token ids and codebook), a guidance classifier against the model, and the drawing settings against
what the network can draw (clips, frames). Every refusal is one line, before any sampling.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dit.autoencoders import DEFAULT_VAE, ChannelNorm, load_autoencoder
from dit.errors import UserError
from dit.io.checkpoint import Checkpoint, checkpoint_sha256, instantiate, load_model, load_weights
from dit.io.zoo import sha256_of
from dit.layout import AUTOENCODER_OF, DATA_OF, TOKENS, values_of
from dit.networks import CLASSIFIER, DEFAULT_ARCH, TOKENIZER, get_architecture, role_of
from dit.networks.base import ReadsText, supports
from dit.networks.conditioning import IMAGENET_CLASSES, UNLABELLED, is_unconditional
from dit.networks.dit_config import MODEL_NAMES, check_image_size, preset_config
from dit.processes import process_from_meta
from dit.sampling import check_sampler, default_sampler
from dit.sampling.classifier_guidance import check_classifier, resolve_form
from dit.sampling.generate import generate_images
from dit.pipelines.spec import Source, SamplingSpec, provenance, shard_settings

DEFAULT_IMAGE_SIZE, DEFAULT_NUM_CLASSES = 256, IMAGENET_CLASSES  # ImageNet, the paper's setting (--model)


@dataclass
class Pipeline:
    """A generator ready to sample: network, process, autoencoder, the checkpoint they came from,
    and (classifier guidance) the classifier. `generate` draws through dit/sampling/generate.py."""

    network: object
    process: object
    autoencoder: object
    checkpoint: Checkpoint
    source: Source
    classifier: object | None = None
    _hashes: dict = field(default_factory=dict)
    nfe: int | None = None  # network evaluations per sample of the last generate() (a CFG pair counts once)
    shape: tuple[int, ...] | None = None  # one sample at another size than trained (--image-size), else None

    @property
    def meta(self) -> dict:
        return self.checkpoint.meta

    @property
    def is_video(self) -> bool:
        return len(self.network.input_shape) == 4  # (F, C, H, W): dit/layout.py

    @property
    def max_frames(self) -> int | None:
        return self.network.input_shape[0] if self.is_video else None

    def generate(self, spec: SamplingSpec, indices, labels, device, stats=None, given=None, prompts=None) -> np.ndarray:
        """uint8 NHWC images (NFHWC clips) for global sample indices (seeds spec.seed + i) with `labels`, or with
        `prompts` (one per index) for a network that reads text."""
        shape = (spec.frames, *self.network.input_shape[1:]) if spec.frames and given is None else self.shape
        calls = [0]
        # Counted, not looked up: an adaptive solver's NFE depends on the run, and a sampler's own
        # bookkeeping (Heun's extra slope, a multistep solver's warm-up) is the code's, not a table's.
        hook = self.network.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        try:
            images = generate_images(self.network, self.autoencoder, self.process, spec.seeds(indices), labels,
                                     spec.sampler, spec.steps, spec.cfg_scale, spec.cfg_channels,
                                     spec.guidance_interval, 0.0, spec.precision, device, options=spec.options,
                                     stats=stats, given=given, classifier=self.classifier,
                                     classifier_scale=spec.classifier_scale or 0.0,
                                     classifier_form=spec.classifier_form, shape=shape,
                                     text=self.network.encode_text(list(prompts), features=True) if prompts is not None
                                     else None)
        finally:
            hook.remove()
        self.nfe = calls[0]
        return images

    def count_nfe(self, spec: SamplingSpec, device) -> int:
        """Network evaluations per sample under `spec` (one sample drawn when no batch was: all cached)."""
        if self.nfe is None:
            labels = np.zeros(1, dtype=np.int64) if spec.labels != "none" and self.network.num_classes else None
            if spec.prompts:
                self.generate(spec, range(1), [UNLABELLED], device, prompts=spec.prompts[:1])
            else:
                self.generate(spec, range(1), labels, device)
        return self.nfe

    # --- what decided the samples (dit/pipelines/spec.py) ---

    def _sha(self, what: str, compute) -> str:
        if what not in self._hashes:
            self._hashes[what] = compute()
        return self._hashes[what]

    @property
    def tokenizer_file(self) -> str | None:
        """The autoencoder's weights file where it has one of ours (a VQ tokenizer: its bytes decide the
        images too, so its sha256 is recorded); None for pixels and diffusers VAEs (named, not hashed)."""
        return None if self.autoencoder.weights_file is None else str(self.autoencoder.weights_file)

    def _shas(self, spec: SamplingSpec) -> dict:
        tok = self.tokenizer_file
        return dict(checkpoint_sha256=self._sha("ckpt", lambda: checkpoint_sha256(self.source.ckpt)),
                    classifier_sha256=self._sha("classifier", lambda: checkpoint_sha256(spec.classifier))
                    if spec.classifier else None,
                    tokenizer_sha256=self._sha("tokenizer", lambda: sha256_of(Path(tok)))
                    if tok else None)

    def shard_settings(self, spec: SamplingSpec) -> dict:
        return shard_settings(self.source, spec, **self._shas(spec))

    def provenance(self, spec: SamplingSpec, num_samples: int) -> dict:
        return provenance(self.source, spec, num_samples, tokenizer=self.tokenizer_file, nfe=self.nfe, **self._shas(spec))


def _keys(source: Source, ckpt: Checkpoint) -> None:
    """--arch / --process name what a checkpoint that does not say holds; they cannot contradict one that does."""
    for flag in ("arch", "process"):
        given, recorded = getattr(source, flag), ckpt.meta.get(flag)
        if given and recorded and given != recorded:
            raise UserError(f"--{flag} {given}, but {ckpt.source} holds a {recorded!r} {flag}; drop --{flag}")
        if given:
            ckpt.meta[flag] = given


def read_generator(source: Source) -> Checkpoint:
    """The checkpoint of `source`, refused unless it holds a generator."""
    ckpt = load_weights(source.ckpt)
    if role_of(ckpt.arch) == CLASSIFIER:
        raise UserError(f"{source.ckpt} is a noise-aware classifier (train_classifier.py), not a generator: pass it "
                        "as --classifier, and a generator as --ckpt")
    if role_of(ckpt.arch) == TOKENIZER:
        raise UserError(f"{source.ckpt} is a tokenizer (train_vq.py), not a generator: pass it as --vae, and a "
                        "generator trained on its ids (train.py --arch token-dit) as --ckpt")
    _keys(source, ckpt)
    return ckpt


def resolve(spec: SamplingSpec, process, recorded_steps: int | None = None) -> SamplingSpec:
    """The process's default sampler where the user named none, and the steps: the user's, else the
    checkpoint's recorded ones (train.py --sampling-steps), else the process's; checked against the process."""
    spec = spec.replace(steps=spec.steps or recorded_steps or process.default_sampling_steps,
                        sampler=spec.sampler or default_sampler(process.key))
    check_sampler(process, spec.sampler, spec.steps, **spec.options)
    return spec


def load(source: Source, spec: SamplingSpec, device, cfg_given: bool = True) -> tuple[Pipeline, SamplingSpec]:
    """The pipeline of `source` and `spec` resolved against it (default sampler and steps, the classifier
    guidance form, the frame count, no guidance for an unconditional network), every compatibility check
    done. `cfg_given`: spec.cfg_scale was the user's (an unconditional network refuses it unless 1), not a
    default."""
    ckpt = read_generator(source)
    process = process_from_meta(ckpt.meta)
    spec = resolve(spec, process, ckpt.meta.get("sampling_steps"))
    if source.model and ckpt.arch != DEFAULT_ARCH:  # --model names a preset of the architecture old files hold
        raise UserError(f"--model names a DiT preset; {ckpt.source} holds a {ckpt.arch!r} network")
    network = None if source.model else instantiate(ckpt, None, device)  # the file is checked before the VAE is sought
    # The latent space the network was trained in: the VAE, and the per-channel normalisation if it recorded one.
    vae = load_autoencoder(source.vae or ckpt.meta.get("vae") or DEFAULT_VAE, device)
    check_data_kinds(vae, process, ckpt, source)
    vae.with_norm(ChannelNorm.from_meta(ckpt.meta))
    if process.data_kind == TOKENS:
        check_token_space(network, vae, process, ckpt, source, spec)
        return fit(Pipeline(network, process, vae, ckpt, source), spec, cfg_given)
    if source.model:
        image_size = source.image_size or ckpt.meta.get("image_size") or DEFAULT_IMAGE_SIZE
        if source.model in MODEL_NAMES:
            check_image_size(image_size, vae.downsample, int(source.model.rpartition("/")[2]))
        width = source.image_width or (None if source.image_size else ckpt.meta.get("image_width"))
        config = preset_config(source.model, input_size=vae.latent_size(image_size), in_channels=vae.latent_channels,
                               num_classes=source.num_classes or DEFAULT_NUM_CLASSES,
                               input_width=vae.latent_size(width) if width and width != image_size else 0)
        network = instantiate(ckpt, config, device)
    channels = network.input_shape[-3]  # (C, H, W) or (F, C, H, W)
    if vae.latent_channels != channels:
        raise UserError(f"the VAE gives {vae.latent_channels}-channel inputs but the model takes {channels}; check --vae")
    if source.num_classes and source.num_classes != network.num_classes:
        raise UserError(f"--num-classes {source.num_classes} but the checkpoint has {network.num_classes} classes")
    shape = None if source.model else other_size(network, vae, ckpt, source)
    if spec.video_in and ckpt.meta.get("video_masks") == "none":
        print(f"warning: {ckpt.source} was trained with --video-masks none (nothing ever given): it has not "
              "learned to complete clips from given frames", file=sys.stderr)
    classifier = None
    if spec.classifier:  # checked against the model before any sampling
        net, cls_ckpt = load_model(spec.classifier, device=device)
        check_classifier(net, cls_ckpt.meta, network, ckpt.meta, process, spec.classifier)
        spec = spec.replace(classifier_form=resolve_form(spec.classifier_form, spec.sampler))  # recorded as used
        classifier = net.eval().requires_grad_(False)
    return fit(Pipeline(network, process, vae, ckpt, source, classifier, shape=shape), spec, cfg_given)


def other_size(network, vae, ckpt: Checkpoint, source: Source) -> tuple[int, ...] | None:
    """One sample's shape at --image-size H [W] where that is not the size trained (None where it is, or
    none is given): an architecture that declares any_size draws it (its position tables are functions of
    the grid), every other refuses in one line."""
    if not source.image_size:
        return None
    want = (vae.latent_size(source.image_size), vae.latent_size(source.image_width or source.image_size))
    trained = tuple(network.input_shape[-2:])
    if want == trained:
        return None
    size = "x".join(map(str, (source.image_size, source.image_width or source.image_size)))
    if not get_architecture(ckpt.arch).any_size:
        raise UserError(f"--image-size {size} gives a {want[0]}x{want[1]} input, but the checkpoint's {ckpt.arch!r} network "
                        f"takes the {trained[0]}x{trained[1]} it was trained on (its positions do not extend); drop "
                        "--image-size")
    network.config.replace(input_size=want[0], input_width=want[1] if want[1] != want[0] else 0)  # its patch tiles it
    return (network.input_shape[0], *want)


def fit(pipe: Pipeline, spec: SamplingSpec, cfg_given: bool = True) -> tuple[Pipeline, SamplingSpec]:
    """What is drawn against what the network draws: clips to complete need a video network, --frames
    at most its F (the checkpoint's own F is the same as not asking: the same clips and shards); an
    unconditional network draws without labels (unless a classifier guides it) and without guidance, and so
    does a process whose training folded guidance in (a default scale is dropped, a given one refused)."""
    reads_text = supports(pipe.network, ReadsText)
    if reads_text and not spec.prompts:
        raise UserError(f"{pipe.source.ckpt} is a text-to-image model (trained on captions): give --prompt \"...\" or "
                        "--prompts FILE, not classes")
    if spec.prompts and not reads_text:
        raise UserError(f"--prompt: {pipe.source.ckpt} does not read text (a {pipe.checkpoint.arch!r} network); give a "
                        "text-to-image checkpoint (train.py --arch text-dit) or a VQ-Diffusion pipeline, or --classes")
    if is_unconditional(pipe.network.num_classes) and not reads_text:
        if spec.classes and pipe.classifier is None:
            raise UserError(f"{pipe.source.ckpt} is unconditional (trained without classes): drop --classes and give "
                            "--num-samples N (or guide it with --classifier, whose classes --classes then names)")
        if spec.cfg_scale != 1 and cfg_given:
            raise UserError(f"--cfg-scale {spec.cfg_scale:g}: {pipe.source.ckpt} is unconditional, so classifier-free "
                            "guidance has nothing to guide towards; drop --cfg-scale (or pass 1)")
        spec = spec.replace(cfg_scale=1.0)
    refusal = pipe.process.guidance_refusal  # guidance folded into training (MeanFlow's guided target)
    if refusal and spec.cfg_scale != 1:
        if cfg_given:
            raise UserError(f"--cfg-scale {spec.cfg_scale:g}: {refusal}")
        spec = spec.replace(cfg_scale=1.0)
    if spec.video_in and not pipe.is_video:
        raise UserError(f"--video-in needs a video checkpoint; {pipe.source.ckpt} holds an image network")
    if spec.frames and not (pipe.is_video and spec.frames <= pipe.max_frames):
        raise UserError(f"--frames {spec.frames}: " + (f"this checkpoint draws at most {pipe.max_frames} frames"
                        if pipe.is_video else f"{pipe.source.ckpt} holds an image network; drop --frames"))
    return pipe, spec.replace(frames=None) if spec.frames == pipe.max_frames else spec


def check_data_kinds(vae, process, ckpt, source: Source) -> None:
    """The network, its process and the autoencoder model the same kind of data (dit/layout.py:
    continuous latents, or token ids): the autoencoder is the one it was trained with."""
    name = source.vae or ckpt.meta.get("vae")
    arch = values_of(get_architecture(ckpt.arch).data_kind)
    if arch != process.data_kind:
        raise UserError(f"{ckpt.source} holds a {ckpt.arch!r} network of {DATA_OF.get(arch, arch)} with the "
                        f"{process.key} process of {DATA_OF.get(process.data_kind, process.data_kind)}: check --arch "
                        "and --process")
    kind = process.data_kind
    if vae.data_kind != kind:
        ours, theirs = (AUTOENCODER_OF.get(k, f"an autoencoder of {k}") for k in (kind, vae.data_kind))
        raise UserError(f"{ckpt.source} models {DATA_OF.get(kind, kind)} ({ckpt.arch}, {process.key}), but --vae {name} "
                        f"is {theirs} ({DATA_OF.get(vae.data_kind, vae.data_kind)}), so it is not {ours}: pass the one "
                        "it was trained with as --vae (or drop --vae)")


def check_token_space(network, vae, process, ckpt, source: Source, spec: SamplingSpec) -> None:
    """A network of token ids (VQ-Diffusion) with the tokenizer that decodes them: one K for tokenizer,
    network and process, the tokenizer's grid at the image size equal to the network's, and no flag
    made for continuous inputs."""
    name = source.vae or ckpt.meta.get("vae")
    sizes = {"the tokenizer": vae.codebook_size, "the network": network.config.to_dict().get("codebook_size"),
             "the process": process.codebook_size}
    if len(set(sizes.values())) > 1:
        raise UserError(f"codebook sizes disagree ({', '.join(f'{k} K = {v}' for k, v in sizes.items())}): --vae {name} "
                        "is not the tokenizer this checkpoint was trained with")
    image_size = source.image_size or ckpt.meta.get("image_size") or vae.image_size
    grid = tuple(vae.latent_shape(image_size, source.image_width))
    if grid != tuple(network.input_shape):
        raise UserError(f"the tokenizer {name} gives {'x'.join(map(str, grid))} ids at {image_size} px, but the "
                        f"network takes {'x'.join(map(str, network.input_shape))}; check --vae and --image-size")
    if source.num_classes and source.num_classes != network.num_classes:
        raise UserError(f"--num-classes {source.num_classes} but the checkpoint has {network.num_classes} classes")
    used = [flag for flag, v in (("--cfg-channels", spec.cfg_channels), ("--guidance-interval", spec.guidance_interval),
                                 ("--classifier", spec.classifier), ("--video-in", spec.video_in)) if v]
    if used:
        raise UserError(f"{used[0]} does not apply to token ids (the {process.key} process guides log-probabilities "
                        "of all positions at every step)")
