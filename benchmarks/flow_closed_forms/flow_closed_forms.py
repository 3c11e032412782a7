"""The flow samplers against a closed form: a 2-D Gaussian mixture's exact velocity, integrated.

    python benchmarks/flow_closed_forms/flow_closed_forms.py     # rewrites benchmarks/flow_closed_forms/results.jsonl

Data: two Gaussians in 2-D (means (2, -1) and (5, 3), isotropic stds 0.5 and 0.8, weights 0.3 / 0.7),
whose marginal velocity under the linear path is known in closed form (the exact minimiser of the
velocity loss, `mixture_network`, the oracle of tests/test_flow.py). The library's samplers
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
from dit.eval.records import ResultsLog
from dit.processes import FlowMatching
from dit.processes.paths import coefficients
from dit.sampling import run_sampler

MEANS = torch.tensor([[2.0, -1.0], [5.0, 3.0]], dtype=torch.float64)  # K components in d = 2
STDS = torch.tensor([0.5, 0.8], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)

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


def mixture_moments() -> tuple[torch.Tensor, torch.Tensor]:
    """The mixture's exact mean and variance per dimension."""
    mean = (WEIGHTS[:, None] * MEANS).sum(0)
    second = (WEIGHTS[:, None] * (MEANS ** 2 + STDS[:, None] ** 2)).sum(0)
    return mean, second - mean ** 2


def mixture_network(process):
    """The exact minimiser of the process's loss for mixture data: E[prediction | x_t], posterior-
    weighted over components (x_t | k ~ N(alpha mu_k, (alpha^2 s_k^2 + sigma^2) I)). The same
    formula as tests/test_flow.py's oracle (tests/test_flow_closed_forms_benchmark.py checks so)."""
    def net(x, nt, cond=None):
        x64 = x.double()
        t = nt.double() / process.time_scale
        a, da, s, ds = (c[:, None, None] for c in coefficients(process.path, t))  # (B, 1, 1)
        var = a ** 2 * STDS[None, :, None] ** 2 + s ** 2  # (B, K, 1)
        resid = x64[:, None, :] - a * MEANS[None]  # (B, K, d)
        logp = torch.log(WEIGHTS)[None] - 0.5 * (resid ** 2 / var).sum(-1) - x.shape[1] * 0.5 * torch.log(var[..., 0])
        w = torch.softmax(logp, dim=1)[..., None]  # (B, K, 1)
        data = (w * (MEANS[None] + a * STDS[None, :, None] ** 2 / var * resid)).sum(1)
        noise = (w * (s / var * resid)).sum(1)
        pred = {"velocity": da[:, 0] * data + ds[:, 0] * noise, "noise": noise, "score": -noise / s[:, 0]}
        return pred[process.prediction].to(x.dtype)
    return net


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
    mean, var = mixture_moments()
    got_mean, got_var = x.mean(0), x.var(0)
    return {"mean": got_mean.tolist(), "var": got_var.tolist(),
            "mean_rel_err": (got_mean / mean - 1).tolist(), "var_rel_err": (got_var / var - 1).tolist(),
            "exact_mean": mean.tolist(), "exact_var": var.tolist()}


def measure(samples: int, seed: int) -> list[dict]:
    process = FlowMatching(PATH, PREDICTION)
    net = mixture_network(process)
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


def write_rows(path: Path, rows: list[dict]) -> None:
    """The rows are deterministic: each run replaces the file (with the commit and machine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    log = ResultsLog(tmp)
    for r in rows:
        log.add(**r)
    tmp.replace(path)


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
