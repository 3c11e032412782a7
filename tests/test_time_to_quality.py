"""benchmarks/time_to_quality/time_to_quality.py end to end on a few steps: training through train.py, evaluation,
timing, the short-budget run, the two-stage bootstrap report; and a rerun redoes nothing."""

import json
import pytest

from dit.cli import run_cli
from dit.eval.tables import benchmark_module

ttq = benchmark_module("time_to_quality")
tables = benchmark_module("time_to_quality", "tables")


@pytest.mark.slow("trains two recipes, times them and scores every sampler through the real benchmark")
def test_micro_benchmark_table_plot_and_resume(tmp_path, capsys):
    out = tmp_path / "ttq"
    argv = ["--out", str(out), "--recipes", "R0", "R2", "--seeds", "0", "--max-steps", "4", "--grid", "2", "4",
            "--timing-steps", "50", "--timing-warmup", "0", "--timing-rounds", "1", "--num-samples", "10", "--fractions", "3",
            "--short-recipes", "R2", "--within-draws", "5", "--bootstrap", "20", "--classifier-steps", "50"]
    assert run_cli(ttq.main, argv) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    quality = [r for r in rows if r["kind"] == "quality"]
    # R0 with DDIM-50 at both grid steps and every 50-NFE sampler at the last; R2 with Euler-50 at both and
    # Heun-25 at the last; the short run.
    got = sorted((r["recipe"], r["sampler"], r["step"], r["budget"]) for r in quality)
    short = next(r["step"] for r in quality if r["budget"] == 3)
    assert got == sorted([("R0", "ddim", 2, None), ("R0", "ddim", 4, None), ("R0", "ddpm", 4, None),
                          ("R0", "dpm++", 4, None), ("R0", "unipc", 4, None), ("R2", "euler", 2, None),
                          ("R2", "euler", 4, None), ("R2", "heun", 4, None), ("R2", "euler", short, 3),
                          ("R2", "heun", short, 3)])
    assert all(len(r["draws"]["class_acc"]) == 5 and 0 <= r["class_acc"] <= 1 for r in quality)
    timing = {r["recipe"]: r for r in rows if r["kind"] == "timing"}
    assert set(timing) == {"R0", "R2"} and all(t["step_s"] > 0 for t in timing.values())
    assert short == max(1, int(4 * timing["R0"]["step_s"] / (3 * timing["R2"]["step_s"])))
    summary = tables.summarise(rows, 20, max_steps=4)
    # The target is R0 at its best 50-NFE sampler, not at DDIM (issue 31).
    assert summary["budget"]["target_class_acc"] == max(r["class_acc"] for r in quality if r["recipe"] == "R0"
                                                        and r["step"] == 4)
    for row in summary["table"]:
        assert row["class_acc_lo"] <= row["class_acc_hi"] and row["fd_shapes_lo"] <= row["fd_shapes_hi"]
    printed = capsys.readouterr().out
    assert (out / "time_to_quality.png").stat().st_size > 0 and "| recipe |" in printed and "reaches:" in printed
    # A rerun finds everything done: no new rows.
    assert run_cli(ttq.main, argv) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    assert all(r["judge_steps"] == 50 for r in quality)
    assert run_cli(ttq.main, [*argv[:2], "--timing-steps", "40", "--timing-warmup", "0"]) == 2  # no full interval
    assert run_cli(ttq.main, [*argv[:2], "--timing-steps", "100", "--timing-warmup", "30"]) == 2  # mid-interval
    assert run_cli(ttq.main, argv[:-2]) == 2  # rows scored by another judge: refused, nothing added
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
