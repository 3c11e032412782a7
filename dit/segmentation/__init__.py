"""Unsupervised segmentation from a trained DiT's features: EmerDiff (Namekata et al., ICLR 2024) on a DiT.

    kmeans.py            k-means++ and Lloyd steps in torch, per image, canonical label order
    features.py          token features of a middle block at a small t, null label (forward hooks)
    inversion.py         deterministic inversion to t_m and denoising that reproduces the image
    attention_replay.py  record every attention map of a pass, replay them (attention injection)
    emerdiff.py          coarse masks, the modulated passes, the whole pipeline (`segment`)
    assign.py            blur, per-region normalisation, argmax; the up-sampling baselines
    scores.py            binary mIoU (majority-vote cluster mapping), boundary F-score, bootstrap
    truth.py             the built-in shapes with their coverage masks
    files.py             segment.py's image folder in, label maps and overlays out
"""

from dit.segmentation.emerdiff import Segmentation, Settings, image_seeds, segment

__all__ = ["Segmentation", "Settings", "image_seeds", "segment"]
