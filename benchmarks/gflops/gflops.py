"""Parameter and forward-GFLOP counts of the paper's models vs. the published numbers.

    python benchmarks/gflops/gflops.py [--csv out.csv]            # also rewrites benchmarks/gflops/results.jsonl
    python benchmarks/gflops/gflops.py --arch diffussm [--csv out.csv]

--arch dit (default): the 12 presets at 256px (DiT Table 1 / Fig. 2), DiT-XL/2 at 512px (§5), and
the four conditioning variants of XL/2 (Table 4), against the published numbers.
--arch diffussm: the DiffuSSM presets at 256px (32x32x4 latents, 1000 classes) and the CPU preset
on the CPU demo's data (16x16x3 pixels, 10 classes), with the forward split as
dit/analysis/flops.py's forward_cost does: the matmuls and convolutions FlopCounterMode counts
(S4D layers stubbed out), the analytic S4D kernel generation and FFT convolution, and the total.
GFLOPs are forward MACs at batch 1 (see dit/analysis/flops.py). Models are built and counted on
the meta device (DiffuSSM-XL/1 included), so this takes seconds on any machine.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch

from dit.cli import ArgumentParser, run_cli
from dit.eval.records import write_rows
from dit.analysis.flops import PAPER, count_forward_macs, count_params, forward_cost
from dit.networks import diffussm
from dit.networks.dit import DiT

COLUMNS = ["model", "params", "paper_params", "params_rel_err", "gflops", "paper_gflops", "gflops_rel_err"]
SSM_COLUMNS = ["model", "input", "params", "counted_gmacs", "kernel_gmacs", "fft_gmacs", "fft_kernel_gmacs",
               "total_gmacs"]
IMAGENET_256 = dict(input_size=32, in_channels=4, num_classes=1000)  # 256 px through the 8x VAE
CPU_DEMO = dict(input_size=16, in_channels=3, num_classes=10)  # 16 px shapes in pixel space


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


def measure_diffussm() -> list[dict]:
    """Every DiffuSSM preset and patch at 256 px, then the CPU preset on the CPU demo's data."""
    grid = [(f"{base}/{p}", IMAGENET_256) for base in diffussm.PRESETS for p in diffussm.PATCH_SIZES]
    grid += [(f"DiffuSSM-CPU/{p}", CPU_DEMO) for p in diffussm.PATCH_SIZES]
    rows = []
    for name, data in grid:
        with torch.device("meta"):
            model = diffussm.DiffuSSM(diffussm.preset_config(name, **data))
        cost = forward_cost(model)
        rows.append({
            "model": name, "input": f"{data['input_size']}x{data['input_size']}x{data['in_channels']}, "
                                    f"{data['num_classes']} cl.",
            "params": count_params(model), "counted_gmacs": cost.counted / 1e9, "kernel_gmacs": cost.kernel / 1e9,
            "fft_gmacs": cost.fft / 1e9, "fft_kernel_gmacs": cost.analytic / 1e9, "total_gmacs": cost.total / 1e9,
        })
    return rows


def print_diffussm(rows: list[dict]) -> None:
    print(f"{'model':<16}{'input':<20}{'params':>14}{'counted':>10}{'kernel':>10}{'FFT':>9}{'FFT+kern':>10}"
          f"{'total':>10}")
    for r in rows:
        print(f"{r['model']:<16}{r['input']:<20}{r['params']:>14,}{r['counted_gmacs']:>10.3f}"
              f"{r['kernel_gmacs']:>10.3f}{r['fft_gmacs']:>9.3f}{r['fft_kernel_gmacs']:>10.3f}"
              f"{r['total_gmacs']:>10.3f}")
    print(f"torch {torch.__version__}; GMACs = forward multiply-accumulates / 1e9 (the paper's 'GFLOPs'), batch 1, "
          "no CFG doubling. counted: matmuls + convs seen by FlopCounterMode (S4D layers stubbed out); kernel: S4D "
          "kernel generation (once per forward, whatever the batch); FFT: S4D FFT convolutions, a real FFT of "
          "length n = 2.5 n log2 n FLOPs; MACs = FLOPs / 2 (dit/analysis/flops.py s4d_macs)")


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["dit", "diffussm"], default="dit")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent),
                        help="folder whose results.jsonl is rewritten with these rows (RESULTS.md's table; '' for none)")
    args = parser.parse_args(argv)
    if args.arch == "diffussm":
        rows = measure_diffussm()
        print_diffussm(rows)
        if args.csv:
            write_csv(args.csv, rows, SSM_COLUMNS)
        return
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
        write_csv(args.csv, rows, COLUMNS)
    if args.out:
        write_rows(Path(args.out) / "results.jsonl", rows)


if __name__ == "__main__":
    sys.exit(run_cli(main))
