"""Noise schedules of the Gaussian process and the respacing rule (which timesteps a sampler keeps).

T = 1000 discrete steps for DiT (and DDPM): the one place that number lives.
"""

import math

import torch

from dit.errors import UserError

TIMESTEPS = 1000  # T of DiT (and DDPM): every schedule default and the reference for rescaling
SCHEDULE = "linear"


def beta_schedule(name: str, T: int = TIMESTEPS) -> torch.Tensor:
    """Betas (T,) in float64. "linear" is DDPM's 1e-4..0.02 (rescaled so any T spans the same
    total noise), "cosine" is Improved DDPM eq. 17 with s = 0.008."""
    if name == "linear":
        scale = TIMESTEPS / T
        return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
    if name == "cosine":
        def alpha_bar(u):  # Improved DDPM eq. 17 (the normalisation f(0) cancels in the ratio)
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        # beta_t = 1 - abar(t+1)/abar(t); clipped at 0.999 to avoid the singularity at u = 1 (§3.2).
        betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)]
        return torch.tensor(betas, dtype=torch.float64)
    raise UserError(f"unknown beta schedule {name!r}; choose 'linear' or 'cosine'")


def space_timesteps(T: int, spec) -> list[int]:
    """Original timesteps kept by a respaced process, sorted ascending.

    spec: an int or "N" (N evenly spaced steps over [0, T-1]); "a,b,c" (the range is cut into equal
    sections with a, b, c steps each); "ddimN" (the fixed integer stride of the DDIM paper).
    """
    spec = str(spec).strip()
    if spec.startswith("ddim"):
        n = _parse_count(spec[4:], spec)
        # Public convention: the integer stride that yields exactly n steps starting at 0.
        for stride in range(1, T + 1):
            if len(range(0, T, stride)) == n:
                return list(range(0, T, stride))
        raise UserError(f"cannot take exactly {n} steps of {T} with an integer stride ({spec!r})")
    counts = [_parse_count(c, spec) for c in spec.split(",")]
    size, extra = divmod(T, len(counts))
    kept, start = [], 0
    for i, n in enumerate(counts):
        section = size + (1 if i < extra else 0)
        if n > section:
            raise UserError(f"cannot take {n} steps from a section of {section} timesteps ({spec!r})")
        # Stride (section-1)/(n-1) so each section's first AND last timestep are kept (250 of 1000
        # gives 0 ... 999). Accumulated in float exactly as the public code does, so the rounded
        # indices are identical to its.
        stride = (section - 1) / (n - 1) if n > 1 else 1
        pos = 0.0
        for _ in range(n):
            kept.append(start + round(pos))
            pos += stride
        start += section
    return sorted(set(kept))


def _parse_count(text: str, spec: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise UserError(f"bad timestep spacing {spec!r}: expected an int, 'a,b,c' or 'ddimN'") from None
    if n <= 0:
        raise UserError(f"bad timestep spacing {spec!r}: step counts must be positive")
    return n
