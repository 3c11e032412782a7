"""The process catalog (a dit.registry.Registry): key -> Process class (dit/processes/base.py has the contract).

The key travels with the architecture key: training config (`--process`), checkpoints and
exports ("process" and "process_config" in the metadata), evaluation JSON. Files written before
keys existed hold the Gaussian process, its settings under "diffusion".
"""

from __future__ import annotations

from dit.processes.base import Process
from dit.registry import SECTIONS, Registry

DEFAULT_PROCESS = "gaussian"  # what a checkpoint without a "process" key was trained with

PROCESSES: Registry[type[Process]] = Registry("process")


def register_process(cls: type[Process], replace: bool = False) -> type[Process]:
    """Register a Process subclass under its `key` (usable as a class decorator); its `section`'s fields
    must agree with every other registered section's."""
    owner = f"the {cls.key} process"
    SECTIONS.check(owner, cls.section)
    PROCESSES.register(cls.key, cls, replace)
    SECTIONS.record(owner, cls.section)
    return cls


def get_process(key: str) -> type[Process]:
    return PROCESSES.get(key)


def process_from_meta(meta: dict) -> Process:
    """The process a checkpoint's metadata records (older files: Gaussian, settings under "diffusion")."""
    cls = PROCESSES.get(meta.get("process", DEFAULT_PROCESS))
    return cls.from_meta(meta.get("process_config", meta.get("diffusion", {})))
