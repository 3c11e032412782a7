"""Samplers, registered per process, and `run_sampler`, the one entry point that calls them.

A sampler is a function over a denoiser:
    sampler(denoiser, process, x_T, steps, noise=None, progress=False, **options) -> x_0
`denoiser(x, t)` returns the network's output at network time t (the process's `network_time`);
guidance wraps it (dit/sampling/guidance.py). `noise` is None (global RNG), torch.randn_like or a
PerSampleNoise (dit/sampling/noise.py). A new process registers its samplers under its own key.

A sampler may carry `sampler.check(process, steps)`, which raises a UserError for a step count it
cannot take: scripts call `check_sampler` while they validate flags, before any work starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from dit.errors import UserError
from dit.registry import Registry

Sampler = Callable[..., object]

_BY_PROCESS: dict[str, Registry[Sampler]] = {}
_DEFAULT: dict[str, str] = {}  # process key -> the sampler previews and sample.py use unless told


def register_sampler(process_key: str, name: str, fn: Sampler, replace: bool = False, default: bool = False) -> Sampler:
    """Register `fn` as sampler `name` of the process `process_key`; `default` (or being the first)
    makes it the one used when none is named."""
    table = _BY_PROCESS.setdefault(process_key, Registry(f"sampler of the {process_key!r} process"))
    table.register(name, fn, replace)
    if default or process_key not in _DEFAULT:
        _DEFAULT[process_key] = name
    return fn


def default_sampler(process_key: str) -> str:
    if process_key not in _DEFAULT:
        raise UserError(f"no samplers are registered for the {process_key!r} process")
    return _DEFAULT[process_key]


def sampler_names(process_key: str) -> list[str]:
    table = _BY_PROCESS.get(process_key)
    return table.keys() if table else []


def get_sampler(process_key: str, name: str) -> Sampler:
    if process_key not in _BY_PROCESS:
        raise UserError(f"no samplers are registered for the {process_key!r} process")
    return _BY_PROCESS[process_key].get(name)


def check_sampler(process, name: str, steps: int, **options) -> None:
    """Refuse an unknown sampler of `process`, a step count it cannot take, or an option it does
    not have (say, --eta for a flow sampler), in one line."""
    if name not in sampler_names(process.key):
        raise UserError(f"unknown sampler {name!r} for the {process.key!r} process; choose one of "
                        f"{', '.join(sampler_names(process.key)) or 'none'}")
    fn = get_sampler(process.key, name)
    accepted = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    fixed = {"denoiser", "process", "diffusion", "x_T", "steps", "noise", "progress"}
    for option in options:
        if option in fixed or not (takes_any or option in accepted):
            own = [p for p in accepted if p not in fixed]
            raise UserError(f"the {name!r} sampler of the {process.key!r} process has no option {option!r}"
                            f" (its options: {', '.join(own) or 'none'})")
    check = getattr(fn, "check", None)
    if check is not None:
        check(process, steps)


def run_sampler(denoiser, process, x_T, sampler: str, steps: int | None = None, noise=None, progress: bool = False,
                **options):
    """Sample with `sampler` (a name registered for `process.key`) from x_T in `steps` (None: the process's default)."""
    steps = process.default_sampling_steps if steps is None else steps
    return get_sampler(process.key, sampler)(denoiser, process, x_T, steps, noise, progress, **options)


def option_defaults(option: str) -> dict[str, object]:
    """"process/sampler" -> the default of keyword `option` for every registered sampler that takes it:
    the one place command-line help reads sampler defaults from (they live in the samplers' signatures)."""
    found = {}
    for process_key, table in sorted(_BY_PROCESS.items()):
        for name in table.keys():
            param = inspect.signature(table.get(name)).parameters.get(option)
            if param is not None and param.default is not inspect.Parameter.empty:
                found[f"{process_key} {name}"] = param.default
    return found


def option_help(option: str) -> str:
    """`option_defaults` in words for a --flag's help: "flow euler, flow heun: default 1"."""
    by_default: dict[str, list[str]] = {}
    for where, default in option_defaults(option).items():
        by_default.setdefault(repr(default) if isinstance(default, str) else f"{default:g}"
                              if isinstance(default, float) else str(default), []).append(where)
    return "; ".join(f"{', '.join(wheres)}: default {d}" for d, wheres in by_default.items()) or "no sampler takes it"
