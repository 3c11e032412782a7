"""Reflow (Liu, Gong, Liu 2023, "Flow Straight and Fast", §2.2-2.3): distil a trained flow into one whose
paths are straight enough for Euler at a few steps: the "reflow" process. Time and predictions are the
flow's (dit/processes/flow.py), on the linear path with velocity prediction.

Each training sample's noise z (the flow's own draw) is carried to data by the TEACHER, a trained flow
checkpoint (`--teacher`), integrating its ODE with Euler over `--teacher-steps` steps under classifier-free
guidance `--teacher-cfg` towards the sample's label (the null label where the stream dropped it). The
student then learns flow matching on the coupled pair (z, teacher(z)) instead of an independent
(noise, data) pair: the "2-rectified flow", whose straight paths one Euler step follows. The data set's
images are not read for their pixels, only for their labels.

Why reflow rather than consistency distillation, on this hardware (issue 34): its student step is a plain
flow step plus the teacher's no-gradient passes, no JVP and no target network; its student is a flow,
sampled by the flow samplers at any step count and started exactly from the teacher (`--init-from`, the
same network); and its only extra setting is the teacher's NFE. Consistency distillation needs a second
(EMA target) network in every step and, continuous, a JVP.

The teacher's passes are the cost: `teacher_steps` forwards (x2 with guidance) per sample and step,
without gradient. A teacher sampled with guidance folds it into the student, whose sampling then refuses
more (`guidance_refusal`), as MeanFlow's does. The teacher is read on the first training step, so
sampling a reflow checkpoint needs no teacher; its path and sha256 are recorded in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dit.errors import UserError
from dit.processes.flow import FlowMatching


@dataclass(frozen=True)
class ReflowSection:
    """The reflow process's training flags."""

    teacher: str = ""  # a trained flow checkpoint, export, run directory or run name in --results-dir
    teacher_steps: int = 16  # Euler steps of the teacher's ODE per training sample
    teacher_cfg: float = 1.0  # the teacher's classifier-free guidance (1: none), folded into the student
    flow_time_scale: float = 1.0  # the network sees scale * t (shared with flow's section)


class Reflow(FlowMatching):
    key = "reflow"
    section = ReflowSection
    default_sampling_steps = 1  # what a straightened flow is for: one Euler step (benchmarks/few_step/)

    def __init__(self, teacher: str = "", teacher_steps: int = 16, teacher_cfg: float = 1.0, time_scale: float = 1.0,
                 teacher_sha256: str = ""):
        super().__init__("linear", "velocity", time_scale=time_scale)
        if not (isinstance(teacher_steps, int) and teacher_steps >= 1):
            raise UserError(f"--teacher-steps must be a whole number >= 1, got {teacher_steps!r}")
        if not teacher_cfg >= 1:
            raise UserError(f"--teacher-cfg must be >= 1 (1: none), got {teacher_cfg}")
        self.teacher, self.teacher_steps, self.teacher_cfg = teacher, teacher_steps, float(teacher_cfg)
        self.teacher_sha256 = teacher_sha256
        self._teacher = None  # (network, process), read on the first step

    @classmethod
    def from_run(cls, run) -> "Reflow":
        from dit.training.setup import resolve_init

        if not run.teacher:
            raise UserError("--process reflow distils a trained flow: pass --teacher RUN (a flow run, export or "
                            "checkpoint), e.g. --teacher cpu-demo-flow-ln (and --init-from the same run)")
        return cls(resolve_init(run.teacher, run.results_dir, "--teacher"), run.teacher_steps, run.teacher_cfg,
                   run.flow_time_scale)

    def to_meta(self) -> dict:
        if self.teacher and not self.teacher_sha256:  # hashed once, at the first checkpoint
            self.teacher_sha256 = _sha256(self.teacher)
        return {"teacher": self.teacher, "teacher_sha256": self.teacher_sha256, "teacher_steps": self.teacher_steps,
                "teacher_cfg": self.teacher_cfg, "time_scale": self.time_scale}

    @classmethod
    def from_meta(cls, meta: dict) -> "Reflow":
        known = {"teacher", "teacher_sha256", "teacher_steps", "teacher_cfg", "time_scale"}
        unknown = sorted(set(meta) - known)
        if unknown:
            raise UserError(f"unknown reflow settings {unknown} in the checkpoint; this version knows {sorted(known)}")
        return cls(**meta)

    @property
    def guidance_refusal(self) -> str | None:
        if self.teacher_cfg == 1:
            return None
        return (f"this reflow model learned its teacher's guided paths (scale {self.teacher_cfg:g}): sample it with "
                "--cfg-scale 1")

    def loss(self, network, batch: dict) -> dict:
        coupled = self.teacher_sample(batch["noise"], batch["cond"])
        return super().loss(network, {**batch, "x0": coupled.to(batch["x0"].dtype)})

    @torch.no_grad()
    def teacher_sample(self, noise: torch.Tensor, cond: dict) -> torch.Tensor:
        """The teacher's Euler-`teacher_steps` ODE solution from `noise` (its prior sample), guided towards
        cond's labels (null where cond["drop"] is 1)."""
        from dit.networks.conditioning import null_class
        from dit.sampling import run_sampler
        from dit.sampling.guidance import guided

        net, process = self.teacher_network(noise.device)
        y = cond["y"]
        if "drop" in cond:
            y = torch.where(cond["drop"] == 1, torch.full_like(y, null_class(net.num_classes)), y)
        labels = {"y": y}
        uncond = {"y": torch.full_like(y, null_class(net.num_classes))}
        with torch.autocast(noise.device.type, enabled=False):
            denoiser = guided(lambda x, t, c: net(x, t, c).float(), labels, uncond, self.teacher_cfg)
            return run_sampler(denoiser, process, noise.float(), "euler", self.teacher_steps)

    def teacher_network(self, device):
        if self._teacher is None:
            from dit.io.checkpoint import load_model
            from dit.processes.catalog import process_from_meta

            net, ckpt = load_model(self.teacher)
            process = process_from_meta(ckpt.meta)
            if process.key != "flow" or process.prediction != "velocity":
                raise UserError(f"--teacher {self.teacher}: a {process.key} model; reflow distils a flow (--process "
                                "flow, velocity prediction)")
            self._teacher = (net.eval().requires_grad_(False), process)
        net, process = self._teacher
        return net.to(device), process


def _sha256(path: str) -> str:
    from dit.io.checkpoint import weights_files
    from dit.io.zoo import sha256_of

    try:
        return ",".join(sha256_of(f) for f in weights_files(path))
    except (OSError, UserError):
        return ""  # recorded where it can be read; a missing teacher is refused when training reads it
