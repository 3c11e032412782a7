"""DiT: Scalable Diffusion Models with Transformers (Peebles & Xie, 2022), and a family of
diffusion systems on one set of contracts.

The package, by layer (each imports only from the layers before it; tests/test_layout.py checks):
    errors, cli, registry, precision, dist   shared plumbing
    networks/      pure functions (x, t, cond) -> output; the architecture registry
    processes/     time, noise, loss and output conversion; the process registry
    autoencoders/  pixels <-> what the network models (SD VAE, pixel space)
    sampling/      samplers over a denoiser, guidance wrappers, image generation
    io/            checkpoints and exports, the model zoo, diffusers conversion, image files
    data/          built-in shapes, image folders, the latent cache, the per-sample data stream
    training/      the training config, step, state, EMA, guard, parallelism, tracking
    eval/          FID tooling and the offline shapes judge
    analysis/      parameter and GFLOP counts

`from dit import DiT, DiT_models` works as in the public repository. Submodules are imported
lazily so that `import dit` stays cheap.
"""

import importlib

_EXPORTS = {
    "DiT": "dit.networks.dit",
    "DiT_models": "dit.networks.dit",
    "ModelConfig": "dit.networks.dit_config",
    "GaussianDiffusion": "dit.processes.gaussian",
    "UserError": "dit.errors",
    "ARCHITECTURES": "dit.networks",
    "PROCESSES": "dit.processes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dit' has no attribute {name!r}")
