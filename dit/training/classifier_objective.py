"""The objective of train_classifier.py: classify x_t, a forward sample of the generator's process.

ADM (Dhariwal & Nichol 2021, §4 and its classifier_train.py): t uniform over the whole time range,
x_t from the process's own forward sampling, cross-entropy against the true label; the accuracy
is logged per quarter of the noise range (acc_q0 nearest the data, acc_q3 nearest pure noise).
Per-sample randomness comes through the data stream like every objective's (`draw`), so runs
resume exactly and do not depend on the process count. Labels are never dropped: the classifier
reads no label, it predicts one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dit.errors import UserError
from dit.processes.base import Objective

QUARTERS = 4


class NoisyClassification(Objective):
    key = "noisy-classification"  # the "objective" its checkpoints and exports record (train_classifier.py)

    def __init__(self, process):
        from dit.processes.base import Process

        if type(process).noised is Process.noised or type(process).draw_uniform is Process.draw_uniform:
            raise UserError(f"the {process.key} process cannot train a noise-aware classifier (it has no "
                            "draw_uniform / noised)")
        self.process = process

    def draw(self, rng: np.random.Generator, shape: Sequence[int]) -> dict:
        return self.process.draw_uniform(rng, shape)

    def loss(self, network, batch: dict) -> dict:
        x0, y, t = batch["x0"], batch["cond"]["y"], batch["t"]
        x_t = self.process.noised(x0, {"t": t, "noise": batch["noise"]})
        logits = network(x_t, self.process.network_time(t), None).float()
        ce = F.cross_entropy(logits, y, reduction="none")
        correct = (logits.argmax(dim=1) == y).float()
        quarter = (self.process.noise_level(t) * QUARTERS).long().clamp(0, QUARTERS - 1)
        metrics = {"acc": (correct, torch.ones_like(correct))}
        metrics.update({f"acc_q{q}": (correct, (quarter == q).float()) for q in range(QUARTERS)})
        return {"loss": ce, "metrics": metrics}
