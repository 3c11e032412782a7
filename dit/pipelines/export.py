"""Export a DiT as a diffusers DiTPipeline directory (export_diffusers.py): transformer, scheduler, VAE.

Exporting and reading back (dit/io/diffusers_pipeline.py) are inverse: the same weights
(dit/io/diffusers_transformer.py keeps what diffusers' config cannot say), the same betas, the same
VAE, so `sample.py --ckpt PIPELINE` draws the images of the checkpoint it was exported from.
"""

from __future__ import annotations

import shutil

from dit.io.atomic import atomic_path
from dit.io.diffusers_transformer import check_exportable, config_to_diffusers, to_diffusers
from dit.networks.conditioning import IMAGENET_CLASSES, reads_only_null
from dit.sampling.schedulers import make_scheduler

# DiTPipeline.__call__ guides with `class_null = [1000] * batch` whatever the model: the exported
# label table always has 1001 rows, row 1000 being the model's null class.
PIPELINE_NULL_LABEL = IMAGENET_CLASSES


UNCONDITIONAL_NOTE = ("the model is unconditional: every row of the exported label table is its null row, so "
                      "DiTPipeline's class_labels select nothing (any labels give the same samples for the same "
                      "seeds) and guidance_scale has nothing to guide towards (pass guidance_scale=1: the same "
                      "samples at half the work)")


def save_diffusers_pipeline(model, vae, diffusion, out, class_names: list[str] | None = None) -> None:
    """Write a diffusers `DiTPipeline` directory: DiTTransformer2DModel + DDIM scheduler + the VAE.

    model: our DiT (check_exportable); vae: an autoencoder with a diffusers VAE (`diffusers_vae`: its
    AutoencoderKL is saved as the pipeline's `vae`, scaling_factor included); diffusion: the full
    T-step process, whose betas the scheduler reproduces. The scheduler is our `diffusers-ddim`
    sampler's (trailing spacing: the first step is t = T-1, as in all our samplers), so stock
    DiTPipeline with the same seeds and steps draws our `--sampler diffusers-ddim` samples, up to
    diffusers' timestep frequencies (dit/io/diffusers_transformer.py). Written to a temporary directory and
    renamed: `out` is either complete or absent.
    """
    from diffusers import DiTPipeline, DiTTransformer2DModel

    cfg = model.config
    check_exportable(cfg, pixel_space=vae.diffusers_vae is None)
    transformer = DiTTransformer2DModel(**config_to_diffusers(cfg, table_classes=PIPELINE_NULL_LABEL))
    sd = to_diffusers(model.state_dict(), cfg.depth, cfg.conditioning, table_classes=PIPELINE_NULL_LABEL,
                      unconditional=reads_only_null(cfg.num_classes, cfg.class_dropout_prob))
    transformer.load_state_dict(sd, strict=True)
    scheduler = make_scheduler("diffusers-ddim", diffusion)
    id2label = {i: name for i, name in enumerate(class_names)} if class_names else None
    vae.diffusers_vae.register_to_config(scaling_factor=vae.scale)
    pipe = DiTPipeline(transformer=transformer.eval(), vae=vae.diffusers_vae, scheduler=scheduler, id2label=id2label)
    if id2label:  # DiTPipeline does not record it itself; from_pretrained passes it back from model_index.json
        pipe.register_to_config(id2label={str(k): v for k, v in id2label.items()})
    with atomic_path(out) as tmp:
        try:
            pipe.save_pretrained(str(tmp), safe_serialization=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # atomic_path only removes files
            raise


def save_text_transformer(model, out) -> str:
    """Write a text DiT as diffusers' own transformer (dit/io/text_transformers.py: PixArt's for cross-attention,
    SD3's for joint) in out/transformer, with what makes its caption features beside it: the trainable text
    encoder's weights (out/text_encoder.safetensors, its config and tokenizer vocabulary in the metadata), or,
    for a frozen one, its directory and sha256 in out/text_encoder.json. Atomic like the pipeline. Returns
    the class name."""
    import json

    from safetensors.torch import save_file

    from dit.io.text_transformers import build_diffusers

    transformer = build_diffusers(model)  # refuses what does not map, before anything is written
    cfg = model.config
    record = {"text_dit_config": cfg.to_dict(), "features": "encoder_hidden_states = the text encoder's features "
              "(B, S, W), zero at padding; SD3's pooled_projections = their mean over the real tokens"}
    with atomic_path(out) as tmp:
        try:
            tmp.mkdir(parents=True)
            transformer.save_pretrained(str(tmp / "transformer"), safe_serialization=True)
            if model.text_encoder is not None:
                sd = {k: v.detach().cpu().contiguous() for k, v in model.text_encoder.state_dict().items()}
                save_file(sd, str(tmp / "text_encoder.safetensors"), metadata={"config": json.dumps(cfg.to_dict())})
            (tmp / "text_encoder.json").write_text(json.dumps(record, indent=1))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return type(transformer).__name__
