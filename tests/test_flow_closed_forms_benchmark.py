"""benchmarks/flow_closed_forms end to end on 2,000 samples: every sampler row and the Monte-Carlo
row land in results.jsonl with provenance, and tables.py renders them. The oracle itself
(dit/analysis/gaussian_mixture.py) is checked in tests/test_flow.py."""

import json

import torch

from dit.cli import run_cli
from dit.eval.tables import benchmark_module

bench = benchmark_module("flow_closed_forms")
tables = benchmark_module("flow_closed_forms", "tables")


def test_monte_carlo_draws_are_the_starts_scaled_per_component():
    # the Monte-Carlo draws are the starts' normal draws, each scaled and shifted by one component
    x, z = bench.exact_samples(1000, 3), bench.prior(1000, 3)
    fits = torch.stack([((x - m) / s - z).abs().amax(1) < 1e-12 for m, s in zip(bench.MEANS, bench.STDS)], 1)
    assert (fits.sum(1) == 1).all() and 0.65 < fits[:, 1].double().mean() < 0.75


def test_micro_run_writes_rows_and_the_table(tmp_path, capsys):
    assert run_cli(bench.main, ["--samples", "2000", "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["sampler"], r["steps"]) for r in rows] == [
        ("euler", 200), ("euler", 400), ("euler", 1000), ("heun", 100), ("dopri5", None), (bench.MONTE_CARLO, None)]
    assert [r["nfe"] for r in rows[:4]] == [200, 400, 1000, 200] and 10 < rows[4]["nfe"] < 1000 and rows[5]["nfe"] == 0
    for r in rows:
        assert r["samples"] == 2000 and r["commit"] and r["machine"]["threads"] >= 1 and "command" in r
        assert len(r["var_rel_err"]) == len(r["mean_rel_err"]) == 2
        assert all(abs(e) < 0.1 for e in r["var_rel_err"] + r["mean_rel_err"])  # 2,000 samples: a few % noise
    # dopri5 (tight tolerances) and Heun agree far closer than either to the truth: the same starts
    assert max(abs(a - b) for a, b in zip(rows[3]["var_rel_err"], rows[4]["var_rel_err"])) < 2e-3

    table = tables.tables(tmp_path)["samplers"]
    lines = table.splitlines()
    assert lines[0].startswith("Measured at commit ") and "2,000 samples" in lines[0]
    assert lines[2] == ("| sampler (linear path, velocity) | NFE | variance, relative error (dim 1, dim 2) "
                        "| mean, relative error (dim 1, dim 2) |")
    body = [line.split(" | ")[0].lstrip("| ") for line in lines[4:]]
    assert body == ["Euler, 200 steps", "Euler, 400 steps", "Euler, 1,000 steps", "Heun, 100 steps",
                    "dopri5, atol = rtol = 1e-6", "exact samples of the mixture (Monte-Carlo floor)"]
    euler = lines[4].split(" | ")
    assert euler[1] == "200" and euler[2] == ", ".join(tables.percent(e) for e in rows[0]["var_rel_err"])
    assert [tables.percent(e) for e in (-0.011762, 1.7e-5, -4.0e-6, 0.0)] == ["-1.176%", "+0.002%", "-0.0004%", "+0.000%"]


def test_bad_input_is_one_line(tmp_path, capsys):
    assert run_cli(bench.main, ["--samples", "1", "--out", str(tmp_path)]) == 2
    assert run_cli(bench.main, ["--samples", "many"]) == 2
    (tmp_path / "file").write_text("")
    assert run_cli(bench.main, ["--samples", "10", "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 3 and not (tmp_path / "results.jsonl").exists()
