"""The flow samplers against a closed form: a 2-D Gaussian mixture's exact velocity, integrated.

    python benchmarks/flow_closed_forms/flow_closed_forms.py     # rewrites benchmarks/flow_closed_forms/results.jsonl

Data: two Gaussians in 2-D (means (2, -1) and (5, 3), isotropic stds 0.5 and 0.8, weights 0.3 / 0.7),
whose marginal velocity under the linear path is known in closed form (the exact minimiser of the
velocity loss, dit/analysis/gaussian_mixture.py, the oracle of tests/test_flow.py too). The library's samplers
(dit.sampling.run_sampler on dit.processes.FlowMatching("linear", "velocity")) integrate it from
--samples starts drawn from N(0, I) with seed --seed (float64); each row is one sampler, with its
network evaluations (counted by wrapping the oracle) and the relative errors of the per-dimension
sample mean and variance against the mixture's exact moments. A last row takes --samples exact draws
of the mixture with the same seed (the same normal draws, scaled and shifted per component) through
the same statistics: the Monte-Carlo noise floor that the sampler rows carry too.

Deterministic (fixed seeds, no timing): each run replaces results.jsonl.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError
from dit.analysis import gaussian_mixture
from dit.eval.records import write_rows
from dit.processes import FlowMatching
from dit.sampling import run_sampler

MEANS, STDS, WEIGHTS = gaussian_mixture.MEANS, gaussian_mixture.STDS, gaussian_mixture.WEIGHTS

PATH, PREDICTION = "linear", "velocity"
# (row label, sampler, steps, extra sampler arguments); RESULTS.md's rows in order
SAMPLERS = [
    ("Euler", "euler", 200, {}),
    ("Euler", "euler", 400, {}),
    ("Euler", "euler", 1000, {}),
    ("Heun", "heun", 100, {}),
    ("dopri5", "dopri5", None, {"atol": 1e-6, "rtol": 1e-6}),
]
MONTE_CARLO = "exact mixture samples"


def prior(n: int, seed: int) -> torch.Tensor:
    """n starts from N(0, I) in 2-D, float64, from a generator seeded `seed`."""
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def exact_samples(n: int, seed: int) -> torch.Tensor:
    """n exact draws of the mixture: the same normal draws as `prior(n, seed)`, then each sample's
    component from the same generator (component 1 with probability WEIGHTS[1])."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    k = (torch.rand(n, generator=g, dtype=torch.float64) >= WEIGHTS[0]).long()
    return MEANS[k] + STDS[k, None] * z


def errors(x: torch.Tensor) -> dict:
    """Per-dimension sample mean and variance (unbiased) and their relative errors."""
    mean, var = gaussian_mixture.moments()
    got_mean, got_var = x.mean(0), x.var(0)
    return {"mean": got_mean.tolist(), "var": got_var.tolist(),
            "mean_rel_err": (got_mean / mean - 1).tolist(), "var_rel_err": (got_var / var - 1).tolist(),
            "exact_mean": mean.tolist(), "exact_var": var.tolist()}


def measure(samples: int, seed: int) -> list[dict]:
    process = FlowMatching(PATH, PREDICTION)
    net = gaussian_mixture.mixture_network(process)
    x_T = prior(samples, seed)
    rows = []
    for label, name, steps, kwargs in SAMPLERS:
        calls = [0]

        def counted(x, nt, cond=None):
            calls[0] += 1
            return net(x, nt, cond)

        start = time.perf_counter()
        x = run_sampler(counted, process, x_T, name, steps, **kwargs)
        print(f"{name} {steps}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        rows.append({"sampler": name, "label": label, "steps": steps, "nfe": calls[0], "options": kwargs,
                     "path": PATH, "prediction": PREDICTION, "samples": samples, "seed": seed, **errors(x)})
    rows.append({"sampler": MONTE_CARLO, "label": "exact samples of the mixture (Monte-Carlo floor)", "steps": None,
                 "nfe": 0, "options": {}, "path": None, "prediction": None, "samples": samples, "seed": seed,
                 **errors(exact_samples(samples, seed))})
    return rows


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=positive(int), default=200_000,
                        help="sampler starts and exact mixture draws (default 200,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starts and of the exact draws")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent),
                        help="folder whose results.jsonl is rewritten with these rows")
    args = parser.parse_args(argv)
    if args.samples < 2:
        raise UserError(f"--samples must be at least 2 (a variance needs two), got {args.samples}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: not a folder")
    rows = measure(args.samples, args.seed)
    write_rows(out / "results.jsonl", rows)
    print(f"wrote {out / 'results.jsonl'}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
