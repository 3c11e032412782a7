"""Convert between our (= the public DiT repo's) state-dict layout and diffusers' DiTTransformer2DModel.

The two hold the same weights arranged differently:
- diffusers keeps a copy of the timestep/class embedder inside every block
  (`transformer_blocks.i.norm1.emb`) and conditions the final layer on block 0's copy;
  DiT shares one `t_embedder` / `y_embedder`. Converting to DiT requires the copies to agree.
- diffusers splits the fused `attn.qkv` into to_q / to_k / to_v.
- diffusers recomputes the frozen sin-cos `pos_embed` instead of storing it.
diffusers' sinusoidal embedding uses `downscale_freq_shift=1` (frequencies over half-1,
not half), so diffusers' pipeline and ours differ slightly in the timestep features even with
identical weights (up to ~2e-2 in the output of a tiny model). A diffusers checkpoint loaded
here behaves as the public DiT code would with the same weights, which is what the official
diffusers conversions (facebook/DiT-XL-2-*) were made from.
"""

from __future__ import annotations

import torch

from dit.networks.dit_config import ModelConfig
from dit.errors import UserError

_BLOCK_MAP = {  # ours -> diffusers, inside blocks.{i}
    "attn.proj": "attn1.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
    "adaLN_modulation.1": "norm1.linear",
}
_TOP_MAP = {
    "x_embedder.proj": "pos_embed.proj",
    "final_layer.adaLN_modulation.1": "proj_out_1",
    "final_layer.linear": "proj_out_2",
}
_EMB_MAP = {
    "t_embedder.mlp.0": "norm1.emb.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "norm1.emb.timestep_embedder.linear_2",
    "y_embedder.embedding_table": "norm1.emb.class_embedder.embedding_table",
}


def config_from_diffusers(cfg: dict) -> ModelConfig:
    """ModelConfig for a diffusers DiTTransformer2DModel / Transformer2DModel config.json."""
    if cfg.get("norm_type", "ada_norm_zero") != "ada_norm_zero" or not cfg.get("num_embeds_ada_norm"):
        raise UserError("this diffusers transformer is not a class-conditional adaLN-Zero DiT; it cannot be loaded")
    in_ch = cfg.get("in_channels", 4)
    out_ch = cfg.get("out_channels") or in_ch
    return ModelConfig(
        input_size=cfg["sample_size"], patch_size=cfg["patch_size"], in_channels=in_ch,
        hidden_size=cfg["num_attention_heads"] * cfg["attention_head_dim"], depth=cfg["num_layers"],
        num_heads=cfg["num_attention_heads"], num_classes=cfg["num_embeds_ada_norm"],
        learn_sigma=out_ch == 2 * in_ch,
    )


def config_to_diffusers(cfg: ModelConfig) -> dict:
    if cfg.conditioning != "adaln-zero" or cfg.mlp_ratio != 4.0:
        raise UserError("only adaLN-Zero DiTs with mlp_ratio 4 have a diffusers DiTTransformer2DModel equivalent")
    return dict(
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.hidden_size // cfg.num_heads,
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_layers=cfg.depth,
        sample_size=cfg.input_size, patch_size=cfg.patch_size, num_embeds_ada_norm=cfg.num_classes,
    )


def from_diffusers(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """diffusers DiTTransformer2DModel state dict -> public DiT layout (without `pos_embed`)."""
    out = {}
    for ours, theirs in _TOP_MAP.items():
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = sd[f"{theirs}.{p}"]
    for ours, theirs in _EMB_MAP.items():
        for p in ("weight", "bias") if "table" not in ours else ("weight",):
            first = sd[f"transformer_blocks.0.{theirs}.{p}"]
            for i in range(1, depth):
                if not torch.equal(sd[f"transformer_blocks.{i}.{theirs}.{p}"], first):
                    raise UserError(
                        f"block {i} of this diffusers checkpoint has its own {theirs}; DiT shares one embedder "
                        "across blocks, so it cannot be converted exactly"
                    )
            out[f"{ours}.{p}"] = first
    for i in range(depth):
        src, dst = f"transformer_blocks.{i}.", f"blocks.{i}."
        for ours, theirs in _BLOCK_MAP.items():
            for p in ("weight", "bias"):
                out[f"{dst}{ours}.{p}"] = sd[f"{src}{theirs}.{p}"]
        for p in ("weight", "bias"):
            out[f"{dst}attn.qkv.{p}"] = torch.cat([sd[f"{src}attn1.to_{n}.{p}"] for n in "qkv"])
    return out


def to_diffusers(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Public DiT layout -> diffusers DiTTransformer2DModel state dict (embedders copied into every block)."""
    out = {}
    for ours, theirs in _TOP_MAP.items():
        for p in ("weight", "bias"):
            out[f"{theirs}.{p}"] = sd[f"{ours}.{p}"]
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"transformer_blocks.{i}."
        for ours, theirs in _EMB_MAP.items():
            for p in ("weight", "bias") if "table" not in ours else ("weight",):
                out[f"{dst}{theirs}.{p}"] = sd[f"{ours}.{p}"].clone()
        for ours, theirs in _BLOCK_MAP.items():
            for p in ("weight", "bias"):
                out[f"{dst}{theirs}.{p}"] = sd[f"{src}{ours}.{p}"]
        for p in ("weight", "bias"):
            for n, part in zip("qkv", sd[f"{src}attn.qkv.{p}"].chunk(3)):
                out[f"{dst}attn1.to_{n}.{p}"] = part.clone()
    return out


def save_diffusers_pipeline(model, vae, diffusion, out, class_names: list[str] | None = None) -> None:
    """Write a diffusers `DiTPipeline` directory: DiTTransformer2DModel + DDIM scheduler + the VAE.

    model: our DiT (adaLN-Zero, mlp_ratio 4); vae: dit.vae.Autoencoder (its AutoencoderKL is saved
    as the pipeline's `vae`, scaling_factor included); diffusion: the full T-step process, whose
    betas the scheduler reproduces. Note diffusers' timestep features differ slightly from DiT's
    (see the module docstring), as in the official facebook/DiT-XL-2-* conversions.
    """
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    if vae.vae is None:
        raise UserError("DiTPipeline always decodes with a VAE; a pixel-space model (--vae none) cannot be exported")
    cfg = model.config
    transformer = DiTTransformer2DModel(**config_to_diffusers(cfg))
    transformer.load_state_dict(to_diffusers(model.state_dict(), cfg.depth), strict=True)
    scheduler = DDIMScheduler(num_train_timesteps=diffusion.num_timesteps, trained_betas=diffusion.betas.tolist(),
                              clip_sample=False, set_alpha_to_one=True, prediction_type="epsilon")
    id2label = {i: name for i, name in enumerate(class_names)} if class_names else None
    vae.vae.register_to_config(scaling_factor=vae.scale)
    pipe = DiTPipeline(transformer=transformer.eval(), vae=vae.vae, scheduler=scheduler, id2label=id2label)
    if id2label:  # DiTPipeline does not record it itself; from_pretrained passes it back from model_index.json
        pipe.register_to_config(id2label={str(k): v for k, v in id2label.items()})
    pipe.save_pretrained(str(out), safe_serialization=True)
