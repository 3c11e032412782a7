"""benchmarks/cpu_demo/cpu_demo.py at toy size: both recipes trained through train.py (2 steps), sampled,
judged, logged; the table; a rerun redoes nothing; bad input refused before any work."""

import json

import numpy as np
import pytest
from PIL import Image

from dit.cli import run_cli
from dit.eval.intervals import paired_difference
from dit.eval.tables import benchmark_module

demo = benchmark_module("cpu_demo")
tables = benchmark_module("cpu_demo", "tables")


@pytest.mark.slow("trains both recipes through train.py (two subprocesses, ~30 s each on a shared core) and a 50-step judge")
def test_toy_demo_rows_scores_grid_table_and_resume(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--max-steps", "2", "--num-samples", "20", "--classifier-steps", "50"]
    assert run_cli(demo.main, argv) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    train = {r["recipe"]: r for r in rows if r["kind"] == "train"}
    quality = {r["recipe"]: r for r in rows if r["kind"] == "quality"}
    assert set(train) == set(quality) == {"flow-ln", "dit"} and len(rows) == 4
    for recipe, t in train.items():
        assert (t["steps"], t["images"], t["batch"], t["max_steps"]) == (2, 32, 16, 2)
        assert t["wall_s"] > 0 and t["images_per_s"] > 0 and t["loss_first100"] == t["loss_last100"] > 0
        assert t["train_command"].startswith("python train.py cpu-demo") and t["load_avg_start"] >= 0
        assert (out / "runs" / recipe / "export.safetensors").is_file()
    assert "--recipe flow-ln" in train["flow-ln"]["train_command"] and "--recipe" not in train["dit"]["train_command"]
    assert (quality["flow-ln"]["sampler"], quality["dit"]["sampler"]) == ("euler", "ddim")
    hits = {}
    for recipe, q in quality.items():
        assert (q["steps"], q["cfg_scale"], q["num_samples"], q["judge_steps"]) == (50, 3.0, 20, 50)
        assert q["nfe"] == 50 and len(q["checkpoint_sha256"]) == 64 and q["commit"]
        with np.load(out / q["scores"]) as f:
            assert f["features"].dtype == np.float32 and f["hits"].dtype == np.uint8 and len(f["hits"]) == 20
            assert f["hits"].mean() == pytest.approx(q["class_acc"])
            hits[recipe] = f["hits"]
    assert (out / "scores" / "reference.npz").is_file()
    assert Image.open(out / "samples.png").size == (3 * (2 * 18 + 2), 3 * (10 * 18 + 2))  # 2 per class at N = 20
    table = tables.tables(out)["demo"]
    assert table.startswith("Measured at commit ") and "2 training steps of 16 images; 20 samples" in table
    assert "| recipe | train wall-clock | images/s | loss first → last 100 steps | sampler |" in table
    diff, ci = paired_difference(hits["flow-ln"], hits["dit"], tables.RESAMPLES, seed=0)
    assert f"| flow-ln − dit (paired) |  |  |  | euler-50 vs ddim-50 | {diff:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] |" in table
    assert "demo:" in capsys.readouterr().out
    # A rerun finds every unit done; other settings are refused before any work.
    assert run_cli(demo.main, argv) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    assert run_cli(demo.main, [*argv, "--samplers", "dit:ddpm"]) == 0  # one more unit: dit with DDPM-50
    assert json.loads((out / "results.jsonl").read_text().splitlines()[-1])["sampler"] == "ddpm"
    assert run_cli(demo.main, [*argv[:-4], "--num-samples", "30", "--classifier-steps", "50"]) == 2
    assert run_cli(demo.main, [*argv[:2], "--num-samples", "20", "--classifier-steps", "50"]) == 2  # other --max-steps


@pytest.mark.parametrize("argv, message", [
    (["--num-samples", "25"], "multiple of 10"),
    (["--samplers", "dit:dopri5"], "the gaussian process has"),
    (["--samplers", "flow-ln:ddim"], "the flow process has"),
    (["--samplers", "flow-ln"], "RECIPE:SAMPLER"),
    (["--recipes", "dit", "--samplers", "flow-ln:euler"], "RECIPE:SAMPLER"),
    (["--report"], "run the benchmark first"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, argv, message):
    assert run_cli(demo.main, ["--out", str(tmp_path / "demo"), "--max-steps", "1", *argv]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "demo").exists()
