"""RESULTS.md's tables of benchmarks/vs_diffusers (our DiT against diffusers' DiTTransformer2DModel), from results.jsonl.

Each row holds every timed call of both implementations, taken in alternation. Images/s is the batch
over the median call; the ratio ours / diffusers is median(diffusers seconds) / median(ours seconds)
with a 95% paired percentile bootstrap over the calls (dit/eval/intervals.py `ratio_of_medians`):
an interval across 1 says the two are not told apart by this run.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from dit.eval.intervals import fmt_ci, ratio_of_medians
from dit.eval.records import describe, read_rows
from dit.eval.tables import markdown_table


def markdown(rows: list[dict]) -> str:
    out = []
    for compiled in sorted({r["compile"] for r in rows}):
        group = [r for r in rows if r["compile"] == compiled]
        body = []
        for r in group:
            ratio, ci = ratio_of_medians(r["diffusers_seconds"], r["ours_seconds"])
            body.append([r["model"], r["what"], f"{r['image_size']} px, batch {r['batch']}",
                         f"{r['batch'] / statistics.median(r['ours_seconds']):.2f}",
                         f"{r['batch'] / statistics.median(r['diffusers_seconds']):.2f}", fmt_ci(ratio, ci),
                         len(r["ours_seconds"]), f"{r['max_abs_output_diff']:.1e}"])
        out.append(f"{'Blocks compiled (torch.compile)' if compiled else 'Eager'}, fp32, diffusers "
                   f"{', '.join(sorted({r['diffusers'] for r in group}))}; {describe(group)}.\n\n" + markdown_table(
                       ["model", "step", "input", "ours img/s", "diffusers img/s", "ours / diffusers [95% CI]",
                        "calls", "max abs output diff"], body, "lllrrlrr"))
    return "\n".join(out)


def tables(folder: Path) -> dict[str, str]:
    return {"cpu": markdown([r for r in read_rows(Path(folder) / "results.jsonl") if "gpu" not in r["machine"]])}
