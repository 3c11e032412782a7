"""Processes: how data becomes noise (or masks) and back, and the loss that teaches a network to undo it.

    base.py          the Process contract (draw, loss, network time, output conversion, prior, meta) and what it
                     declares for samplers, pipelines and training (data kind, time range, default steps,
                     state, the marginal x_t = alpha x0 + sigma eps); Objective, a training step's minimand
    catalog.py       the process catalog
    schedules.py     Gaussian noise schedules, T = 1000, respacing
    likelihoods.py   Gaussian KL and the discretised likelihood (the variational bound's terms)
    gaussian.py      DiT's Gaussian diffusion (DDPM/IDDPM): the "gaussian" process
    paths.py         interpolant paths of flow matching (linear, GVP, VP)
    flow.py          flow matching / stochastic interpolants (SiT, rectified flow): the "flow" process
    vq_schedule.py   VQ-Diffusion's mask-and-replace schedule, token ids ([MASK] = K) and time, the posterior
    vq_diffusion.py  discrete diffusion over VQ token ids (VQ-Diffusion): the "vq-diffusion" process

Importing this package registers the built-in processes.
"""

from dit.processes.base import Process
from dit.processes.flow import FlowMatching
from dit.processes.gaussian import GaussianDiffusion
from dit.processes.catalog import DEFAULT_PROCESS, PROCESSES, get_process, process_from_meta, register_process
from dit.processes.vq_diffusion import VQDiffusion

register_process(GaussianDiffusion)
register_process(FlowMatching)
register_process(VQDiffusion)

__all__ = ["DEFAULT_PROCESS", "FlowMatching", "GaussianDiffusion", "PROCESSES", "Process", "VQDiffusion", "get_process",
           "process_from_meta", "register_process"]
