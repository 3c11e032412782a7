"""The text DiT's transformer as diffusers' own classes (export_diffusers.py): `--conditioning cross-attention` as
`PixArtTransformer2DModel` (PixArt-α), `--conditioning joint` as `SD3Transformer2DModel` (SD3's MMDiT).

The transformer is everything after the caption features: diffusers reads the features (B, S, W) as
`encoder_hidden_states` (and SD3 their pooled mean as `pooled_projections`), so the text encoder is written
beside it (text_encoder.safetensors, and its config) or, when frozen, named by its directory. The weights map
one to one, with fused projections split (qkv -> to_q, to_k, to_v; kv -> to_k, to_v) and SD3's (scale, shift)
order where ours is (shift, scale). What differs, and so what is refused or equal only in part:
- PixArt: an all-masked caption (the empty one, the null text) turns the -10000 bias into attention over
  every token, where ours gives zero; other captions agree (masked keys get exp(-10000) = 0).
- SD3 masks nothing: padded caption tokens take part in its joint attention, so its outputs equal ours for
  captions that fill the text length (no padding) only. SD3 also adds the pooled projection of an empty
  caption, where ours adds nothing.
- Both: mlp gelu with ratio 4, layernorm, DiT's timestep frequencies (diffusers' flip_sin_to_cos, shift 0),
  sin-cos positions on a square grid; PixArt has no qk-norm. Anything else is refused before writing.
- The pooled baseline (adaln-zero) has no diffusers class: refused.
"""

from __future__ import annotations

import torch

from dit.errors import UserError

TEXT_EXPORTS = {"cross-attention": "PixArtTransformer2DModel", "joint": "SD3Transformer2DModel"}


def check_text_exportable(cfg) -> str:
    """The diffusers class name of a text DiT config, or a one-line refusal naming what differs."""
    if cfg.conditioning not in TEXT_EXPORTS:
        raise UserError(f"cannot export: a text DiT with --conditioning {cfg.conditioning} has no diffusers class; "
                        "cross-attention exports as PixArtTransformer2DModel, joint as SD3Transformer2DModel")
    what = [w for w, bad in (("mlp swiglu", cfg.mlp != "gelu"), (f"mlp_ratio {cfg.mlp_ratio:g}", cfg.mlp_ratio != 4),
                             ("norm rmsnorm", cfg.norm != "layernorm"), ("a non-square input", bool(cfg.input_width)),
                             ("diffusers' DiT timestep frequencies", cfg.timestep_freq_shift != 0),
                             ("qk-norm", cfg.qk_norm and cfg.conditioning == "cross-attention")) if bad]
    if what:
        raise UserError(f"cannot export: {TEXT_EXPORTS[cfg.conditioning]} has no {what[0]}; export needs mlp gelu "
                        "ratio 4, layernorm, a square input and DiT's timestep frequencies")
    return TEXT_EXPORTS[cfg.conditioning]


def diffusers_config(cfg) -> dict:
    heads, head_dim = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    common = dict(sample_size=cfg.input_size, patch_size=cfg.patch_size, in_channels=cfg.in_channels,
                  out_channels=cfg.out_channels, num_layers=cfg.depth, attention_head_dim=head_dim,
                  num_attention_heads=heads)
    if cfg.conditioning == "cross-attention":
        return dict(common, cross_attention_dim=cfg.hidden_size, caption_channels=cfg.encoder_width,
                    norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, attention_bias=True,
                    activation_fn="gelu-approximate", num_embeds_ada_norm=1000, interpolation_scale=1,
                    use_additional_conditions=False)
    return dict(common, joint_attention_dim=cfg.encoder_width, caption_projection_dim=cfg.hidden_size,
                pooled_projection_dim=cfg.encoder_width, pos_embed_max_size=cfg.input_size // cfg.patch_size,
                qk_norm="rms_norm" if cfg.qk_norm else None)


def _linear(out: dict, name: str, sd: dict, ours: str) -> None:
    out[f"{name}.weight"] = sd[f"{ours}.weight"]
    if f"{ours}.bias" in sd:
        out[f"{name}.bias"] = sd[f"{ours}.bias"]


def _split(out: dict, names: list[str], sd: dict, ours: str) -> None:
    for name, w, b in zip(names, sd[f"{ours}.weight"].chunk(len(names)), sd[f"{ours}.bias"].chunk(len(names))):
        out[f"{name}.weight"], out[f"{name}.bias"] = w.contiguous(), b.contiguous()


def _swap(out: dict, name: str, sd: dict, ours: str) -> None:
    """(shift, scale) halves of ours -> diffusers' AdaLayerNormContinuous (scale, shift)."""
    for p in ("weight", "bias"):
        a, b = sd[f"{ours}.{p}"].chunk(2)
        out[f"{name}.{p}"] = torch.cat([b, a]).contiguous()


def to_diffusers(net) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """(class name, its config, its state dict) of a text DiT's transformer."""
    cfg = net.config
    kind = check_text_exportable(cfg)
    sd = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    _linear(out, "pos_embed.proj", sd, "x_embedder.proj")
    mlp = {"ff.net.0.proj": "mlp.fc1", "ff.net.2": "mlp.fc2"}
    if kind == "PixArtTransformer2DModel":
        for a, b in (("linear_1", "mlp.0"), ("linear_2", "mlp.2")):
            _linear(out, f"adaln_single.emb.timestep_embedder.{a}", sd, f"t_embedder.{b}")
        _linear(out, "adaln_single.linear", sd, "t_block.1")
        _linear(out, "caption_projection.linear_1", sd, "caption_projection.0")
        _linear(out, "caption_projection.linear_2", sd, "caption_projection.2")
        for i in range(cfg.depth):
            d, o = f"transformer_blocks.{i}", f"blocks.{i}"
            out[f"{d}.scale_shift_table"] = sd[f"{o}.scale_shift_table"]
            _split(out, [f"{d}.attn1.to_q", f"{d}.attn1.to_k", f"{d}.attn1.to_v"], sd, f"{o}.attn.qkv")
            _linear(out, f"{d}.attn1.to_out.0", sd, f"{o}.attn.proj")
            _linear(out, f"{d}.attn2.to_q", sd, f"{o}.cross_attn.q")
            _split(out, [f"{d}.attn2.to_k", f"{d}.attn2.to_v"], sd, f"{o}.cross_attn.kv")
            _linear(out, f"{d}.attn2.to_out.0", sd, f"{o}.cross_attn.proj")
            for a, b in mlp.items():
                _linear(out, f"{d}.{a}", sd, f"{o}.{b}")
        out["scale_shift_table"] = sd["final_layer.scale_shift_table"]
        _linear(out, "proj_out", sd, "final_layer.linear")
        return kind, diffusers_config(cfg), out
    for a, b in (("linear_1", "mlp.0"), ("linear_2", "mlp.2")):
        _linear(out, f"time_text_embed.timestep_embedder.{a}", sd, f"t_embedder.{b}")
    _linear(out, "time_text_embed.text_embedder.linear_1", sd, "pooled_embedder.0")
    _linear(out, "time_text_embed.text_embedder.linear_2", sd, "pooled_embedder.2")
    _linear(out, "context_embedder", sd, "context_embedder")
    out["pos_embed.pos_embed"] = sd["pos_embed"]  # the M x M sin-cos table SD3 stores (M = the patch grid)
    for i in range(cfg.depth):
        d, o, last = f"transformer_blocks.{i}", f"blocks.{i}", i == cfg.depth - 1
        _linear(out, f"{d}.norm1.linear", sd, f"{o}.adaLN_modulation.1")
        (_swap if last else _linear)(out, f"{d}.norm1_context.linear", sd, f"{o}.context_modulation.1")
        _split(out, [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v"], sd, f"{o}.qkv")
        _split(out, [f"{d}.attn.add_q_proj", f"{d}.attn.add_k_proj", f"{d}.attn.add_v_proj"], sd, f"{o}.context_qkv")
        _linear(out, f"{d}.attn.to_out.0", sd, f"{o}.proj")
        if cfg.qk_norm:
            for a, b in (("norm_q", "q_norm"), ("norm_k", "k_norm"), ("norm_added_q", "context_q_norm"),
                         ("norm_added_k", "context_k_norm")):
                out[f"{d}.attn.{a}.weight"] = sd[f"{o}.{b}.weight"]
        for a, b in mlp.items():
            _linear(out, f"{d}.{a}", sd, f"{o}.{b}")
        if not last:
            _linear(out, f"{d}.attn.to_add_out", sd, f"{o}.context_proj")
            for a, b in mlp.items():
                _linear(out, f"{d}.{a.replace('ff', 'ff_context')}", sd, f"{o}.{b.replace('mlp', 'context_mlp')}")
    _swap(out, "norm_out.linear", sd, "final_layer.adaLN_modulation.1")
    _linear(out, "proj_out", sd, "final_layer.linear")
    return kind, diffusers_config(cfg), out


def build_diffusers(net):
    """The diffusers transformer holding `net`'s weights (every key filled: strict)."""
    import diffusers

    kind, config, sd = to_diffusers(net)
    model = getattr(diffusers, kind)(**config)
    model.load_state_dict(sd, strict=True)
    return model.eval()
