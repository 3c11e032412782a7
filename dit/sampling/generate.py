"""Images from a trained network: the one function sample.py, training previews and evaluation call."""

from __future__ import annotations

import numpy as np
import torch

from dit.autoencoders.pixels import to_uint8
from dit.errors import UserError
from dit.layout import CLEAN, GIVEN
from dit.networks.conditioning import UNLABELLED, is_unconditional, unconditional
from dit.precision import autocast_dtype
from dit.sampling.classifier_guidance import eps_guided, mean_shift, resolve_form
from dit.sampling.guidance import guided
from dit.sampling.noise import PerSampleNoise
from dit.sampling.catalog import default_sampler, run_sampler
from dit.sampling.vq_diffusion import guided_log_probs


@torch.no_grad()
def generate_images(network, autoencoder, process, seeds, labels, sampler: str | None = None, steps: int | None = None,
                    cfg_scale: float = 1.0, cfg_channels: int | None = None,
                    interval: tuple[float, float] | None = None, eta: float = 0.0, precision: str = "no",
                    device=None, options: dict | None = None, stats: dict | None = None,
                    given: tuple[torch.Tensor, torch.Tensor] | None = None, classifier=None,
                    classifier_scale: float = 0.0, classifier_form: str = "auto",
                    shape: tuple[int, ...] | None = None, text: dict | None = None) -> np.ndarray:
    """uint8 NHWC images (NFHWC clips for a video network); sample i is drawn from seed `seeds[i]`
    with class `labels[i]`. sampler / steps None: the process's defaults.

    network: any registered architecture in eval mode; process: its full (un-respaced) process;
    autoencoder: dit.autoencoders.base.Autoencoder; precision: no | fp16 | bf16 (dit/precision.py);
    options: the sampler's own keywords (a flow sampler's shift, dopri5's tolerances, ...); eta is
    passed only when set, so samplers without it run with the default 0. stats: if given, "nfe"
    (denoiser evaluations) and "batches" are added up in it (dopri5 chooses its own count).
    given: (mask, clean) in the network's input space (dit/layout.py's GIVEN and CLEAN): positions
    where mask is 1 are given; the network reads them from `clean` at every step, whatever the
    sampler, and the result holds them exactly.
    classifier: a noise-aware classifier (x_t, t) -> logits that guides towards `labels` with
    `classifier_scale` (ADM; dit/sampling/classifier_guidance.py), in `classifier_form` (auto: the
    mean shift for ddpm, the eps form for every other sampler), on top of classifier-free guidance.
    shape: one sample's shape in the network's input space; default the given clips' (with
    `given`), else network.input_shape. A video network also takes clips shorter than its F.
    text: a text network's cond entries of each sample's prompt (network.encode_text), one row per sample;
    guidance's unconditional branch reads the empty caption (conditioning.unconditional).
    """
    device = torch.device(device) if device is not None else next(network.parameters()).device
    sampler = sampler or default_sampler(process.key)
    dtype = autocast_dtype(precision)

    def net(x, t, cond):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            return network(x, t, cond).float()

    if shape is None:
        shape = tuple(given[1].shape[1:]) if given is not None else tuple(network.input_shape)
    noise = PerSampleNoise([int(s) for s in seeds], device)
    x_T = process.prior(noise, len(noise), shape, device)
    y = torch.as_tensor(np.asarray(labels), device=device, dtype=torch.long)
    # An unconditional network reads the null label; `labels` are then a guiding classifier's targets only.
    cond = {"y": torch.full_like(y, UNLABELLED) if is_unconditional(network.num_classes) else y}
    if given is not None:
        mask, clean = (v.to(device=device, dtype=torch.float32) for v in given)
        cond[GIVEN], cond[CLEAN] = mask, clean
    cond.update({k: v.to(device) for k, v in (text or {}).items()})
    uncond = unconditional(cond, network.num_classes)
    if process.guidance_space == "log-prob":  # token ids: guidance on log-probabilities (no channels, no interval)
        if given is not None or classifier is not None or cfg_channels is not None or interval is not None:
            raise UserError(f"the {process.key} process samples token ids: given positions, classifier guidance, "
                            "guidance channels and intervals do not apply")
        denoiser = guided_log_probs(net, cond, uncond, cfg_scale)
    else:
        denoiser = guided(net, cond, uncond, cfg_scale, cfg_channels, interval)
    if stats is not None:
        denoiser = _counted(denoiser, stats)
    options = {**(options or {}), **({"eta": eta} if eta else {})}
    if classifier is not None and classifier_scale > 0:
        if resolve_form(classifier_form, sampler) == "eps":
            denoiser = eps_guided(denoiser, process, classifier, y, classifier_scale)
        else:
            options["classifier_grad"] = mean_shift(classifier, y, classifier_scale)
    x0 = run_sampler(denoiser, process, x_T, sampler, steps, noise, **options)
    if given is not None:  # the sampler's state at given positions was never read: the given values are the result
        x0 = torch.where(mask.expand(x0.shape) > 0.5, clean, x0)
    return to_uint8(autoencoder.decode(x0))


def _counted(denoiser, stats: dict):
    stats["batches"] = stats.get("batches", 0) + 1
    stats.setdefault("nfe", 0)

    def counting(x, t, extra=None):
        stats["nfe"] += 1
        return denoiser(x, t, extra) if extra else denoiser(x, t)
    return counting
