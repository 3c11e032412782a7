"""DiT: Scalable Diffusion Models with Transformers (Peebles & Xie, 2022).

`from dit import DiT, DiT_models` works as in the public repository. Submodules are
imported lazily so that `import dit` stays cheap.
"""

import importlib

_EXPORTS = {
    "DiT": "dit.model",
    "DiT_models": "dit.model",
    "ModelConfig": "dit.config",
    "GaussianDiffusion": "dit.diffusion",
    "UserError": "dit.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dit' has no attribute {name!r}")
