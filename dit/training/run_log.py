"""Metrics and images of a training run: a JSONL file always, wandb on request (offline by default).

Only the main process logs. `metrics.jsonl` gets one JSON object per logged step and is appended
to on resume, so a resumed run's file reads as one history (a step logged twice, before a crash
and again after resuming, keeps both lines: the later one is what the run continued from).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np

from dit.io.images import save_png


class Tracker:
    def __init__(self, run_dir: Path, config: dict, enabled: bool, use_wandb: bool = False, project: str = "dit",
                 mode: str = "offline", run_name: str = ""):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.wandb = None
        if not enabled:
            return
        path = self.run_dir / "metrics.jsonl"
        _drop_partial_line(path)
        self.metrics = open(path, "a")
        if use_wandb and mode != "disabled":
            import wandb

            id_file = self.run_dir / "wandb_id.txt"  # resuming continues the same wandb run
            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
            id_file.write_text(run_id)
            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb = wandb.init(project=project, name=run_name or None, id=run_id, resume="allow",
                                    dir=str(self.run_dir), config=config, mode=mode)

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        self.metrics.write(json.dumps({"step": step, **metrics}) + "\n")
        self.metrics.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def image(self, name: str, grid: np.ndarray, step: int, path: Path) -> None:
        """Save a uint8 HWC grid as PNG (atomically) and log it."""
        if not self.enabled:
            return
        save_png(grid, path)
        if self.wandb is not None:
            import wandb

            self.wandb.log({name: wandb.Image(grid)}, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.metrics.close()
        if self.wandb is not None:
            self.wandb.finish()


def _drop_partial_line(path: Path) -> None:
    """A run killed mid-write leaves half a JSON line at the end: cut it before appending."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
