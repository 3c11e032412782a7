"""The training config's fields in one table: the common ones (dit/training/config.py's TrainConfig) and
each registered architecture's and process's section (`Architecture.section`, `Process.section`: a frozen
dataclass declared beside the registration).

The flags (dit/training/flags.py), the flat config of config.json and checkpoints (`TrainConfig.to_dict`)
and the refusal of another system's settings are all read off this table, so a plugin's section gets
its flags, and is refused without its --arch, as a built-in one. A field several sections declare (they
must declare it alike: dit/registry.py's SectionIndex) belongs to each of them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass

from dit.errors import UserError
from dit.networks import ARCHITECTURES, get_architecture, role_of
from dit.processes import PROCESSES, get_process
from dit.registry import section_fields

ARCHITECTURE, PROCESS = "architecture", "process"


@dataclass(frozen=True)
class Field:
    name: str
    kind: type  # what its flag parses to: int, float, bool or str
    optional: bool  # None is a value (e.g. --hidden-size: None is the --model preset's)
    default: object
    owners: tuple[tuple[str, str], ...]  # (ARCHITECTURE or PROCESS, key) whose sections declare it; () if common

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def systems() -> list[tuple[str, str, type | None]]:
    """(ARCHITECTURE or PROCESS, key, section) of every registered architecture, then every process."""
    return ([(ARCHITECTURE, k, get_architecture(k).section) for k in ARCHITECTURES.keys()]
            + [(PROCESS, k, get_process(k).section) for k in PROCESSES.keys()])


_tables: dict[tuple, dict[str, Field]] = {}


def field_table(common: type) -> dict[str, Field]:
    """Every training field by name: `common`'s (a dataclass) in order, then each section's in registry order."""
    registered = tuple(systems())
    key = (common, registered)
    if key not in _tables:
        hints = typing.get_type_hints(common)
        table = {f.name: _field(f.name, hints[f.name], f.default, ()) for f in dataclasses.fields(common)}
        for kind, name, section in registered:
            for field, (hint, default) in section_fields(section).items():
                if field in table and not table[field].owners:
                    raise ValueError(f"the {name} {kind}'s config section declares {field!r}, a common training "
                                     "field (dit/training/config.py): give it another name")
                owners = table[field].owners if field in table else ()
                table[field] = _field(field, hint, default, (*owners, (kind, name)))
        _tables.clear()  # one registry state at a time
        _tables[key] = table
    return _tables[key]


def _field(name: str, hint, default, owners) -> Field:
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    return Field(name, args[0], isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint), default,
                 owners)


def coerce(field: Field, value):
    """Check one value against its field's type; ints are accepted for floats."""
    if value is None and field.optional:
        return None
    want = field.kind
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise UserError(f"{field.flag} must be of type {want.__name__}, got {value!r}")
    return value


def refuse_foreign(values: dict, table: dict[str, Field], arch: str, process: str) -> None:
    """A changed field of a section that neither the run's architecture nor its process declares, or one
    its architecture `ignores` (all its process's, where it ignores the process), is a one-line UserError
    that says whose it is (process fields first)."""
    ignores = get_architecture(arch).ignores
    chosen = {(ARCHITECTURE, arch)} | (set() if "process" in ignores else {(PROCESS, process)})  # a tokenizer has none
    for name in ignores:
        if values[name] != table[name].default:
            raise UserError(f"{table[name].flag} is not a setting of the {arch} architecture: drop it")
    for kind in (PROCESS, ARCHITECTURE):
        for f in table.values():
            if any(k == kind for k, _ in f.owners) and not chosen & set(f.owners) and values[f.name] != f.default:
                raise UserError(_whose(f, arch, "process" in ignores))


def _whose(f: Field, arch: str, no_process: bool) -> str:
    archs = [k for kind, k in f.owners if kind == ARCHITECTURE]
    processes = [k for kind, k in f.owners if kind == PROCESS]
    what = " and ".join(_names(keys, kind) for keys, kind in ((archs, ARCHITECTURE), (processes, PROCESS)) if keys)
    fits = [f"--arch {k}" for k in archs if role_of(k) == role_of(arch)]
    fits += [] if no_process else [f"--process {k}" for k in processes]
    if fits:
        return f"{f.flag} is a setting of {what}: add {' or '.join(fits)}"
    if archs:  # e.g. a generator's flag given to a tokenizer
        what = f"{' and '.join(sorted({f'{role_of(k)}s' for k in archs}))} ({what})"
    return f"{f.flag} is a setting of {what}; the {arch} architecture does not read it: drop it"


def _names(keys: list[str], kind: str) -> str:
    """the dit architecture; the dit and video-dit architectures; the a, b and c architectures."""
    listed = keys[0] if len(keys) == 1 else f"{', '.join(keys[:-1])} and {keys[-1]}"
    return f"the {listed} {kind}{'s' if len(keys) > 1 else ''}"


def check_sections(values: dict, arch: str, process: str) -> None:
    """The run's own sections check their values (their __post_init__: ranges, combinations)."""
    for section in (get_architecture(arch).section, get_process(process).section):
        if section is not None:
            section(**{name: values[name] for name in section_fields(section)})
