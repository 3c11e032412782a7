"""benchmarks/ssm_vs_dit/ssm_vs_dit.py end to end at toy size: three train.py runs, the judge, the table, resume, --report."""

import json

import pytest
from test_cli_errors import script

from dit.cli import run_cli
from dit.errors import UserError

TOY = ["--max-steps", "2", "--samples", "20", "--steps", "2", "--bootstrap", "50", "--classifier-steps", "20",
       "--train-args", "--shapes-images 64"]


@pytest.mark.slow("trains three networks through train.py, scores and times them")
def test_toy_benchmark_table_resume_and_report(tmp_path, capsys):
    from dit.analysis.flops import forward_cost
    from dit.networks.diffussm import DiffuSSM, preset_config

    bench = script("benchmarks/ssm_vs_dit/ssm_vs_dit.py")
    out = tmp_path / "svd"
    argv = ["--out", str(out), "--cache", str(tmp_path / "cache"), *TOY]
    assert run_cli(bench.main, argv) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["kind"], r["model"]) for r in rows) == sorted(
        (kind, m) for kind in ("train", "quality") for m in ("dit", "ssm-p1", "ssm-p2"))
    train = {r["model"]: r for r in rows if r["kind"] == "train"}
    # Equal parameters (within 3%), and the DiffuSSM's GFLOPs carry the analytic S4D term.
    assert train["dit"]["params"] == 1_284_120 and train["ssm-p1"]["params"] == 1_244_286
    cost = forward_cost(DiffuSSM(preset_config("DiffuSSM-CPU/1", input_size=16, in_channels=3, num_classes=10)))
    assert train["ssm-p1"]["gflops"] == cost.total / 1e9 and train["ssm-p1"]["gflops_s4d"] == cost.analytic / 1e9 > 0
    assert train["dit"]["gflops_s4d"] == 0 and all(r["step_s"] > 0 and r["max_steps"] == 2 for r in train.values())
    for r in rows:
        if r["kind"] == "quality":
            assert (out / r["scores"]).is_file() and r["samples"] == 20 and 0 <= r["class_acc"] <= 1
    summary = bench.summarise(out, rows, 50)
    assert [r["model"] for r in summary] == ["dit", "ssm-p1", "ssm-p2"]
    for r in summary:
        lo, hi = r["fd_shapes_ci"]
        assert lo <= r["fd_shapes"] <= hi
        if r["model"] != "dit":
            assert r["fd_ratio"] == pytest.approx(r["fd_shapes"] / summary[0]["fd_shapes"])
    printed = capsys.readouterr().out
    table = printed[printed.index("| model |"):]  # the table, last of what the run prints
    assert "| ssm-p1 | 1,244,286 |" in table and "| dit | 1,284,120 |" in table and "acc ratio" in table
    # Re-running finds every unit done; --report rebuilds the same table from results.jsonl alone.
    log = (out / "results.jsonl").read_bytes()
    assert run_cli(bench.main, argv) == 0 and (out / "results.jsonl").read_bytes() == log
    capsys.readouterr()
    assert run_cli(bench.main, ["--out", str(out), "--report", "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert printed[printed.index("| model |"):] == table
    # --time adds a short timing run per model, and the table's s/step comes from it.
    assert run_cli(bench.main, [*argv, "--time", "--time-steps", "3"]) == 0
    timing = {r["model"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
              if r["kind"] == "timing"}
    assert set(timing) == {"dit", "ssm-p1", "ssm-p2"} and all(r["step_s"] > 0 for r in timing.values())
    summary = bench.summarise(out, [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()], 50)
    assert {r["step_s_from"] for r in summary} == {"timing"}
    assert [r["step_s"] for r in summary] == [timing[m]["step_s"] for m in ("dit", "ssm-p1", "ssm-p2")]
    with pytest.raises(UserError, match="made with --samples 20"):
        bench.main(["--out", str(out), "--cache", str(tmp_path / "cache"), *TOY[:2], "--samples", "30", *TOY[4:]])
