"""Registries: a key that travels (config, checkpoint, export, --out JSON) -> the thing it names.

The `Registry` class here is what each kind of thing keeps its catalog in: architectures
(dit/networks/catalog.py), processes (dit/processes/catalog.py), autoencoder kinds
(dit/autoencoders/catalog.py) and samplers, per process (dit/sampling/catalog.py). A key is looked up, never guessed: an unknown key is a UserError that
lists the known ones.

Code outside the package registers its own entries by being imported. The scripts import every
module named in the environment variable DIT_PLUGINS (comma-separated module names or paths to
.py files) before they read any key, so `DIT_PLUGINS=my_arch.py python train.py --arch mlp`
trains an architecture no library file names.

An architecture or process may declare a config section (a frozen dataclass of the training fields
only it reads; dit/training/config.py makes each a flag). `SECTIONS` records them as they are
registered: two sections may share a field only if they declare it alike, else registration fails.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Generic, TypeVar

from dit.errors import UserError

T = TypeVar("T")
PLUGINS_ENV = "DIT_PLUGINS"


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, key: str, entry: T, replace: bool = False) -> T:
        if not isinstance(key, str) or not key:
            raise ValueError(f"a {self.kind} key must be a non-empty string, got {key!r}")
        if key in self._entries and not replace and self._entries[key] is not entry:
            raise ValueError(f"{self.kind} {key!r} is already registered (pass replace=True to override it)")
        self._entries[key] = entry
        return entry

    def get(self, key: str) -> T:
        if key not in self._entries:
            load_plugins()
        if key not in self._entries:
            raise UserError(f"unknown {self.kind} {key!r}; choose one of {', '.join(self.keys()) or 'none'} "
                            f"(or register it in a module named in ${PLUGINS_ENV})")
        return self._entries[key]

    def keys(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries


_loaded: set[str] = set()


def load_plugins(spec: str | None = None) -> None:
    """Import the modules named in $DIT_PLUGINS (or `spec`) once each; they register themselves."""
    spec = os.environ.get(PLUGINS_ENV, "") if spec is None else spec
    for name in (s.strip() for s in spec.split(",")):
        if not name or name in _loaded:
            continue
        _loaded.add(name)
        try:
            if name.endswith(".py"):
                path = Path(name).expanduser().resolve()
                if not path.is_file():
                    raise UserError(f"${PLUGINS_ENV} names {name}, which does not exist")
                module_name = f"dit_plugin_{path.stem}"
                module_spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[module_name] = module
                module_spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except ImportError as e:
            _loaded.discard(name)
            raise UserError(f"cannot import {name!r} named in ${PLUGINS_ENV}: {e}") from None


# --- config sections: the training-config fields an architecture or a process declares beside its registration ---

SECTION_TYPES = (int, float, bool, str)  # what a flag parses to; `T | None` is allowed too


def section_fields(section: type | None) -> dict[str, tuple[object, object]]:
    """A section's fields: name -> (type annotation, default). A section is a frozen dataclass whose every
    field has a plain default (dit/training/config.py makes each a flag); anything else is a ValueError."""
    import dataclasses
    import types
    import typing

    if section is None:
        return {}
    if not dataclasses.is_dataclass(section) or not section.__dataclass_params__.frozen:
        raise ValueError(f"a config section must be a frozen dataclass, got {section!r}")
    hints = typing.get_type_hints(section)
    out = {}
    for f in dataclasses.fields(section):
        hint = hints[f.name]
        args = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
        if f.default is dataclasses.MISSING or not (args - {type(None)}) <= set(SECTION_TYPES) or len(args - {type(None)}) != 1:
            raise ValueError(f"{section.__name__}.{f.name}: a section field needs a default and a type among int, "
                             "float, bool, str (or one of them | None)")
        out[f.name] = (hint, f.default)
    return out


class SectionIndex:
    """Which registered section declares each field. Sections may share a field (the codebook size of a
    tokenizer and of the process over its ids) only if they declare it identically: same type, same default."""

    def __init__(self):
        self._owners: dict[str, dict[str, tuple[object, object]]] = {}  # owner -> its fields

    def check(self, owner: str, section: type | None) -> None:
        """ValueError where `section` declares a field otherwise than another owner's section does."""
        for name, declared in section_fields(section).items():
            for other, fields in self._owners.items():
                if other != owner and name in fields and fields[name] != declared:
                    (hint, default), (their_hint, theirs) = declared, fields[name]
                    raise ValueError(f"{owner}'s config section declares {name}: {hint} = {default!r}, but {other}'s "
                                     f"declares {name}: {their_hint} = {theirs!r}; a shared field must be declared "
                                     "identically (or given another name)")

    def record(self, owner: str, section: type | None) -> None:
        self._owners[owner] = section_fields(section)


SECTIONS = SectionIndex()
