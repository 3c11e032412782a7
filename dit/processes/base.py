"""The process contract: everything about time, noise and the loss, nothing about the network.

A process owns
- how a training sample's randomness is drawn (`draw`: t, noise, masks, ...), from a generator
  the data stream keys by the sample's position in the stream, so a run does not depend on batch
  size, process count or resumption (dit/data/stream.py);
- how x_t is formed and the training loss (`loss(network, batch)`);
- what the network is fed as time (`network_time`) and what its output means (`convert`: to
  epsilon, x0, velocity, score or token logits, whatever its samplers consume);
- the prior samplers start from (`prior`) and its own settings, saved in every checkpoint
  (`to_meta` / `from_meta`) under the key it is registered with.
It calls the network only as `network(x_t, network_time(t), cond)`, so any registered architecture
fits any process whose data it can take. Samplers for a process are registered per process
(dit/sampling/catalog.py); guidance wraps the denoiser they call.

It declares everything samplers, pipelines and training read of it, so none of them asks for a key
or probes an attribute:
- `data_kind`: CONTINUOUS (latents, pixels) or TOKENS (a VQ tokenizer's ids), dit/layout.py;
  `codebook_size`: K for TOKENS, None otherwise;
- `time_range`: (data end, noise end) in its own time, and `discrete_time` (whole indices) or not;
- `default_sampling_steps`: sampling's --steps when none is given (DiT's 250 unless it says);
- `outputs`: what `convert` expresses the network's output as;
- `state_dict` / `load_state_dict`: training state a checkpoint must carry, where `has_state`
  (vq-diffusion's importance-sampling history); the default is none;
- `marginal(t)` = (alpha, sigma) of its forward process x_t = alpha x0 + sigma eps, for deterministic
  inversion (dit/segmentation/inversion.py: from the noise estimate `convert(..., "eps")` at one
  time, x0 = (x_t - sigma eps) / alpha, then x = alpha' x0 + sigma' eps at the next: DDIM with
  eta 0); `marginal_rates(t)` their time derivatives (continuous time); a process that has no such
  form says why in `inversion_refusal` and refuses in one line;
- `reads_span`: its network takes a second time, the span (cond[SPAN]: the few-step processes), and
  `guidance_refusal`: why sampling must not add classifier-free guidance (training folded it in);
- `section`: the training flags only it reads (a frozen dataclass beside it), `cpu_defaults`: what
  the CPU demo preset lacks for it to train (dit/training/config.py), and `preview_sampler`: the
  sampler of training previews.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch

from dit.errors import UserError
from dit.layout import CONTINUOUS, GIVEN

Noise = Callable[[torch.Tensor], torch.Tensor]  # like -> standard normal of like's shape (dit/sampling/noise.py)
DEFAULT_SAMPLING_STEPS = 250  # DiT's sample.py: what sampling takes unless a process says otherwise


class Objective(abc.ABC):
    """What one training step minimises. A process is a generator's objective; train_classifier.py and
    train_vq.py use objectives of their own (dit/training/). Checkpoints carry `state_dict()` where
    `has_state`, and a resumed run without it is refused (dit/training/state.py)."""

    key: ClassVar[str]  # names it in messages (a process: its registry key)
    has_state: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        """State is declared, never guessed: an objective that keeps some (overrides state_dict) without
        saying `has_state = True` would silently lose it on resume, so it is refused when defined."""
        super().__init_subclass__(**kwargs)
        if cls.state_dict is not Objective.state_dict and not cls.has_state:
            raise TypeError(f"{cls.__name__} overrides state_dict but does not declare has_state = True: its "
                            "state would not be saved with checkpoints")

    @abc.abstractmethod
    def draw(self, rng: np.random.Generator, shape: Sequence[int]) -> dict:
        """One training sample's randomness for data of `shape`: ints and tensors (collated per key).
        Append new draws at the end: changing the order changes every run's data."""

    @abc.abstractmethod
    def loss(self, network, batch: dict) -> dict:
        """Per-sample losses {"loss": (B,), ...} for batch {"x0": (B, ...), "cond": {...}, **draws}."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Training state (tensors) the checkpoint must carry: none unless `has_state`."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"the {self.key} objective keeps no state, got {sorted(state)}")


class Process(Objective):
    key: ClassVar[str]
    # Whether the process reads a second half of output channels as a learned variance (the
    # training default of --learn-sigma; DiT's Gaussian process does, flow matching does not).
    learns_variance: ClassVar[bool] = False
    # The training-config fields only this process reads (`from_run`), as a frozen dataclass of defaulted,
    # commented fields (None: none). Each is a flag; changed with another --process, it is refused rather
    # than silently ignored (dit/training/config.py).
    section: ClassVar[type | None] = None
    # What the CPU demo preset lacks for this process to train: set between the preset and the flags when
    # --process picks it over cpu-demo (as Architecture.cpu_defaults, dit/networks/catalog.py).
    cpu_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    # The sampler of training previews (few steps); None: the process's default sampler.
    preview_sampler: ClassVar[str | None] = None
    # Why classifier guidance (`guide`) cannot work with this process; None where it does.
    classifier_guidance_refusal: ClassVar[str | None] = "classifier guidance is not defined for this process"
    # Where classifier-free guidance mixes the conditional and unconditional outputs: "output" (the
    # network's output channels, dit/sampling/guidance.py) or "log-prob" (log-probabilities over
    # token ids, renormalised: dit/sampling/vq_diffusion.py's guided_log_probs).
    guidance_space: ClassVar[str] = "output"
    # What one sample of its data is (dit/layout.py): CONTINUOUS values, or TOKENS (ids 0..codebook_size-1).
    data_kind: ClassVar[str] = CONTINUOUS
    codebook_size: int | None = None  # K for TOKENS
    # Whether its time is a whole index (a tensor of longs) or a real number.
    discrete_time: ClassVar[bool] = False
    default_sampling_steps: int = DEFAULT_SAMPLING_STEPS
    outputs: ClassVar[tuple[str, ...]] = ()  # the names `convert` takes
    # Whether its network is fed a second time, the span (cond[SPAN], dit/networks/conditioning.py): the
    # few-step processes (dit/processes/spans.py). Training builds the network with a span embedding then,
    # and refuses an architecture that has none (Architecture.takes_span).
    reads_span: ClassVar[bool] = False
    # Why deterministic inversion (`marginal`) cannot work with this process; None where it does.
    inversion_refusal: ClassVar[str | None] = "it declares no marginal x_t = alpha x0 + sigma eps"

    @property
    def time_range(self) -> tuple[float, float]:
        """(data end, noise end) in this process's time: where x_t is the data and where the prior.
        Only what reads it needs it (inversion, the flow samplers' interval): a process written before
        it was declared still trains and samples, and is refused in one line where it is read."""
        raise UserError(f"the {self.key} process declares no time_range (data end, noise end)")

    @classmethod
    @abc.abstractmethod
    def from_run(cls, run) -> "Process":
        """The process a training config asks for (its fields are read, the config is not imported)."""

    @classmethod
    @abc.abstractmethod
    def from_meta(cls, meta: dict) -> "Process":
        """The process a checkpoint recorded with `to_meta`."""

    @abc.abstractmethod
    def to_meta(self) -> dict:
        """JSON-able settings that rebuild this process with `from_meta`."""

    @abc.abstractmethod
    def prior(self, noise: Noise, batch: int, shape: Sequence[int], device) -> torch.Tensor:
        """Where sampling starts: (batch, *shape), drawn through `noise` (per-sample generators)."""

    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        """The time value the network is fed for process time t (identity unless the process says)."""
        return t

    # --- a trained model the process reads while it trains (reflow's teacher): optional ---

    # The training field that names it (None: none). Training resolves and loads it (dit/training/companion.py)
    # and hands the process a function (noise, cond) -> its samples from that noise (`attach`).
    companion_field: ClassVar[str | None] = None

    def companion_sampling(self) -> tuple[str, int, float]:
        """(sampler, steps, guidance scale) the companion model is sampled with."""
        raise UserError(f"the {self.key} process reads no other model while it trains")

    def attach(self, sample: Callable, identity: str) -> None:
        """The companion's sampling function (noise, cond) -> samples and its identity (its weights' sha256)."""
        raise UserError(f"the {self.key} process reads no other model while it trains")

    @property
    def guidance_refusal(self) -> str | None:
        """Why sampling must not add classifier-free guidance (--cfg-scale other than 1): a process that
        folded guidance into training (MeanFlow's guided target) says so; None where guidance applies."""
        return None

    @abc.abstractmethod
    def convert(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, to: str) -> torch.Tensor:
        """The network's output at (x_t, t) expressed as `to` (the names the process supports)."""

    def sampling_interval(self, sde: bool = False) -> tuple[float, float]:
        """(start, end) times a continuous-time sampler integrates between (`sde`: for an SDE
        sampler): from the noise end to the data end unless the process keeps away from an end."""
        data, noise = self.time_range
        return noise, data

    # --- the forward process as x_t = alpha x0 + sigma eps: deterministic inversion ---

    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma) at t (B,): x_t = alpha x0 + sigma eps in distribution (float64 for index
        times, t's precision for real ones)."""
        raise UserError(f"the {self.key} process cannot be inverted: {self.inversion_refusal}")

    def marginal_rates(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d alpha / dt, d sigma / dt) at t (B,), for samplers that need them (continuous time)."""
        raise UserError(f"the {self.key} process declares no time derivatives of its marginal")

    # --- for noise-aware classifiers (classifier guidance, ADM): optional ---

    def draw_uniform(self, rng: np.random.Generator, shape: Sequence[int]) -> dict:
        """Like `draw`, with t uniform over the whole time range (a classifier sees every noise level)."""
        raise UserError(f"the {self.key} process cannot train a noise-aware classifier")

    def noised(self, x0: torch.Tensor, draws: dict) -> torch.Tensor:
        """x_t of the forward process from clean x0 and a `draw`'s "t" and "noise"."""
        raise UserError(f"the {self.key} process cannot train a noise-aware classifier")

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) as a fraction in [0, 1]: 0 at the data end, 1 at the noise end (quarters are logged)."""
        raise UserError(f"the {self.key} process cannot train a noise-aware classifier")

    def guide(self, output: torch.Tensor, x_t: torch.Tensor, network_t: torch.Tensor, grad: torch.Tensor,
              scale: float) -> torch.Tensor:
        """The network output at (x_t, network time) changed so that its score gains
        scale * grad, grad = grad_x log p(y | x_t, t) (classifier guidance, ADM eq. 14 and §4.2)."""
        raise UserError(f"the {self.key} process: {self.classifier_guidance_refusal}")


def mean_over_generated(values: torch.Tensor, cond=None) -> torch.Tensor:
    """Per-sample mean of a per-element loss (B, ...) over the positions the network generates.

    Without a mask (cond without GIVEN) that is every position. With one (VDT-style mask modelling:
    GIVEN broadcastable to `values`, 1 where the position is given clean), given positions carry no
    loss and the mean runs over the rest; a sample with everything given gets 0, not 0/0.
    """
    dims = tuple(range(1, values.dim()))
    given = cond.get(GIVEN) if isinstance(cond, dict) else None
    if given is None:
        return values.mean(dims)
    weight = (1 - given.to(values.dtype)).expand_as(values)
    return (values * weight).sum(dims) / weight.sum(dims).clamp_min(1)
