"""Read every kind of DiT checkpoint into one model, and write our inference export.

Kinds understood by `load_weights(spec)`:
- a manifest name (models/manifest.json, e.g. "DiT-XL-2-256x256"): downloaded, sha256-checked;
- the public repo's `.pt`: a plain state dict, or its training checkpoint {"model", "ema", ...}
  (EMA weights are used, as the public sample.py does);
- our export: a `.safetensors` file whose metadata holds the run config (see `save_export`),
  or a directory holding one: a training run (`export.safetensors`, the newest EMA weights) or
  one of its checkpoints (`checkpoints/step_*/ema.safetensors`);
- a diffusers directory: a DiTPipeline (model_index.json + transformer/) or a bare
  DiTTransformer2DModel directory.
Pickles are only ever read with `torch.load(weights_only=True)`, which refuses any object that
is not a tensor or plain container, so a malicious file cannot run code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from dit.errors import UserError
from dit.io import zoo
from dit.io.atomic import atomic_path
from dit.io.diffusers_transformer import config_from_diffusers, from_diffusers
from dit.io.diffusers_pipeline import pipeline_meta
from dit.networks import DEFAULT_ARCH, get_architecture
from dit.networks.dit_config import preset_config
from dit.processes import DEFAULT_PROCESS

EXPORT_KEY = "dit"  # safetensors metadata key holding the JSON run config (keys below)
# Looked for, in order, in a directory: a run's export, a training checkpoint's EMA, bare weights.
EXPORT_NAMES = ("export.safetensors", "ema.safetensors", "model.safetensors")


@dataclass
class Checkpoint:
    """Weights plus what is known about how they were trained.

    meta holds "arch" and "process" (the registry keys; files written before keys existed are
    "dit" and "gaussian"), "process_config" (older files: "diffusion"), image_size, vae, ...
    """

    state_dict: dict[str, torch.Tensor]
    config: object | None  # the architecture's config; None when the file does not say (public .pt)
    source: str
    meta: dict = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return self.meta.get("arch", DEFAULT_ARCH)

    @property
    def process(self) -> str:
        return self.meta.get("process", DEFAULT_PROCESS)


def save_export(path: str | os.PathLike, model: torch.nn.Module, arch: str = DEFAULT_ARCH,
                process: str = DEFAULT_PROCESS, **meta) -> None:
    """Slim inference export: weights in safetensors; the architecture and process keys, the
    network config (under "model") and `meta` (process_config, image_size, vae, ...) in its header. Atomic."""
    path = Path(path)
    header = {EXPORT_KEY: json.dumps({"arch": arch, "process": process, "model": model.config.to_dict(), **meta})}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def _header_text(path: Path) -> str | None:
    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get(EXPORT_KEY)


def read_export_header(path: str | os.PathLike) -> dict | None:
    """The JSON metadata of our safetensors export at `path` (what `save_export` wrote: "arch",
    "process", "model", ...) without reading its tensors; None if it has none or is not one."""
    try:
        text = _header_text(Path(path))
    except (SafetensorError, OSError):
        return None
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def _read_safetensors(path: Path) -> Checkpoint:
    try:
        header = _header_text(path)
        sd = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from None
    meta = json.loads(header) if header else {}
    if "model" in meta:  # an export written before the keys existed holds a DiT trained with Gaussian diffusion
        meta.setdefault("arch", DEFAULT_ARCH)
        meta.setdefault("process", DEFAULT_PROCESS)
    config = get_architecture(meta["arch"]).config_from_dict(meta.pop("model")) if "model" in meta else None
    return Checkpoint(sd, config, str(path), meta)


def _read_pickle(path: Path) -> Checkpoint:
    try:
        # The public training script stores its argparse Namespace next to the weights.
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says what matters
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for bad bytes; all mean "cannot read"
        text = str(e)
        with open(path, "rb") as f:
            magic = f.read(2)
        # A torch.save zip ("PK") or a pickle stream (protocol header 0x80) that the safe unpickler read
        # and refused: it holds objects (or instructions) beyond tensors and plain containers.
        pickled = magic == b"PK" or magic[:1] == b"\x80"
        if pickled and isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in text:
            # The safe unpickler read a valid pickle and refused something in it (an object, a code path).
            lines = [ln.strip() for ln in text.splitlines()]
            detail = next((ln.split("error:", 1)[-1].strip() for ln in lines if "Unsupported" in ln), "")
            detail = detail.split(". ")[0] or "an object outside the allowed tensors and containers"
            raise UserError(f"{path} holds Python objects that safe loading refuses ({detail[:160]}); only load "
                            f"files you trust, and convert them to a plain state dict or safetensors") from None
        reason = text.strip().splitlines()[0][:200] if text.strip() else type(e).__name__
        raise UserError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {reason}") from None
    if isinstance(obj, dict) and "ema" in obj:
        obj = obj["ema"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} holds no DiT state dict (expected a mapping of parameter names to tensors)")
    return Checkpoint(obj, None, str(path))


def _read_diffusers(path: Path) -> Checkpoint:
    # A pipeline also says how to sample (its scheduler's betas, its VAE, the image size): that goes
    # into meta, so sample.py reads the pipeline as the model, process and VAE it was exported from.
    root = path if (path / "model_index.json").is_file() else None
    if root is not None:
        path = path / "transformer"
    cfg = json.loads((path / "config.json").read_text())
    config = config_from_diffusers(cfg)
    sd = {}
    for f in _diffusers_weights(path):
        sd.update(_read_safetensors(f).state_dict if f.suffix == ".safetensors" else _read_pickle(f).state_dict)
    meta = pipeline_meta(root, config) if root is not None else {"format": "diffusers"}
    return Checkpoint(from_diffusers(sd, config.depth, config.conditioning, config.num_classes), config, str(path), meta)


def _diffusers_weights(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not files:
        raise UserError(f"{path} has a diffusers config.json but no weights file")
    return files


def locate(spec: str) -> tuple[str, Path]:
    """What kind of checkpoint `spec` names and where it is: ("manifest" | "diffusers" |
    "safetensors" | "pickle", path). The one lookup order load_weights and weights_files share."""
    if spec in zoo.manifest():
        return "manifest", zoo.resolve(spec)[0]
    path = Path(spec).expanduser()
    if not path.exists():
        names = ", ".join(zoo.manifest()) or "none"
        raise UserError(f"checkpoint '{spec}' not found: give an existing file or directory, or a manifest name ({names})")
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return "diffusers", path
        for name in EXPORT_NAMES:  # before config.json: a training run directory also has one
            if (path / name).is_file():
                return "safetensors", path / name
        if (path / "config.json").is_file():
            return "diffusers", path
        raise UserError(
            f"{path} is a directory without a DiT export ({' or '.join(EXPORT_NAMES)}) or a diffusers config.json"
        )
    return ("safetensors" if path.suffix == ".safetensors" else "pickle"), path


def load_weights(spec: str) -> Checkpoint:
    """Read checkpoint `spec` (a path or a manifest name) without building a model."""
    kind, path = locate(spec)
    if kind == "manifest":
        entry = zoo.manifest(feature_extractors=True)[spec]
        ckpt = _read_pickle(path)
        cfg = dict(entry["config"])
        ckpt.config = preset_config(cfg.pop("preset"), **cfg)
        ckpt.meta.update({"image_size": entry.get("image_size"), "vae": entry.get("vae"),
                          "process": entry.get("process", DEFAULT_PROCESS), "process_config": entry.get("process_config", {})})
        return ckpt
    return {"diffusers": _read_diffusers, "safetensors": _read_safetensors, "pickle": _read_pickle}[kind](path)


def check_fit(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str, arch: str = DEFAULT_ARCH) -> None:
    """Raise one UserError naming the keys that do not fit instead of torch's multi-page report."""
    spec = get_architecture(arch)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("with another shape (checkpoint vs model)", shapes)):
        if items:
            parts.append(f"{len(items)} {label}: {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}")
    hint = ""
    if spec.infer_config is not None:
        try:
            hint = f"; the checkpoint looks like {spec.describe(spec.infer_config(sd))}"
        except UserError:
            pass
    raise UserError(
        f"checkpoint {source} does not fit the model ({spec.describe(model.config)}): {'; '.join(parts)}{hint}. "
        "Pass the --model / --image-size / --num-classes it was trained with"
    )


def instantiate(ckpt: Checkpoint, config=None, device="cpu"):
    """Build the network of `ckpt`'s architecture and load it strictly.

    `config`, when given, is what the user asked for; a checkpoint that does not fit it is an error
    naming the keys. Without it the checkpoint's own config (or one inferred from its shapes) is used.
    """
    spec = get_architecture(ckpt.arch)
    config = config or ckpt.config
    if config is None:
        if spec.infer_config is None:
            raise UserError(f"checkpoint {ckpt.source} records no {ckpt.arch!r} config and none can be inferred")
        config = spec.infer_config(ckpt.state_dict)
    sd = dict(ckpt.state_dict)
    # First on the meta device (shapes only, no memory): metadata that disagrees with the tensors
    # (say, a hidden size of 65,536 claimed for a 55K-parameter file) is refused before it can
    # allocate gigabytes; the real network is built only once every shape fits.
    with torch.device("meta"):
        shadow = spec.build(config)
    diffusers_pos = "pos_embed" not in sd and ckpt.meta.get("format") == "diffusers"  # diffusers recomputes it
    check_fit(shadow, {**sd, "pos_embed": shadow.pos_embed} if diffusers_pos else sd, ckpt.source, ckpt.arch)
    model = spec.build(config)
    if diffusers_pos:
        sd["pos_embed"] = model.pos_embed.detach().clone()
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


def load_model(spec: str, config=None, device="cpu"):
    """`instantiate(load_weights(spec), ...)`: returns (model, Checkpoint)."""
    ckpt = load_weights(spec)
    return instantiate(ckpt, config, device), ckpt


def weights_files(spec: str) -> list[Path]:
    """The file(s) whose bytes load_weights(spec) reads as weights (through the same `locate`)."""
    kind, path = locate(spec)
    if kind != "diffusers":
        return [path]
    return _diffusers_weights(path / "transformer" if (path / "model_index.json").is_file() else path)


def checkpoint_sha256(spec: str) -> str:
    """sha256 of the weights file load_weights reads for `spec` (several files, as in a diffusers
    directory: the sha256 of their "<name> <sha256>" lines)."""
    files = weights_files(spec)
    if len(files) == 1:
        return zoo.sha256_of(files[0])
    return hashlib.sha256("".join(f"{f.name} {zoo.sha256_of(f)}\n" for f in files).encode()).hexdigest()
