"""What train.py builds before its loop: the accelerator, the data (dit/training/data.py), an image
DiT's weights for a video network, and the checkpoint to resume from (all of which only read: bad input
fails before anything is written); then the run directory's config.json."""

from __future__ import annotations

import json
from types import SimpleNamespace
from pathlib import Path

from dit.dist import check_world, force_cpu
from dit.errors import UserError
from dit.networks import get_architecture
from dit.networks.base import ImageInit, supports
from dit.training import state as train_state
from dit.training.config import RESUME_MAY_CHANGE, TrainConfig
from dit.training.step import learning_rate


def make_accelerator(config: TrainConfig, cpu: bool):
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    # A collective that waits longer than this (a process died or hangs) fails the job instead of hanging it.
    kwargs = [InitProcessGroupKwargs(timeout=timedelta(minutes=config.dist_timeout_min)),
              DistributedDataParallelKwargs(find_unused_parameters=False)]
    try:
        accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=force_cpu(cpu), kwargs_handlers=kwargs)
    except ValueError as e:  # e.g. fp16 without a GPU
        raise UserError(f"cannot set up --mixed-precision {config.mixed_precision}: {e}") from None
    check_world(accelerator.state)
    return accelerator


NO_INIT = "none"  # --init-from none: start from scratch even where the preset names an image model


def resolve_init(spec: str, results_dir: str, flag: str = "--init-from") -> str:
    """--init-from (or reflow's --teacher, `flag`) as a path to read: "" (none, or NO_INIT), a model-zoo name
    or an existing path as given, else the run of that name in --results-dir (the video-cpu preset's
    `cpu-demo-flow-ln`). Checked before anything is read or written; a missing run names the train.py
    command whose default run it is."""
    from dit.io import zoo

    if spec in ("", NO_INIT):
        return ""
    if spec in zoo.manifest() or Path(spec).expanduser().exists():
        return spec
    here = Path(results_dir) / spec
    if here.exists():
        return str(here)
    make = run_command(spec)
    raise UserError(f"{flag} {spec}: no checkpoint, run directory or model-zoo name of that name, nor {here}; "
                    + (f"train it first ({make} --results-dir {results_dir})" if make else "")
                    + (f"{', ' if make else ''}or pass --init-from {NO_INIT} to start from scratch" if flag == "--init-from"
                       else ""))


def run_command(run_name: str) -> str | None:
    """The train.py command whose default run name is `run_name` (a preset, or preset-recipe), else None."""
    from dit.training.config import PRESETS, RECIPES

    for preset in PRESETS:
        for recipe in (None, *RECIPES):
            if run_name == (preset if recipe is None else f"{preset}-{recipe}"):
                return f"python train.py {preset}" + (f" --recipe {recipe}" if recipe else "")
    return None


def init_weights(network, arch: str, spec: str) -> str:
    """--init-from: start `network` (of registry key `arch`) from the weights of `spec` (checkpoint, export or
    run directory); returns what was copied, in words. A network with ImageInit (the video DiT) takes an image
    DiT's spatial weights (`init_from_image`); any other copies every tensor of a checkpoint of its own
    architecture, and its tensors the checkpoint lacks keep their init (a few-step DiT's span embedding,
    started from a flow DiT). A checkpoint of another architecture, or one with tensors of other shapes or
    tensors this network lacks, is a UserError naming the first difference."""
    if supports(network, ImageInit):
        copied, note = init_from_image(network, spec)
        return f"{copied} image DiT tensors copied into the spatial blocks, {note}"
    import torch

    from dit.io.checkpoint import load_weights

    ckpt = load_weights(spec)
    if ckpt.arch != arch:
        raise UserError(f"--init-from {spec} holds a {ckpt.arch!r} network; this run trains a {arch!r} one")
    own = network.state_dict()
    for k, v in ckpt.state_dict.items():
        if k not in own or own[k].shape != v.shape:
            found = "not in this network" if k not in own else f"{tuple(v.shape)} there, {tuple(own[k].shape)} here"
            raise UserError(f"--init-from {spec} does not fit this network: {k} is {found}; pass a checkpoint of the "
                            "same --model, width, depth, channels and classes")
    fresh = sorted({k.split(".")[0] for k in own if k not in ckpt.state_dict})
    with torch.no_grad():
        for k, v in ckpt.state_dict.items():
            own[k].copy_(v)
    return f"{len(ckpt.state_dict)} tensors copied" + (f", {', '.join(fresh)} kept fresh" if fresh else "")


def init_from_image(network, spec: str) -> tuple[int, str]:
    """Latte's init: copy an image DiT's weights (checkpoint, export or run directory) into the
    spatial parts of a video network; the temporal parts stay at their identity init. The class table
    is copied when the class counts agree; otherwise (ImageNet's DiT for UCF101's 101 classes) it keeps
    its fresh init. Returns the number of tensors copied and a note on the class table; a checkpoint
    of another shape is a UserError naming the difference."""
    import torch

    from dit.io.checkpoint import load_weights
    from dit.networks.conditioning import classes_in_table

    keys = network.image_state_dict_keys() if supports(network, ImageInit) else []
    if not keys:
        raise UserError("--init-from: this network has no blocks an image DiT maps onto one for one (split-heads "
                        "mixes space and time in one attention); use another --factorization or drop --init-from")
    ckpt = load_weights(spec)
    if ckpt.arch != network.image_arch:
        raise UserError(f"--init-from {spec} holds a {ckpt.arch!r} network; it must be an image DiT (arch "
                        f"{network.image_arch})")
    own = network.state_dict()
    table, note = "y_embedder.embedding_table.weight", "its class table too"
    if table in keys and table in ckpt.state_dict and ckpt.state_dict[table].shape != own[table].shape:
        keys = [k for k in keys if not k.startswith("y_embedder.")]
        # A bare state dict has no config: the count comes from its table's rows (the null row included).
        there = getattr(ckpt.config, "num_classes", None) or classes_in_table(ckpt.state_dict[table].shape[0])
        note = f"the class table left fresh ({there} classes there, {network.num_classes} here)"
    missing = [k for k in keys if k not in ckpt.state_dict]
    wrong = [k for k in keys if k in ckpt.state_dict and ckpt.state_dict[k].shape != own[k].shape]
    if missing or wrong:
        k = (missing or wrong)[0]
        found = "missing" if missing else f"{tuple(ckpt.state_dict[k].shape)}"
        raise UserError(f"--init-from {spec} does not fit this network: {k} is {found}, the video DiT needs "
                        f"{tuple(own[k].shape)}; pass an image DiT of the same --model, width, depth and channels")
    with torch.no_grad():
        for k in keys:
            own[k].copy_(ckpt.state_dict[k])
    return len(keys), note


def check_results_dir(results_dir: str) -> None:
    """--results-dir is, or can become, a folder: no part of it is an existing file (checked before anything
    is read or written, instead of a NotADirectoryError when the first cache or checkpoint is written)."""
    path = Path(results_dir)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"--results-dir {results_dir}: {p} is a file, not a folder; choose another --results-dir")
            return


def find_resume(config: TrainConfig, run_dir: Path, resume: str | None, accelerator=None) -> Path | None:
    """The checkpoint to continue from: --resume, else the newest one of this run, else None.

    Decided on the main process and broadcast, so every process of a multi-node job resumes the
    same checkpoint even where the nodes' views of a shared file system differ for a moment (or
    refuses with the same message, instead of some processes waiting forever for the others)."""
    if accelerator is None or accelerator.num_processes == 1:
        return _find_resume(config, run_dir, resume)
    from accelerate.utils import broadcast_object_list

    decision = [None, None]  # (path, error message)
    if accelerator.is_main_process:
        try:
            found = _find_resume(config, run_dir, resume)
            decision = [None if found is None else str(found), None]
        except UserError as e:
            decision = [None, str(e)]
    path, error = broadcast_object_list(decision, from_process=0)
    if error is not None:
        raise UserError(error)
    return None if path is None else Path(path)


def _find_resume(config: TrainConfig, run_dir: Path, resume: str | None) -> Path | None:
    if resume:
        path = Path(resume)
        if not path.exists():
            raise UserError(f"--resume {resume} does not exist")
        if not (path / train_state.STATE_FILE).is_file():
            found = train_state.list_checkpoints(path)
            if not found:
                raise UserError(f"--resume {resume} is neither a checkpoint nor a run directory with checkpoints")
            path = found[-1][1]
    else:
        found = train_state.list_checkpoints(run_dir)
        if not found:
            return None
        path = found[-1][1]
    train_state.check_files(path)
    # Checkpoints written before the registry keys (and latent_norm) existed hold the defaults (dit, gaussian, scalar).
    recorded = train_state.read_state(path).get("config", {})
    saved = {"arch": TrainConfig.arch, "process": TrainConfig.process, "latent_norm": TrainConfig.latent_norm,
             **recorded}
    arch = get_architecture(config.arch)
    if saved["arch"] == config.arch and arch.saved_before is not None:
        saved.update(arch.saved_before(recorded))  # fields the run's architecture added since: their values then
    changed = sorted(k for k, v in config.to_dict().items()
                     if k not in RESUME_MAY_CHANGE and k != "run_name" and saved.get(k, v) != v)
    if changed:
        diffs = "; ".join(f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in changed)
        raise UserError(f"checkpoint {path} was trained with other settings ({diffs}); pass the same flags to resume "
                        f"it, or choose a new --run-name to start another run")
    if config.lr_schedule != "constant" and saved.get("max_steps", config.max_steps) != config.max_steps:
        # The cosine and linear schedules decay to 0 at max_steps: another max_steps would make the learning rate jump.
        step = train_state.read_state(path)["step"]
        old, new = (learning_rate(SimpleNamespace(**{**config.to_dict(), "max_steps": m}), step)
                    for m in (saved["max_steps"], config.max_steps))
        raise UserError(f"checkpoint {path} follows a {config.lr_schedule} schedule to --max-steps {saved['max_steps']}; resuming with "
                        f"--max-steps {config.max_steps} would make the learning rate jump from {old:.3g} to {new:.3g} "
                        f"at step {step}. Pass --max-steps {saved['max_steps']}, or start a new --run-name")
    return path


def start_run(run_dir: Path, config: TrainConfig, description: str) -> None:
    """Main process: create the run directory, write config.json (atomically), print the resolved config."""
    from dit.io.atomic import write_json

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", config.to_dict())
    print(f"run {run_dir}: {config.arch} network, {config.process} process; {description}")
    print(json.dumps(config.to_dict()))
