"""The conditioning vocabulary every network reads: what `cond` holds, and the null class.

`cond` is a dict of per-sample tensors, one row per sample of x:
    "y"     (B,) long   class labels; the null class (below) means "no class"
    "drop"  (B,) long   optional, 1 where training replaces the label by the null class
                        (label dropout for classifier-free guidance, drawn per sample by the data stream)
    "span"  (B,) float  optional, the second time of a few-step process (dit/layout.py SPAN): the length of
                        the interval the network's output spans, in network-time units (0 or absent:
                        the instantaneous velocity); read by networks built with span_embed
    "text_ids" (B, S) long  optional, a caption's token ids, PAD 0 (text_tokenizer.py), read by networks that
                        read text (base.ReadsText); the empty caption (all PAD) is the null text
    "text_mask" (B, S) bool  with a frozen transformers encoder's ids: True at real tokens (its padding differs)
Systems add their own keys (a mask, a frame flag); a network ignores keys it does not know.
A bare tensor of labels is accepted wherever a cond is, as in the public DiT's model(x, t, y).

An unconditional network has num_classes 0: its label table holds the null row alone, and every
label it is given reads as null (`is_unconditional`). Classifier-free guidance then has nothing to
guide towards (both branches are the same), and sampling needs no labels: the null label is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

IMAGENET_CLASSES = 1000  # the paper's (and the public checkpoints') number of classes


def null_class(num_classes: int) -> int:
    """Index of the "no class" label used for classifier-free guidance (DiT §3.1, CFG).

    The label table has num_classes + 1 rows and the extra, last row is the null label. This is
    the only place that convention is written down; everything else calls this function.
    """
    return num_classes


TEXT_IDS = "text_ids"  # a caption's token ids (module docstring)
TEXT_MASK = "text_mask"  # (B, S) bool, True at a caption's real tokens: a frozen transformers tokenizer's padding mask
# a frozen text encoder's features (B, S, D): VQ-Diffusion's pipelines (text_token_transformer.py), and the
# text DiT's from a latent cache written with `cache_latents.py --text-encoder`
TEXT = "text"

NO_CLASSES = 0  # the class count of an unconditional network
UNLABELLED = null_class(NO_CLASSES)  # the one label of an unconditional network's samples (its null row)


def is_unconditional(num_classes: int) -> bool:
    """True for a network without classes (a flat folder, or --unconditional): only the null label."""
    return num_classes == NO_CLASSES


def reads_only_null(num_classes: int, class_dropout_prob: float) -> bool:
    """True for a network that reads the null label whatever it is given: no classes, or class dropout 1
    (an unconditional model trained on labelled data, classifier guidance's base model)."""
    return is_unconditional(num_classes) or class_dropout_prob >= 1


def table_rows(num_classes: int) -> int:
    """Rows of the label table: every class and the null label after them."""
    return null_class(num_classes) + 1


def classes_in_table(rows: int) -> int:
    """The class count of a label table with `rows` rows (the inverse of the convention above)."""
    return rows - 1


def as_cond(cond) -> dict:
    """A cond dict from a cond dict or a bare label tensor."""
    if isinstance(cond, Mapping):
        return dict(cond)
    return {"y": cond}


def labels_of(cond) -> torch.Tensor:
    return as_cond(cond)["y"]


def cat_cond(a, b) -> dict:
    """Two conds stacked along the batch (rows of `a` first), key by key."""
    a, b = as_cond(a), as_cond(b)
    if a.keys() != b.keys():
        raise ValueError(f"cannot stack conds with keys {sorted(a)} and {sorted(b)}")
    return {k: torch.cat([a[k], b[k]]) for k in a}


def unconditional(cond, num_classes: int) -> dict:
    """The same cond with every label replaced by the null class and every caption by the empty one (the
    CFG unconditional branch)."""
    out = as_cond(cond)
    out["y"] = torch.full_like(out["y"], null_class(num_classes))
    if TEXT_IDS in out:
        out[TEXT_IDS] = torch.zeros_like(out[TEXT_IDS])  # PAD everywhere: no real token
    if TEXT_MASK in out:
        out[TEXT_MASK] = torch.zeros_like(out[TEXT_MASK])
    out.pop("drop", None)
    return out
