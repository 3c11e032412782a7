"""Networks: pure functions (x, t, cond) -> output that know nothing of the process.

    conditioning.py   what `cond` holds; the null class
    layers.py         embedders, attention (optional QK-norm, RoPE), MLPs (GELU, SwiGLU), norms, the 2-D sin-cos table
    rope.py           axial 2-D rotary position embedding (LightningDiT's --pos rope2d)
    blocks.py         the transformer blocks of DiT's four conditioning variants
    dit_config.py     DiT's typed config and the paper's presets (Table 1)
    dit.py            the DiT network and the public-repo constructors DiT_models
    video_config.py   the video DiT's config: DiT's plus frames, factorisation, temporal on/off
    video_blocks.py   the blocks video adds: temporal attention (Latte 3 / VDT), split heads (Latte 4)
    video_dit.py      the video DiT (Latte's four factorisations, VDT's given-frame masks)
    noisy_classifier.py  p(y | x_t, t) for classifier guidance (ADM), on the generator's input
    s4d.py, diffussm.py  DiffuSSM (Yan et al. 2024): attention-free blocks around a bidirectional S4D
    token_dit.py      DiT's blocks over token ids -> log p(x0) over K tokens (VQ-Diffusion's network)
    vq_tokenizer.py   diffusers' VQModel as a VQ tokenizer: images <-> ids (train_vq.py; used as --vae)
    text_tokenizer.py captions -> token ids (words or bytes), recorded in the text DiT's config
    text_encoder.py   the trainable caption encoder (masked transformer) and the pooled caption
    text_blocks.py    masked attention; PixArt-α's cross-attention block and SD3's joint (MMDiT) block
    text_config.py, text_dit.py  the text-conditioned DiT: pooled adaLN-Zero, cross-attention or joint attention
    text_token_transformer.py  diffusers' text-conditioned token transformer (VQDiffusionPipeline) under our
                      network contract; built only from a pipeline (dit/pipelines/vq_text.py), not registered
    base.py           the network contract as code: roles (generator, classifier, tokenizer), the declared
                      optional capabilities (gradient checkpointing, block compilation, image init, FLOP hook)
    compile.py        --compile: torch.compile a network's blocks, or a one-line refusal
    catalog.py        the architecture catalog (key, role, config section, build)

Importing this package registers the built-in architectures.
"""

from dit.networks.dit import ARCH as _DIT
from dit.networks.base import CLASSIFIER, GENERATOR, TOKENIZER
from dit.networks.catalog import (ARCHITECTURES, DEFAULT_ARCH, Architecture, get_architecture, keys_with_role,
                                   register_architecture, role_of)

from dit.networks.diffussm import ARCH as _DIFFUSSM
from dit.networks.noisy_classifier import ARCH as _NOISY_CLASSIFIER
from dit.networks.text_dit import ARCH as _TEXT_DIT
from dit.networks.token_dit import ARCH as _TOKEN_DIT
from dit.networks.video_dit import ARCH as _VIDEO_DIT
from dit.networks.vq_tokenizer import ARCH as _VQ_TOKENIZER

register_architecture(_DIT)
register_architecture(_VIDEO_DIT)
register_architecture(_NOISY_CLASSIFIER)
register_architecture(_DIFFUSSM)
register_architecture(_TOKEN_DIT)
register_architecture(_TEXT_DIT)
register_architecture(_VQ_TOKENIZER)

__all__ = ["ARCHITECTURES", "CLASSIFIER", "DEFAULT_ARCH", "GENERATOR", "TOKENIZER", "Architecture", "get_architecture",
           "keys_with_role", "register_architecture", "role_of"]
