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
more (`guidance_refusal`), as MeanFlow's does. Training loads the teacher (the process's companion,
dit/training/companion.py: the process knows no files and no samplers) and records its path and sha256
in every checkpoint; sampling a reflow checkpoint needs no teacher.
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
    companion_field = "teacher"  # loaded by training (dit/training/companion.py), which calls `attach`

    def __init__(self, teacher: str = "", teacher_steps: int = 16, teacher_cfg: float = 1.0, time_scale: float = 1.0,
                 teacher_sha256: str = ""):
        super().__init__("linear", "velocity", time_scale=time_scale)
        if not (isinstance(teacher_steps, int) and teacher_steps >= 1):
            raise UserError(f"--teacher-steps must be a whole number >= 1, got {teacher_steps!r}")
        if not teacher_cfg >= 1:
            raise UserError(f"--teacher-cfg must be >= 1 (1: none), got {teacher_cfg}")
        self.teacher, self.teacher_steps, self.teacher_cfg = teacher, teacher_steps, float(teacher_cfg)
        self.teacher_sha256 = teacher_sha256
        self._sample = None  # the teacher's sampling function, attached by training

    @classmethod
    def from_run(cls, run) -> "Reflow":
        if not run.teacher:
            raise UserError("--process reflow distils a trained flow: pass --teacher RUN (a flow run, export or "
                            "checkpoint), e.g. --teacher cpu-demo-flow-ln (and --init-from the same run)")
        return cls(run.teacher, run.teacher_steps, run.teacher_cfg, run.flow_time_scale)

    def to_meta(self) -> dict:
        return {"teacher": self.teacher, "teacher_sha256": self.teacher_sha256, "teacher_steps": self.teacher_steps,
                "teacher_cfg": self.teacher_cfg, "time_scale": self.time_scale}

    @property
    def guidance_refusal(self) -> str | None:
        if self.teacher_cfg == 1:
            return None
        return (f"this reflow model learned its teacher's guided paths (scale {self.teacher_cfg:g}): sample it with "
                "--cfg-scale 1")

    # --- the teacher (Process: companion) ---

    def companion_sampling(self) -> tuple[str, int, float]:
        return "euler", self.teacher_steps, self.teacher_cfg

    def attach(self, sample, identity: str) -> None:
        self._sample, self.teacher_sha256 = sample, identity

    def loss(self, network, batch: dict) -> dict:
        if self._sample is None:
            raise UserError("the reflow process trains on its teacher's samples: train it with train.py, which "
                            "loads --teacher")
        with torch.no_grad():
            coupled = self._sample(batch["noise"], batch["cond"])
        return super().loss(network, {**batch, "x0": coupled.to(batch["x0"].dtype)})
