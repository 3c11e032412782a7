"""Training checkpoints: full state to resume from, written so that a crash never loses the last good one.

Layout of a run directory (`results/<run_name>/`):
    config.json                     the resolved TrainConfig of the run
    metrics.jsonl                   one JSON object per logged step (dit/training/run_log.py)
    checkpoints/step_000001000/     a complete checkpoint:
        model.safetensors, optimizer.bin, random_states_*.pkl, ...   Accelerate's save_state
        ema.safetensors             EMA weights with the model config in the header (sample.py loads it)
        objective_state_<rank>.safetensors   the objective's own state, where it has one (vq-diffusion's
                                    importance-sampling history), one file per process
        train_state.json            step, images seen, config, wall time: written last
    export.safetensors              the newest EMA weights + config: the slim inference export
    samples/step_000001000.png      preview grids

A checkpoint is written into `checkpoints/.tmp_step_...` and renamed to its final name only after
every file is complete (rename is atomic on POSIX), so the newest `step_*` directory is always
whole; leftovers of a killed save are ignored and cleaned up by the next save. Pruning keeps the
newest `keep_last` and never removes the checkpoint just written. Every file is read back
with safetensors or `torch.load(weights_only=True)`, never a full unpickle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import torch

from dit.errors import UserError

STEP_DIR = re.compile(r"^step_(\d{9})$")
STATE_FILE = "train_state.json"


def objective_state_file(rank: int) -> str:
    return f"objective_state_{rank}.safetensors"


def _save_objective(objective, directory: Path, rank: int) -> None:
    """The objective's state_dict() of tensors (vq-diffusion's importance-sampling history: per process,
    as each process keeps its own), where it declares one (`has_state`, dit/processes/base.py)."""
    if objective is None or not objective.has_state:
        return
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in objective.state_dict().items()}
    save_file(state, str(Path(directory) / objective_state_file(rank)))


def _load_objective(objective, directory: Path, rank: int) -> None:
    """Restore what _save_objective wrote: this process's file, else the main process's (another
    process count); a checkpoint written before objectives kept state has none, and that is refused."""
    if objective is None or not objective.has_state:
        return
    from safetensors.torch import load_file

    for r in (rank, 0):
        path = Path(directory) / objective_state_file(r)
        if path.is_file():
            objective.load_state_dict(load_file(str(path)))
            return
    raise UserError(f"checkpoint {directory} holds no {objective_state_file(rank)} (the state of the "
                    f"{objective.key} objective): it was written by an older "
                    "version; start a new --run-name")


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def read_state(path: Path) -> dict:
    try:
        return json.loads((Path(path) / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a training checkpoint ({STATE_FILE} unreadable: {e})") from None


def check_files(path: Path) -> None:
    """Every safetensors file of checkpoint `path` opens (its header covers the file): a truncated or
    damaged one is refused in one line before any work, not as a traceback mid-resume. Checkpoints
    are written atomically, so this is damage from outside (a copy cut short, a failing disk)."""
    from safetensors import SafetensorError, safe_open

    for f in sorted(Path(path).glob("*.safetensors")):
        try:
            with safe_open(str(f), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise UserError(f"checkpoint {path} has a damaged {f.name} ({str(e).splitlines()[0][:120]}): resume from "
                            f"an earlier checkpoint with --resume, or remove {path}") from None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _torch_write_failed(e: RuntimeError) -> bool:
    """torch.save's zip writer reports a write that stopped short (a full disk, a file-size limit) as a
    RuntimeError from its C++ stream writer, not an OSError: the same failure, told apart by its source."""
    text = str(e)
    return "inline_container" in text or "PytorchStreamWriter" in text or "unexpected pos" in text


def save_checkpoint(accelerator, run_dir: Path, step: int, state: dict, parallel, export_meta: dict,
                    keep_last: int, objective=None) -> Path:
    """Write checkpoint `step` on every process (weights, optimizer, EMA: see dit/training/parallel.py), atomically.

    Raises OSError on every process when any process could not write its part (disk full,
    permission denied); the previous checkpoints are then untouched and the partial directory removed.
    """
    root = checkpoints_dir(run_dir)
    final = root / f"step_{step:09d}"
    tmp = root / f".tmp_step_{step:09d}"
    error = None
    if accelerator.is_main_process:
        try:
            root.mkdir(parents=True, exist_ok=True)
            for stale in root.glob(".tmp_step_*"):  # leftovers of a save that was killed
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
        except OSError as e:
            error = e
    error = _agree(accelerator, error, tmp)
    if error is None:
        try:
            parallel.save(tmp, export_meta)  # a collective: every process takes part
            _save_objective(objective, tmp, accelerator.process_index)
            if accelerator.is_main_process:
                payload = json.dumps({**state, "step": step, "saved_at": time.time()}, indent=1)
                with open(tmp / STATE_FILE, "w") as f:  # written last: its presence marks a complete checkpoint
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as e:
            error = e
        except RuntimeError as e:
            if not _torch_write_failed(e):
                raise
            error = OSError(f"a checkpoint file could not be written in full ({str(e).splitlines()[0][:160]})")
        error = _agree(accelerator, error, tmp)
    if accelerator.is_main_process:
        if error is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            if final.exists():  # the same step saved again (e.g. the final save of a finished run)
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(root)
            prune(run_dir, keep_last)
    accelerator.wait_for_everyone()
    if error is not None:
        raise error
    return final


def _agree(accelerator, error: OSError | None, tmp: Path) -> OSError | None:
    """Every process learns whether any process failed (so all stop together, none hangs)."""
    failed = accelerator.reduce(torch.tensor(float(error is not None), device=accelerator.device), "sum").item()
    if failed and error is None:
        error = OSError(f"another process failed to write its part of {tmp}")
    return error


def prune(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints (0 keeps all)."""
    if keep_last <= 0:
        return []
    complete = list_checkpoints(run_dir)
    doomed = [p for _, p in complete[:-keep_last]]
    for p in doomed:
        # Rename first, then delete: a kill mid-delete leaves a .tmp name, never a half `step_*`.
        trash = p.with_name(".tmp_" + p.name)
        os.replace(p, trash)
        shutil.rmtree(trash, ignore_errors=True)
    return doomed


def resume(accelerator, parallel, path: Path | None, objective=None) -> tuple[int, dict]:
    """(start step, counters) of a run: restored from checkpoint `path`, or a fresh start (None).
    Counters: images_seen, skipped_steps (non-finite), unreadable_images (replaced by readable ones).
    `objective`: its state (if it has a state_dict) is restored too."""
    counters = {"images_seen": 0, "skipped_steps": 0, "unreadable_images": 0}
    if path is None:
        return 0, counters
    saved = load_checkpoint(parallel, path)
    _load_objective(objective, Path(path), accelerator.process_index)
    counters.update({k: saved.get(k, 0) for k in counters})
    accelerator.print(f"resumed from {path} at step {saved['step']}")
    return saved["step"], counters


def load_checkpoint(parallel, path: Path) -> dict:
    """Restore model, optimizer and EMA (and Accelerate's scaler and RNG) from `path`; returns its state."""
    state = read_state(path)
    parallel.load(Path(path))
    return state


class RunSaver:
    """Saves the run at a step: the training checkpoint (atomic) and the slim EMA export next to it."""

    def __init__(self, accelerator, run_dir: Path, config, network_config, parallel, export_meta: dict, monitor,
                 objective=None):
        self.accelerator, self.run_dir, self.config = accelerator, Path(run_dir), config
        self.network_config, self.parallel, self.export_meta, self.monitor = network_config, parallel, export_meta, monitor
        self.objective = objective  # saved with the checkpoint where it has state (state_dict)

    def __call__(self, step: int) -> Path:
        counters = {**self.monitor.counters, "unreadable_images": self.monitor.unreadable_total()}
        payload = {**counters, "config": self.config.to_dict(), "model_config": self.network_config.to_dict()}
        try:
            path = save_checkpoint(self.accelerator, self.run_dir, step, payload, self.parallel, self.export_meta,
                                   self.config.keep_last, self.objective)
        except OSError as e:
            raise UserError(f"could not write the checkpoint at step {step} ({e}); the previous checkpoints in "
                            f"{checkpoints_dir(self.run_dir)} are intact. Free disk space and re-run to resume")
        ema_model = self.parallel.ema_model()  # a collective under FSDP
        if self.accelerator.is_main_process:
            from dit.io.checkpoint import save_export

            save_export(self.run_dir / "export.safetensors", ema_model, **self.export_meta, step=step)
        return path
