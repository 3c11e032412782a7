"""Recipes: HOW a network is trained (process, time sampling, loss, block options), orthogonal to a
preset's model, data and schedule; `python train.py PRESET --recipe NAME` sets all of these fields, and
flags still win (dit/training/config.py's precedence).

The first five are the cumulative steps of LightningDiT's ablation, measured side by side by
benchmarks/time_to_quality/time_to_quality.py (benchmarks/RESULTS.md, "Time to quality"). The last two
train few-step generators (dit/processes/meanflow.py, dit/processes/shortcut.py), measured against
flow-ln by benchmarks/few_step/.
"""

from __future__ import annotations

RECIPE_FIELDS = dict(process="gaussian", learn_sigma=None, time_sampling="uniform", cosine_loss=0.0, mlp="gelu",
                     norm="layernorm", pos="sincos", grad_clip=0.0)
RECIPES: dict[str, dict] = {
    "dit": RECIPE_FIELDS,  # DiT: Gaussian diffusion, eps + learned sigma, hybrid loss, uniform t
    "sit": dict(RECIPE_FIELDS, process="flow"),  # SiT: rectified flow (linear path, velocity), uniform t
    "flow-ln": dict(RECIPE_FIELDS, process="flow", time_sampling="logit-normal"),  # + logit-normal t
    # + the cosine velocity loss, with LightningDiT's gradient clipping at norm 1 (its configs' max_grad_norm):
    # the cosine's gradient at the zero-initialised output is ~1/eps, and unclipped it ruins AdamW's second moment
    "flow-ln-cos": dict(RECIPE_FIELDS, process="flow", time_sampling="logit-normal", cosine_loss=1.0, grad_clip=1.0),
    "lightningdit": dict(RECIPE_FIELDS, process="flow", time_sampling="logit-normal", cosine_loss=1.0, grad_clip=1.0,
                         mlp="swiglu", norm="rmsnorm", pos="rope2d"),  # + SwiGLU, RMSNorm, 2-D RoPE
    # MeanFlow's ImageNet setting (its Table 1 and §5): 25% of samples spanning, adaptive weight p = 1, and
    # its logit-normal(-0.4, 1) time, which is mean +0.4 in our time (data at 1: dit/processes/spans.py).
    "meanflow": dict(RECIPE_FIELDS, process="meanflow", time_sampling="logit-normal", logit_mean=0.4),
    # Shortcut models' setting: M = 128 steps, a quarter of the samples self-consistent, uniform t.
    "shortcut": dict(RECIPE_FIELDS, process="shortcut"),
}
