"""The network contract written as code: what every registered network is, by role, and what some
can do besides, declared rather than probed.

Roles (`Architecture.role`, dit/networks/catalog.py) say which script trains a network and what
the others may do with it:
    GENERATOR   forward(x, t, cond) -> what its process trains it to predict (train.py, sample.py)
    CLASSIFIER  forward(x, t, cond) -> logits of p(y | x_t, t) (train_classifier.py; sample.py's
                --classifier guides a generator with it)
    TOKENIZER   images <-> token ids (train_vq.py; its run is an autoencoder, --vae, of the others);
                it takes no time: a process never calls it

A generator (`Generator` below): x an image or latent (B, C, H, W) (H != W allowed), a clip
(B, F, C, H, W) or token ids (B, L) or (B, H, W); t one time value per sample (B,) or one per token;
cond a dict of per-sample tensors (dit/networks/conditioning.py: "y" labels, optional "drop", and
whatever else a system needs). It knows nothing of the process (time direction, schedule and
prediction type live there). `input_shape` is one sample's shape (what the process draws its prior
in), `num_classes` and `null_class` its labels (conditioning.null_class), `config.to_dict()` what
checkpoints store to rebuild it.

Optional capabilities: a network (or, for FLOP counting, a module) has one exactly when its class
inherits the mixin; nothing asks `hasattr`. A run that asks for one the network lacks is refused in
one line before training starts (`require`).
    GradCheckpointing  set_grad_checkpointing(enabled)        --grad-checkpointing
    CompileBlocks      compile_blocks(mode, backward) -> bool  --compile (dit/networks/compile.py)
    ImageInit          image_state_dict_keys()                 --init-from: Latte's init from an image DiT
    Blocks             blocks, an nn.ModuleList of the repeated blocks: FSDP shards each one
    PatchAttention     Blocks over a grid of patch tokens, each with attn.qkv: segment.py (EmerDiff)
    ReadsText          encode_text(captions) -> cond entries: a text-to-image generator (sample.py --prompt)
    AnalyticCost       analytic_macs(shape) on a MODULE whose work FlopCounterMode does not see (S4D's
                       FFT convolution): dit/analysis/flops.py counts it as the identity and adds this
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from dit.errors import UserError

GENERATOR, CLASSIFIER, TOKENIZER = "generator", "classifier", "tokenizer"
ROLES = (GENERATOR, CLASSIFIER, TOKENIZER)


@runtime_checkable
class Generator(Protocol):
    """What samplers, pipelines and the training loop read of a generator (module docstring)."""

    input_shape: tuple[int, ...]
    num_classes: int
    null_class: int
    config: Any  # with to_dict()

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor: ...


@runtime_checkable
class Classifier(Protocol):
    """A noise-aware classifier: forward(x_t, network time, None) -> logits (B, num_classes)."""

    input_shape: tuple[int, ...]
    num_classes: int
    config: Any

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor: ...


@runtime_checkable
class Tokenizer(Protocol):
    """A VQ tokenizer: encode images (B, C, H, W) -> ids (B, h, w), decode ids -> images."""

    input_shape: tuple[int, ...]
    config: Any

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, ids: torch.Tensor) -> torch.Tensor: ...


PROTOCOLS = {GENERATOR: Generator, CLASSIFIER: Classifier, TOKENIZER: Tokenizer}


class Capability:
    """Base of the optional capabilities; `provides` names the member a subclass implements."""

    provides: ClassVar[str]


class GradCheckpointing(Capability):
    provides = "set_grad_checkpointing"

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass: less memory, more compute."""
        raise NotImplementedError


class CompileBlocks(Capability):
    provides = "compile_blocks"
    compile_error: str | None = None  # why the last compile_blocks() fell back to eager

    def compile_blocks(self, mode: str | None = None, backward: bool = False) -> bool:
        """torch.compile the blocks in place; True if it works, else eager again and compile_error set."""
        raise NotImplementedError


class ImageInit(Capability):
    provides = "image_state_dict_keys"
    image_arch: ClassVar[str]  # the registry key of the image network whose checkpoints it starts from

    def image_state_dict_keys(self) -> list[str]:
        """The state-dict keys an image DiT of the same size provides exactly ([] where none maps)."""
        raise NotImplementedError


class Blocks(Capability):
    provides = "blocks"
    blocks: torch.nn.ModuleList  # the repeated blocks, in order


class PatchAttention(Blocks):
    """An image network over an (input_size / patch_size)^2 grid of patch tokens whose every block has
    a self-attention `attn` with a fused `qkv` projection (dit/networks/layers.py's Attention): what
    EmerDiff's token features and attention replay read (dit/segmentation/, segment.py)."""

    provides = "patch-token attention blocks"
    input_size: int
    patch_size: int


class ReadsText(Capability):
    """A generator conditioned on captions (dit/networks/text_dit.py) rather than labels: it has no classes,
    and `encode_text` turns captions (prompts) into the cond entries it reads (conditioning.TEXT_IDS); with
    `features`, for sampling, also the encoded caption, so that it is encoded once per prompt, not per step."""

    provides = "encode_text"

    def encode_text(self, captions: list[str], features: bool = False) -> dict:
        raise NotImplementedError


class AnalyticCost(Capability):
    """A module that maps its input (B, ...) to the same shape and whose arithmetic FlopCounterMode
    does not see (FFTs): the counter runs it as the identity and adds `analytic_macs` instead."""

    provides = "analytic_macs"

    def analytic_macs(self, shape: tuple[int, ...]) -> dict[str, float]:
        """MACs of one forward on an input of `shape`, by term: "kernel" (built once per forward,
        whatever the batch) and "fft" (the rest), dit/analysis/flops.py's ForwardCost fields."""
        raise NotImplementedError


def supports(network, capability: type[Capability]) -> bool:
    return isinstance(network, capability)


def require(network, capability: type[Capability], flag: str) -> None:
    """A one-line UserError naming `flag` when `network` lacks `capability`."""
    if not supports(network, capability):
        raise UserError(f"{flag}: this {type(network).__name__} network has no {capability.provides}(); "
                        f"run it without {flag}")
