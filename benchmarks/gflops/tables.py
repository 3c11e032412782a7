"""RESULTS.md's table of benchmarks/gflops/gflops.py, from its results.jsonl."""

from __future__ import annotations

from pathlib import Path

from dit.eval.records import describe, read_rows
from dit.eval.tables import markdown_table


def tables(folder: Path) -> dict[str, str]:
    rows = read_rows(Path(folder) / "results.jsonl")

    def paper_params(r):
        return f"{r['paper_params']:,}" if isinstance(r["paper_params"], int) else r["paper_params"]

    table = markdown_table(
        ["model", "params", "paper", "rel. err", "GFLOPs", "paper", "rel. err"],
        [[r["model"], f"{r['params']:,}", paper_params(r), f"{r['params_rel_err']:+.3%}", f"{r['gflops']:.2f}",
          f"{r['paper_gflops']:.2f}", f"{r['gflops_rel_err']:+.3%}"] for r in rows], "lrrrrrr")
    return {"paper": f"Measured at {describe(rows)}.\n\n" + table}
