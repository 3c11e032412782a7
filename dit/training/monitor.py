"""What the training loop watches and reports, with host syncs only where they are paid for anyway.

Per step (no sync): the loss, gradient norm and good-step count go into running sums on the
device, and the non-finite guard (dit/training/guard.py) updates its counters. Every
CHECK_EVERY steps, at each log and at each checkpoint (one sync): the guard's counters are read
(the run stops after `max_nonfinite` bad steps in a row) and every process learns whether any
received SIGTERM, so all stop at the same step. At each log: means over the window's good steps,
averaged over processes, to metrics.jsonl and wandb; with them, what the objective reports besides
its loss (`add_metrics`: weighted means, summed on the device and over processes; they count every
step, also one the guard skipped, and a metric with no weight in the window is left out of that log).
"""

from __future__ import annotations

import signal
import time

import torch

from dit.errors import UserError
from dit.training.guard import StepGuard
from dit.training.state import list_checkpoints

CHECK_EVERY = 10  # steps between host syncs that look for non-finite runs and SIGTERM


class Monitor:
    def __init__(self, accelerator, config, tracker, counters: dict, run_dir):
        self.accelerator, self.config, self.tracker = accelerator, config, tracker
        self.counters, self.run_dir = counters, run_dir  # images_seen, skipped_steps, unreadable_images
        self.device = accelerator.device
        self.guard = StepGuard(self.device, fp16=config.mixed_precision == "fp16")
        self.skipped_before = counters["skipped_steps"]
        self.unreadable_here = torch.zeros((), dtype=torch.long)  # this process, since this (re)start
        self.window = self._new_window()
        self.signal = None  # SIGTERM (pre-emption): finish the step, save, exit cleanly
        signal.signal(signal.SIGTERM, lambda signum, frame: setattr(self, "signal", signum))

    def _new_window(self) -> dict:
        zero = torch.zeros((), device=self.device)
        return {"loss": zero.clone(), "grad_norm": zero.clone(), "good": zero.clone(), "steps": 0, "start": time.time(),
                "metrics": {}}

    def add_metrics(self, metrics: dict) -> None:
        """name -> (values (B,), weights (B,)) of one micro-batch: logged as sum(w v) / sum(w) (no sync)."""
        sums = self.window["metrics"]
        for name, (values, weights) in metrics.items():
            w = weights.detach().float()
            pair = torch.stack([(values.detach().float() * w).sum(), w.sum()]).to(self.device)
            sums[name] = sums[name] + pair if name in sums else pair

    def check(self, step_loss: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
        """Device bool: may this step update the weights? Adds the step to the window (no sync)."""
        ok = self.guard.check(step_loss, grad_norm)
        w = self.window
        w["loss"] += torch.where(ok, step_loss, 0.0)
        w["grad_norm"] += torch.where(ok, grad_norm.detach().float(), 0.0)
        w["good"] += ok.float()
        w["steps"] += 1
        self.counters["images_seen"] += self.config.global_batch_size
        return ok

    def unreadable_total(self) -> int:  # a collective: call on every process
        here = self.accelerator.reduce(self.unreadable_here.to(self.device), "sum")
        return self.counters["unreadable_images"] + int(here)

    def after_step(self, step: int, end: int, lr: float, bar=None) -> bool:
        """Syncs where due; True when the run must stop now (SIGTERM on any process)."""
        config = self.config
        logging = step % config.log_every == 0 or step == end
        stopping = False
        if logging or step % CHECK_EVERY == 0 or step % config.ckpt_every == 0:  # exact counters at checkpoints
            skipped, worst_run = self.guard.read(self.accelerator)
            self.counters["skipped_steps"] = self.skipped_before + skipped
            if worst_run >= config.max_nonfinite:
                last = list_checkpoints(self.run_dir)
                raise UserError(
                    f"{worst_run} consecutive steps with a non-finite loss or gradient (before step {step}); "
                    f"stopping. The last good checkpoint is {last[-1][1] if last else 'none (no checkpoint yet)'}. "
                    "Lower --lr, set --grad-clip 1.0, or use --mixed-precision bf16 instead of fp16"
                )
            flag = torch.tensor(float(self.signal is not None), device=self.device)
            stopping = bool(self.accelerator.reduce(flag, "sum").item())  # every process stops at the same step
        if logging:
            metrics = self._window_metrics(lr)
            self.window = self._new_window()
            if metrics:
                self.tracker.log(metrics, step)
                if bar is not None:
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", img_s=f"{metrics['images_per_s']:.0f}")
        return stopping

    def _window_metrics(self, lr: float) -> dict:
        """Means over the good steps since the last log, averaged over processes (main process only)."""
        w, accelerator = self.window, self.accelerator
        good = torch.clamp(w["good"], min=1.0)
        local = torch.stack([w["loss"] / good, w["grad_norm"] / good])
        per_process = accelerator.gather(local[None])  # (processes, 2)
        unreadable = self.unreadable_total()
        elapsed = time.time() - w["start"]
        metrics = {
            "loss": per_process[:, 0].mean().item(),
            "loss_per_process": per_process[:, 0].tolist(),
            "grad_norm": per_process[:, 1].mean().item(),
            "lr": lr,
            "steps_per_s": w["steps"] / elapsed,
            "images_per_s": w["steps"] * self.config.global_batch_size / elapsed,
            "images_seen": self.counters["images_seen"],
            "skipped_steps": self.counters["skipped_steps"],
            "unreadable_images": unreadable,
        }
        for name, pair in w["metrics"].items():  # the same names on every process: the same code made them
            total = accelerator.reduce(pair.clone(), "sum")
            if total[1] > 0:
                metrics[name] = (total[0] / total[1]).item()
        if self.device.type == "cuda":
            metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return metrics if accelerator.is_main_process else {}
