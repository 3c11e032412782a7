"""A trained model a process reads while it trains (`Process.companion_field`: reflow's teacher).

Training resolves the field like --init-from (a path, a model-zoo name, or a run in --results-dir; a
missing one is refused before anything is written), loads the model with its own process, and hands the
training process a function (noise, cond) -> the companion's samples from that noise (`Process.attach`):
the companion's own network and process, sampled with the sampler, steps and guidance the training
process asks for (`companion_sampling`), towards cond's labels (the null label where the stream dropped
it), in float32 outside autocast, without gradient. The process records the companion's sha256.
"""

from __future__ import annotations

import torch

from dit.errors import UserError
from dit.training.setup import resolve_init


def resolve_companion(config):
    """The config with its process's companion field resolved to a path (unchanged where it has none)."""
    from dit.processes import get_process

    field = get_process(config.process).companion_field
    if field is None:
        return config
    return config.replace(**{field: resolve_init(getattr(config, field), config.results_dir, f"--{field.replace('_', '-')}")})


def attach_companion(process, config, device, shape: tuple[int, ...]) -> str | None:
    """Load the process's companion and attach its sampling function; returns a line saying what was loaded."""
    field = process.companion_field
    if field is None:
        return None
    from dit.io.checkpoint import load_model, weights_files
    from dit.io.zoo import sha256_of
    from dit.networks.conditioning import null_class, unconditional
    from dit.processes import process_from_meta
    from dit.sampling import check_sampler, run_sampler
    from dit.sampling.guidance import guided

    spec = getattr(config, field)
    flag = f"--{field.replace('_', '-')}"
    network, ckpt = load_model(spec)
    own = process_from_meta(ckpt.meta)
    sampler, steps, cfg = process.companion_sampling()
    try:
        check_sampler(own, sampler, steps)
    except UserError as e:
        raise UserError(f"{flag} {spec}: a {own.key} model, which the {process.key} process samples with {sampler} "
                        f"({e}); pass a model it can sample (reflow: a flow run)") from None
    if tuple(network.input_shape) != tuple(shape):
        raise UserError(f"{flag} {spec} draws samples of shape {tuple(network.input_shape)}; this run trains on "
                        f"{tuple(shape)}: pass a model of the same data")
    network = network.eval().requires_grad_(False).to(device)
    null = null_class(network.num_classes)

    def net(x, t, cond):
        return network(x, t, cond).float()

    def sample(noise: torch.Tensor, cond: dict) -> torch.Tensor:
        y = cond["y"]
        if "drop" in cond:
            y = torch.where(cond["drop"] == 1, torch.full_like(y, null), y)
        with torch.no_grad(), torch.autocast(noise.device.type, enabled=False):
            denoiser = guided(net, {"y": y}, unconditional({"y": y}, network.num_classes), cfg)
            return run_sampler(denoiser, own, noise.float(), sampler, steps)

    identity = ",".join(sha256_of(f) for f in weights_files(spec))
    process.attach(sample, identity)
    return f"{flag} {spec}: {sampler}-{steps}, cfg {cfg:g}, sha256 {identity[:12]}"
