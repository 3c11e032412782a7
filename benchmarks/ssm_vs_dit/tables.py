"""RESULTS.md's table of benchmarks/ssm_vs_dit (DiffuSSM against the CPU-demo DiT), from results.jsonl.

Intervals: 95% bootstrap over samples, paired across models for the ratios, recomputed from the
committed per-sample judge output in scores/. Targets are "met" only when the whole interval clears
them (dit/eval/intervals.py `verdict`).
"""

from __future__ import annotations

from pathlib import Path

from dit.eval.intervals import verdict
from dit.eval.records import read_rows
from dit.eval.tables import benchmark_module, markdown_table

TARGETS = {"acc_ratio": (">=", 0.8), "fd_ratio": ("<=", 1.25)}
CFG = 3.0
RESAMPLES = 1000


def markdown(rows: list[dict]) -> str:
    def cell(r, k, fmt=".3f"):
        if r.get(k) is None:
            return "-"
        ci = r.get(f"{k}_ci")
        return f"{r[k]:{fmt}}" + (f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else "")

    def targets(r):
        if r.get("acc_ratio") is None and r.get("fd_ratio") is None:
            return "(baseline)"
        return ", ".join(verdict(r[f"{k}_ci"], *TARGETS[k]) if r.get(f"{k}_ci") else "undefined" for k in TARGETS)

    first = rows[0]
    head = (f"{first['max_steps']:,} training steps each (cpu-demo recipe), {first['samples']:,} samples (seeds "
            f"0..{first['samples'] - 1}, balanced labels), DDIM-{first['steps']}, cfg {CFG:g}; 95% bootstrap intervals "
            "(paired across models) recomputed from the committed per-sample scores; targets: acc ratio >= 0.8, "
            "FD ratio <= 1.25, met when the whole interval clears them.\n\n")
    return head + markdown_table(
        ["model", "params", "GFLOPs/img (counted + S4D)", "s/step", "class acc", "fd_shapes", "acc ratio", "FD ratio",
         "targets (acc, FD)"],
        [[r["model"], f"{r['params']:,}", f"{r['gflops']:.4f} ({r['gflops_counted']:.4f} + {r['gflops_s4d']:.4f})",
          f"{r['step_s']:.3f}", cell(r, "class_acc"), cell(r, "fd_shapes", ".2f"), cell(r, "acc_ratio"),
          cell(r, "fd_ratio"), targets(r)] for r in rows], "lrlrlllll")


def tables(folder: Path) -> dict[str, str]:
    rows = read_rows(Path(folder) / "results.jsonl")
    return {"models": markdown(benchmark_module("ssm_vs_dit").summarise(Path(folder), rows, RESAMPLES))}
