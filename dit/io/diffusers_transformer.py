"""Convert between our (= the public DiT repo's) state-dict layout and diffusers' DiTTransformer2DModel.

The two hold the same weights arranged differently:
- diffusers keeps a copy of the timestep/class embedder inside every block
  (`transformer_blocks.i.norm1.emb`) and conditions the final layer on block 0's copy;
  DiT shares one `t_embedder` / `y_embedder`. Converting to DiT requires the copies to agree.
- diffusers splits the fused `attn.qkv` into to_q / to_k / to_v.
- diffusers recomputes the frozen sin-cos `pos_embed` instead of storing it.
- diffusers' blocks always have adaLN-Zero's residual gates; an adaLN DiT (no gates) is written
  with gates whose output is the constant 1 (zero weight, bias 1), which is exactly a plain residual.

What diffusers' config cannot say is recorded under "_dit" in the transformer's config.json
(`RECORD`): the class count, conditioning, label dropout and timestep-frequency convention of the
network the weights came from. diffusers drops private ("_") config keys without a warning and
writes them back when it re-saves, so stock diffusers loads these files unchanged.

Timestep frequencies: diffusers' DiT computes them with `downscale_freq_shift=1` (exponents over
half-1), the original DiT with shift 0 (over half); the same weights compute slightly different
functions under each (ModelConfig.timestep_freq_shift). A transformer without our record (a stock
diffusers file such as facebook/DiT-XL-2-256) is read with shift 1, so it computes here what it
computes in diffusers; one we exported records the shift of its source, so reading it back gives
the original network exactly. Stock diffusers runs every file with shift 1: an exported shift-0
model carries that difference inside diffusers (see save_diffusers_pipeline). One difference is
not modelled: stock files normalise before each MLP with diffusers' default eps 1e-5 where DiT
uses 1e-6 (we export 1e-6); on a tiny random model it changes outputs by 3e-7 relative.
"""

from __future__ import annotations

import torch

from dit.errors import UserError
from dit.networks.blocks import LN_EPS
from dit.networks.conditioning import IMAGENET_CLASSES
from dit.networks.dit_config import ModelConfig

RECORD = "_dit"  # our key in the transformer's config.json (see the module docstring)
DIFFUSERS_FREQ_SHIFT = 1  # CombinedTimestepLabelEmbeddings: Timesteps(256, True, downscale_freq_shift=1)
DIFFUSERS_CONDITIONINGS = ("adaln-zero", "adaln")  # what a DiTTransformer2DModel can compute exactly
# What export_diffusers.py can write; every refusal ends with it.
EXPORTS = ("a diffusers DiTPipeline holds a DiT (adaLN-Zero or adaLN conditioning, mlp_ratio 4, at most "
           f"{IMAGENET_CLASSES} classes) trained with Gaussian diffusion in a VAE's latent space")

_BLOCK_MAP = {  # ours -> diffusers, inside blocks.{i}
    "attn.proj": "attn1.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
}
_ADALN = ("adaLN_modulation.1", "norm1.linear")  # converted on its own: adaLN gets constant gates
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
_TABLE = "y_embedder.embedding_table.weight"
_UNGATED = (0, 1, 3, 4)  # adaLN-Zero's chunks (shift, scale, gate) x (attention, MLP) without the gates


def check_exportable(cfg: ModelConfig, pixel_space: bool = False) -> None:
    """Refuse, in one line naming what exports, a network diffusers' DiTPipeline cannot hold."""
    why = None
    if cfg.conditioning not in DIFFUSERS_CONDITIONINGS:
        why = f"the model has {cfg.conditioning} conditioning, which diffusers' DiTTransformer2DModel does not implement"
    elif cfg.mlp_ratio != 4.0:
        why = f"the model has mlp_ratio {cfg.mlp_ratio}; diffusers' DiT blocks are fixed at 4"
    elif (cfg.mlp, cfg.norm, cfg.pos, cfg.qk_norm) != ("gelu", "layernorm", "sincos", False):
        why = (f"the model uses block options (mlp {cfg.mlp}, norm {cfg.norm}, pos {cfg.pos}, qk-norm {cfg.qk_norm}); "
               "diffusers' DiT blocks are GELU, LayerNorm, sin-cos positions, no QK-norm")
    elif cfg.num_classes > IMAGENET_CLASSES:
        why = (f"the model has {cfg.num_classes} classes; DiTPipeline's guidance uses label {IMAGENET_CLASSES} as "
               "its null class, which would be one of them")
    elif cfg.input_width:
        why = (f"the model is {cfg.input_size}x{cfg.input_width} (latent); diffusers' DiTTransformer2DModel is square "
               "(one sample_size)")
    elif pixel_space:
        why = "a pixel-space model (--vae none) has no VAE, and DiTPipeline always decodes with one"
    if why:
        raise UserError(f"cannot export: {why}; {EXPORTS}")


def config_from_diffusers(cfg: dict) -> ModelConfig:
    """ModelConfig for a diffusers DiTTransformer2DModel / Transformer2DModel config.json."""
    if cfg.get("norm_type", "ada_norm_zero") != "ada_norm_zero" or not cfg.get("num_embeds_ada_norm"):
        raise UserError("this diffusers transformer is not a class-conditional adaLN-Zero DiT; it cannot be loaded")
    in_ch = cfg.get("in_channels", 4)
    out_ch = cfg.get("out_channels") or in_ch
    rec, table = cfg.get(RECORD) or {}, cfg["num_embeds_ada_norm"]
    classes = rec.get("num_classes", table)
    if not 0 <= classes <= table or rec.get("conditioning", "adaln-zero") not in DIFFUSERS_CONDITIONINGS:
        raise UserError(f"the {RECORD!r} entry of this transformer's config.json ({rec}) does not fit its "
                        f"{table}-class label table; remove the entry to read it as a plain diffusers DiT")
    kept = {k: rec[k] for k in ("conditioning", "class_dropout_prob") if k in rec}
    return ModelConfig(
        input_size=cfg["sample_size"], patch_size=cfg["patch_size"], in_channels=in_ch,
        hidden_size=cfg["num_attention_heads"] * cfg["attention_head_dim"], depth=cfg["num_layers"],
        num_heads=cfg["num_attention_heads"], num_classes=classes, learn_sigma=out_ch == 2 * in_ch,
        timestep_freq_shift=rec.get("timestep_freq_shift", DIFFUSERS_FREQ_SHIFT), **kept,
    )


def config_to_diffusers(cfg: ModelConfig, table_classes: int | None = None) -> dict:
    """DiTTransformer2DModel keyword arguments for `cfg`, our record included.

    table_classes: the label table diffusers sees (num_embeds_ada_norm, + 1 null row); default
    cfg.num_classes. save_diffusers_pipeline widens it to 1000 (see to_diffusers).
    """
    check_exportable(cfg)
    record = {"num_classes": cfg.num_classes, "conditioning": cfg.conditioning,
              "class_dropout_prob": cfg.class_dropout_prob, "timestep_freq_shift": cfg.timestep_freq_shift}
    return dict(
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.hidden_size // cfg.num_heads,
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_layers=cfg.depth,
        sample_size=cfg.input_size, patch_size=cfg.patch_size, num_embeds_ada_norm=table_classes or cfg.num_classes,
        # diffusers' default 1e-5 would apply to the LayerNorm before each MLP; DiT's are all 1e-6.
        norm_eps=LN_EPS, **{RECORD: record},
    )


def _gated(t: torch.Tensor) -> torch.Tensor:
    """adaLN modulation weight (4D, D) or bias (4D,) -> adaLN-Zero's (6D, ...), gates inserted after
    each (shift, scale) pair: zero weight and bias 1, so every gate is exactly 1 whatever c is."""
    parts = list(t.chunk(4))
    gate = torch.zeros_like(parts[0]) if t.dim() == 2 else torch.ones_like(parts[0])
    return torch.cat(parts[:2] + [gate] + parts[2:] + [gate.clone()])


def _ungated(w: torch.Tensor, b: torch.Tensor, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    ws, bs = w.chunk(6), b.chunk(6)
    for i in (2, 5):
        if ws[i].any() or not torch.equal(bs[i], torch.ones_like(bs[i])):
            raise UserError(f"{where}: the gates of this adaLN transformer are no longer the constant 1 it was "
                            f"exported with; remove the 'conditioning' of its {RECORD!r} record to read it as adaLN-Zero")
    return torch.cat([ws[i] for i in _UNGATED]), torch.cat([bs[i] for i in _UNGATED])


def from_diffusers(sd: dict[str, torch.Tensor], depth: int, conditioning: str = "adaln-zero",
                   num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """diffusers DiTTransformer2DModel state dict -> public DiT layout (without `pos_embed`).

    num_classes: the network's classes when the table is wider (an exported pipeline's 1001 rows):
    rows 0..num_classes-1 and the last (null) row are kept.
    """
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
    if num_classes is not None:
        out[_TABLE] = torch.cat([out[_TABLE][:num_classes], out[_TABLE][-1:]])
    for i in range(depth):
        src, dst = f"transformer_blocks.{i}.", f"blocks.{i}."
        for ours, theirs in _BLOCK_MAP.items():
            for p in ("weight", "bias"):
                out[f"{dst}{ours}.{p}"] = sd[f"{src}{theirs}.{p}"]
        w, b = sd[f"{src}{_ADALN[1]}.weight"], sd[f"{src}{_ADALN[1]}.bias"]
        if conditioning == "adaln":
            w, b = _ungated(w, b, f"block {i}")
        out[f"{dst}{_ADALN[0]}.weight"], out[f"{dst}{_ADALN[0]}.bias"] = w, b
        for p in ("weight", "bias"):
            out[f"{dst}attn.qkv.{p}"] = torch.cat([sd[f"{src}attn1.to_{n}.{p}"] for n in "qkv"])
    return out


def to_diffusers(sd: dict[str, torch.Tensor], depth: int, conditioning: str = "adaln-zero",
                 table_classes: int | None = None, unconditional: bool = False) -> dict[str, torch.Tensor]:
    """Public DiT layout -> diffusers DiTTransformer2DModel state dict (embedders copied into every block).

    table_classes (>= the network's classes): widen the label table to table_classes + 1 rows with
    the null row last. The rows between belong to no class; they repeat the null row, so such a
    label samples unconditionally rather than from an arbitrary embedding. `unconditional` (a network
    that always reads the null label: no classes, or class dropout 1) puts the null row in every row,
    so any label diffusers is given reads as null, as in the network (layers.LabelEmbedder).
    """
    sd = dict(sd)
    table = sd[_TABLE]
    null = table[-1:]
    if unconditional:
        sd[_TABLE] = null.expand(max(len(table), (table_classes or 0) + 1), -1).clone()
    elif table_classes is not None and table_classes + 1 > len(table):
        sd[_TABLE] = torch.cat([table[:-1], null.expand(table_classes + 1 - len(table), -1), null])
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
            t = sd[f"{src}{_ADALN[0]}.{p}"]
            out[f"{dst}{_ADALN[1]}.{p}"] = _gated(t) if conditioning == "adaln" else t
            for n, part in zip("qkv", sd[f"{src}attn.qkv.{p}"].chunk(3)):
                out[f"{dst}attn1.to_{n}.{p}"] = part.clone()
    return out
