"""What decides sample i: the checkpoint and its overrides (`Source`) and the drawing settings (`SamplingSpec`).

Sample i is drawn from seed `spec.seed + i` with its label (or prompt, or given clip), by the network
of `source`, with the sampler, steps, options and guidance of `spec`. Two records are derived from
these two objects and nothing else, so they cannot disagree:
- `shard_settings`: what an evaluation shard (dit/io/shards.py) records; a rerun keeps a shard only if
  its record equals the current one. Its keys and values are those sample.py wrote before pipelines
  existed (flags under their dest names, unset ones as null; classifier, truncation, frames and
  tokenizer keys only when used), so shards written then still resume.
- `provenance`: what evaluate.py prints beside its metrics.
Outputs (where files go, batch size, device, progress, compilation) change how samples are computed
or stored, not which samples: they are not here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

# The sampler keywords a user can set (sample.py's flags of the same names); each sampler declares
# which of them it takes (dit/sampling/catalog.py check_sampler).
SAMPLER_OPTIONS = ("eta", "shift", "atol", "rtol", "diffusion_form", "diffusion_norm", "last_step", "truncation")
LABEL_MODES = ("uniform", "balanced")  # --labels: uniform draws (the ADM/DiT protocol) or each class equally often


@dataclass(frozen=True)
class Source:
    """A checkpoint and what the user says about it (None: what the checkpoint records)."""

    ckpt: str
    arch: str | None = None
    process: str | None = None
    model: str | None = None  # a DiT preset that rebuilds a file without a config (public .pt)
    image_size: int | None = None  # the height (sample.py --image-size H [W])
    num_classes: int | None = None
    vae: str | None = None
    image_width: int | None = None  # None: as the height (square), or the checkpoint's where no size is given


@dataclass(frozen=True)
class SamplingSpec:
    """How samples are drawn. `sampler`/`steps` None mean the process's defaults until `resolve` fills
    them; `options` holds only the sampler keywords the user set (the others keep the sampler's defaults)."""

    sampler: str | None = None
    steps: int | None = None
    options: dict = field(default_factory=dict)
    cfg_scale: float = 1.0
    cfg_channels: int | None = None
    guidance_interval: tuple[float, float] | None = None
    classifier: str | None = None  # a train_classifier.py run (ADM classifier guidance)
    classifier_scale: float | None = None
    classifier_form: str = "auto"
    seed: int = 0
    precision: str = "no"
    # What is drawn: a grid of classes, an evaluation batch, completions of given clips, or prompts.
    classes: tuple[int, ...] | None = None
    num_samples: int | None = None
    labels: str = "uniform"
    frames: int | None = None  # video: clips shorter than the checkpoint's F (None: its F)
    video_in: str | None = None
    given_frames: str | None = None
    inpaint_box: str | None = None
    prompts: tuple[str, ...] | None = None

    def replace(self, **changes) -> "SamplingSpec":
        return dataclasses.replace(self, **changes)

    def seeds(self, indices) -> list[int]:
        return [self.seed + int(i) for i in indices]

    @property
    def truncation(self) -> float | None:
        return self.options.get("truncation")


def _json(value) -> dict:
    return json.loads(json.dumps(value))  # tuples -> lists, as a shard's record reads back


def shard_settings(source: Source, spec: SamplingSpec, checkpoint_sha256: str, classifier_sha256: str | None = None,
                   tokenizer_sha256: str | None = None) -> dict:
    """The record of an evaluation shard: the checkpoint's bytes and every setting that decides its samples.

    `spec` must be resolved (sampler and steps filled in). The keys are sample.py's flag names of the
    first shard format; keys added later (classifier, truncation, frames, tokenizer) appear only when
    used, so shards written before them still match."""
    content = {
        **{k: getattr(source, k) for k in ("arch", "process", "model", "image_size", "num_classes", "vae")},
        **{k: spec.options.get(k) for k in SAMPLER_OPTIONS if k != "truncation"},
        "cfg_scale": spec.cfg_scale, "cfg_channels": spec.cfg_channels,
        "guidance_interval": None if spec.guidance_interval is None else list(spec.guidance_interval),
        "sampler": spec.sampler, "steps": spec.steps, "seed": spec.seed, "precision": spec.precision,
        "num_samples": spec.num_samples, "labels": spec.labels,
        "video_in": spec.video_in, "given_frames": spec.given_frames, "inpaint_box": spec.inpaint_box,
    }
    classifier = {"classifier_sha256": classifier_sha256, "classifier_scale": spec.classifier_scale,
                  "classifier_form": spec.classifier_form} if spec.classifier else {}
    later = {**({} if spec.truncation is None else {"truncation": spec.truncation}),
             **({} if source.image_width is None else {"image_width": source.image_width}),
             **({} if spec.frames is None else {"frames": spec.frames}),
             **({} if tokenizer_sha256 is None else {"tokenizer_sha256": tokenizer_sha256})}
    return _json({"ckpt_sha256": checkpoint_sha256, **classifier, **later, **content})


EMPTY_PROVENANCE = dict.fromkeys((
    "checkpoint", "checkpoint_sha256", "sampler", "sampler_options", "steps", "nfe", "cfg_scale", "cfg_channels",
    "guidance_interval", "eta", "precision", "labels", "seeds", "classifier", "classifier_sha256", "classifier_scale",
    "classifier_form", "tokenizer", "tokenizer_sha256", "frames"))


def provenance(source: Source, spec: SamplingSpec, num_samples: int, checkpoint_sha256: str,
               classifier_sha256: str | None = None, tokenizer: str | Path | None = None,
               tokenizer_sha256: str | None = None, nfe: int | None = None) -> dict:
    """What drew `num_samples` samples, as evaluate.py records it beside its metrics (resolved `spec`)."""
    record = dict(EMPTY_PROVENANCE)
    record.update(checkpoint=source.ckpt, checkpoint_sha256=checkpoint_sha256, sampler=spec.sampler,
                  sampler_options=dict(spec.options), steps=spec.steps, nfe=nfe,
                  tokenizer=None if tokenizer is None else str(tokenizer), tokenizer_sha256=tokenizer_sha256,
                  cfg_scale=spec.cfg_scale, cfg_channels=spec.cfg_channels,
                  guidance_interval=None if spec.guidance_interval is None else list(spec.guidance_interval),
                  eta=spec.options.get("eta"), precision=spec.precision,
                  labels=f"--ref's first {num_samples}" if spec.video_in else spec.labels, frames=spec.frames,
                  seeds=[spec.seed, spec.seed + num_samples - 1])  # sample i used seed first + i
    if spec.classifier:  # classifier guidance (ADM): which classifier, how strong, in which form
        record.update(classifier=spec.classifier, classifier_sha256=classifier_sha256,
                      classifier_scale=spec.classifier_scale, classifier_form=spec.classifier_form)
    return record
