"""Parameter and forward-GFLOP counts of the paper's models vs. the published numbers.

    python benchmarks/gflops.py [--csv out.csv]

Rows: the 12 presets at 256px (DiT Table 1 / Fig. 2), DiT-XL/2 at 512px (§5), and the four
conditioning variants of XL/2 (Table 4). GFLOPs are forward MACs at batch 1 (see dit/analysis/flops.py).
Models are built on the meta device, so this takes seconds on any machine.
"""

from __future__ import annotations

import csv
import sys

import torch

from dit.cli import ArgumentParser, run_cli
from dit.analysis.flops import PAPER, count_forward_macs, count_params
from dit.networks.dit import DiT

COLUMNS = ["model", "params", "paper_params", "params_rel_err", "gflops", "paper_gflops", "gflops_rel_err"]


def measure() -> list[dict]:
    rows = []
    for row in PAPER.values():
        with torch.device("meta"):  # no memory, no init arithmetic
            model = DiT.from_config(row.config())
        params, gflops = count_params(model), count_forward_macs(model) / 1e9
        rows.append({
            "model": row.label,
            "params": params,
            "paper_params": row.params if row.params_exact else f"{row.params / 1e6:.0f}M",
            "params_rel_err": params / row.params - 1,
            "gflops": gflops,
            "paper_gflops": row.gflops,
            "gflops_rel_err": gflops / row.gflops - 1,
        })
    return rows


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    rows = measure()
    print(f"{'model':<26}{'params':>14}{'paper':>14}{'rel.err':>9}{'GFLOPs':>10}{'paper':>9}{'rel.err':>9}")
    for r in rows:
        paper_p = f"{r['paper_params']:,}" if isinstance(r["paper_params"], int) else r["paper_params"]
        print(
            f"{r['model']:<26}{r['params']:>14,}{paper_p:>14}{r['params_rel_err']:>+9.3%}"
            f"{r['gflops']:>10.2f}{r['paper_gflops']:>9.2f}{r['gflops_rel_err']:>+9.3%}"
        )
    print(f"torch {torch.__version__}; GFLOPs = forward multiply-accumulates / 1e9, batch 1, no CFG doubling")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
