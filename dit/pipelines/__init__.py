"""Pipelines: the layer between the library and the scripts, from a checkpoint to samples.

    spec.py       Source (a checkpoint and its overrides) and SamplingSpec (how samples are drawn): what
                  decides sample i, and the two records derived from them (shard settings, provenance)
    pipeline.py   `load(source, spec, device)`: network, process, autoencoder and guidance classifier,
                  read once, every compatibility check in one place; `Pipeline.generate`
    cli.py        the sampling flags shared by sample.py and evaluate.py, as a Source and a SamplingSpec
    images.py     class-conditional grids and resumable evaluation batches (.npz shards)
    clips.py      completing given clips: prediction, interpolation, in-painting (video checkpoints)
    prompts.py    text prompts through a diffusers VQ-Diffusion pipeline (vq_text.py reads it)
    segment.py    EmerDiff segmentation of images with a trained DiT (segment.py's driver)
    evaluation.py evaluate.py's pieces: the batch to score, the metrics, the record
    export.py     a DiT written as a diffusers DiTPipeline (export_diffusers.py)
    vq_text.py    a diffusers VQ-Diffusion text-to-image pipeline read into our process and sampler

Scripts read top to bottom: parse flags, `load`, call one pipeline, write. The generic pipelines
(pipeline, images, clips, segment, evaluation) know no particular architecture, process or
autoencoder: each declares what they read. The format readers and writers of other projects' pipelines
(vq_text.py: VQ-Diffusion; export.py: DiT + DDPM, what DiTPipeline holds) are specific by nature.
"""

from dit.pipelines.pipeline import Pipeline, load
from dit.pipelines.spec import SamplingSpec, Source

__all__ = ["Pipeline", "SamplingSpec", "Source", "load"]
