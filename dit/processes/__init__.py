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
    spans.py         few-step flows: a network of two times (t and a span), their conventions (MeanFlow's mapping)
    jvp.py           forward-mode JVPs through a network, on an attention path that has a forward-mode rule
    meanflow.py      MeanFlow (average velocity from the MeanFlow identity, guidance folded in): "meanflow"
    shortcut.py      shortcut models (step size conditioning, self-consistency): "shortcut"
    reflow.py        reflow (rectified flow's distillation: a teacher flow's coupled pairs): "reflow"
    vq_schedule.py   VQ-Diffusion's mask-and-replace schedule, token ids ([MASK] = K) and time, the posterior
    vq_diffusion.py  discrete diffusion over VQ token ids (VQ-Diffusion): the "vq-diffusion" process

Importing this package registers the built-in processes.
"""

from dit.processes.base import Process
from dit.processes.flow import FlowMatching
from dit.processes.gaussian import GaussianDiffusion
from dit.processes.catalog import DEFAULT_PROCESS, PROCESSES, get_process, process_from_meta, register_process
from dit.processes.meanflow import MeanFlow
from dit.processes.reflow import Reflow
from dit.processes.shortcut import Shortcut
from dit.processes.vq_diffusion import VQDiffusion

register_process(GaussianDiffusion)
register_process(FlowMatching)
register_process(VQDiffusion)
register_process(MeanFlow)
register_process(Shortcut)
register_process(Reflow)

__all__ = ["DEFAULT_PROCESS", "FlowMatching", "GaussianDiffusion", "MeanFlow", "PROCESSES", "Process", "Reflow", "Shortcut",
           "VQDiffusion", "get_process",
           "process_from_meta", "register_process"]
