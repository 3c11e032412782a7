"""Sampling: samplers are functions over a denoiser; guidance wraps the denoiser.

    noise.py           per-sample noise: sample i comes from seed base + i, whatever the batching
    catalog.py         samplers registered per process; run_sampler, the one entry point
    ancestral.py       DDPM and DDIM loops of the Gaussian process
    schedulers.py      diffusers' schedulers (DPM-Solver++, UniPC, Euler, Heun, DDIM) as Gaussian samplers
    flow.py            the flow process's samplers: Euler and Heun with a timestep shift, dopri5, an SDE
    flow_diffusers.py  diffusers' FlowMatchEulerDiscreteScheduler as a flow sampler
    few_step.py        the few-step sampler of MeanFlow and shortcut models (jumps along the average velocity)
    vq_diffusion.py    the vq-diffusion process's sampler (full chain and fast inference), truncation, log-space guidance
    guidance.py        class conditioning and classifier-free guidance as denoiser wrappers
    classifier_guidance.py  ADM's classifier guidance (mean shift and score forms) as a denoiser wrapper
    generate.py        network + process + autoencoder -> uint8 images (sample.py, previews, evaluation)

Importing this package registers the built-in samplers (the first of each process is its default,
except where `default=True` says otherwise).
"""

from dit.sampling import ancestral, few_step, flow, flow_diffusers, schedulers, vq_diffusion
from dit.sampling.catalog import (check_sampler, default_sampler, get_sampler, register_sampler, run_sampler,
                                   sampler_names)

register_sampler("gaussian", "ddpm", ancestral.ddpm)
register_sampler("gaussian", "ddim", ancestral.ddim)
for _name in schedulers.SCHEDULERS:
    register_sampler("gaussian", _name, schedulers.scheduler_sampler(_name))

register_sampler("flow", "euler", flow.euler)
register_sampler("flow", "heun", flow.heun)
register_sampler("flow", "dopri5", flow.dopri5)
register_sampler("flow", "sde", flow.sde)
register_sampler("flow", "diffusers-euler", flow_diffusers.flow_match_euler)

register_sampler("vq-diffusion", "ancestral", vq_diffusion.ancestral)

for _key in ("meanflow", "shortcut"):  # few-step jumps; at span 0 they are flows, so the flow ODEs apply
    register_sampler(_key, "few-step", few_step.few_step)
    register_sampler(_key, "euler", flow.euler)
    register_sampler(_key, "heun", flow.heun)
    register_sampler(_key, "dopri5", flow.dopri5)
for _name in ("euler", "heun", "dopri5", "sde"):  # a reflow student is a flow
    register_sampler("reflow", _name, getattr(flow, _name))

__all__ = ["check_sampler", "default_sampler", "get_sampler", "register_sampler", "run_sampler", "sampler_names"]
