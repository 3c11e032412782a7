"""benchmarks/video_cpu/video_cpu.py end to end on a tiny budget: training through train.py, generation and every
prediction task scored with intervals, the parameter-matched depth, the table; a rerun redoes nothing."""

import json
import pytest

import numpy as np

from dit.cli import run_cli
from dit.eval.tables import benchmark_module

video_cpu = benchmark_module("video_cpu")


@pytest.mark.slow("trains three video models through train.py and scores every task")
def test_micro_video_benchmark(tmp_path, capsys):
    out = tmp_path / "vc"
    argv = ["--out", str(out), "--models", "main", "split-heads", "adaln", "--max-steps", "1", "--clips", "12",
            "--study-clips", "10", "--steps", "2",
            "--bootstrap", "10", "--judge-steps", "5", "--judge-clips", "200"]
    assert run_cli(video_cpu.main, argv) == 0
    report = capsys.readouterr().out  # the tables, as --report prints them
    every = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    rows = [r for r in every if r["model"] not in (video_cpu.BASELINE, video_cpu.TRACKER)]
    assert sorted((r["model"], r["task"]) for r in rows) == sorted(
        [("main", t) for t in ("generation", "prediction", "unconditional", "backward", "interpolation")]
        + [("split-heads", t) for t in ("generation", "prediction")] + [("adaln", "prediction")])
    # main's completion tasks beside the trivial completion on the same clips (no network, no training)
    for name in (video_cpu.BASELINE, video_cpu.TRACKER):
        floor = {r["task"]: r for r in every if r["model"] == name}
        assert sorted(floor) == ["backward", "interpolation", "prediction"]
        assert [floor[t]["clips"] for t in ("prediction", "backward", "interpolation")] == [12, 10, 10]
        assert all(r["params"] == 0 and np.isfinite(r["centroid_error"]) for r in floor.values())
    from dit.eval.baselines import copy_nearest

    clips = np.arange(8)[None, :, None, None, None] * np.ones((2, 1, 3, 3, 3), np.uint8)  # pixel value = frame index
    assert copy_nearest(clips, [0, 4, 7])[0, :, 0, 0, 0].tolist() == [0, 0, 0, 4, 4, 4, 7, 7]
    assert copy_nearest(clips, [4, 5, 6, 7])[1, :, 0, 0, 0].tolist() == [4, 4, 4, 4, 4, 5, 6, 7]
    for r in every:  # the per-clip scores behind each row's intervals are kept
        with np.load(out / r["scores"]) as kept:
            assert len(next(iter(kept.values()))) == r["clips"]
    for r in rows:
        # --clips for the acceptance rows, --study-clips for the rest
        acceptance = r["model"] == "main" and r["task"] in ("generation", "prediction")
        assert r["clips"] == (12 if acceptance else 10)
        assert r["steps_trained"] == 1 and r["process"] == "flow" and r["sampler"] == "euler"
        for k, v in r.items():
            if k.endswith("_ci"):
                assert v[0] <= r[k[:-3]] + 1e-9 and r[k[:-3]] <= v[1] + 1e-9, k
    # split-heads at the depth whose parameter count is nearest main's (here: equal, 8 blocks of one shape)
    params = {r["model"]: r["params"] for r in rows}
    assert video_cpu.matched_depth("split-heads") == 8 and params["split-heads"] == params["main"]
    # cross-attention's extra layers are paid for with width: within 3% of main's count
    width = video_cpu.matched_width("cross-attention")
    assert width < video_cpu.preset_width() and width % 4 == 0
    assert abs(video_cpu.parameters(conditioning="cross-attention", width=width) / video_cpu.parameters() - 1) < 0.03
    assert "| main |" in report
    cost = {r["model"]: r["gmacs"] for r in rows}  # one clip's forward: adaln also embeds the given frames
    assert cost["adaln"] > cost["main"] > 0 and f"| {cost['main']:.3f} |" in report
    assert run_cli(video_cpu.main, argv) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == len(every)
    assert run_cli(video_cpu.main, [*argv[:2], "--sampler", "ddim"]) == 2  # a flow model: refused before training
    # --experiment scores a run trained elsewhere by the same protocol, into experiments.jsonl
    exp = [*argv[:2], "--experiment", str(out / "runs" / "adaln"), "--tasks", "generation", "prediction", *argv[8:]]
    assert run_cli(video_cpu.main, exp) == 0
    exp_rows = [json.loads(line) for line in (out / "experiments.jsonl").read_text().splitlines()]
    row = exp_rows[0]  # the run's rows, the real clips' (generation's ceiling), both baselines' on the same clips
    assert [(r["model"], r["task"], r["clips"], r["shapes_speed"]) for r in exp_rows] == [
        ("adaln", "generation", 12, 1.0), ("adaln", "prediction", 12, 1.0), (video_cpu.REAL, "generation", 12, 1.0),
        (video_cpu.BASELINE, "prediction", 12, 1.0), (video_cpu.TRACKER, "prediction", 12, 1.0)]
    real = exp_rows[2]  # the held-out clips judged as generated ones, their scores kept like every row's
    assert real["params"] == 0 and 0 <= real["class_acc_ci"][0] <= real["class_acc"] and (out / real["scores"]).is_file()
    config = json.loads((out / "runs" / "adaln" / "config.json").read_text())
    main_config = json.loads((out / "runs" / "main" / "config.json").read_text())
    assert config["video_masks"] == "vdt" and main_config["video_masks"] == "vdt-uncond:0.75"  # the studies' base
    assert (main_config["shapes_speed"], main_config["init_from"]) == (1.0, "")  # whatever the preset becomes
    assert (row["model"], row["task"], row["clips"], row["video_masks"], row["global_batch_size"]) == (
        "adaln", "generation", 12, config["video_masks"], config["global_batch_size"])
    assert run_cli(video_cpu.main, exp) == 0 and len((out / "experiments.jsonl").read_text().splitlines()) == 5
    capsys.readouterr()
    assert run_cli(video_cpu.main, [*argv[:2], "--report"]) == 0
    assert f"| adaln | {row['video_masks']} | 1 | {row['global_batch_size']} x 1 | generation | 12 |" in capsys.readouterr().out
    assert run_cli(video_cpu.main, [*argv[:2], "--experiment", str(out / "cache")]) == 2
    # the preset's GIF and its timing, through the real sample.py and train.py, on the tiny run
    gif = tmp_path / "preset.gif"
    assert run_cli(benchmark_module("video_cpu", "grid").main, ["--run", str(out / "runs" / "main"), "--out", str(gif),
                                                                "--per-row", "2", "--steps", "2"]) == 0
    from PIL import Image

    with Image.open(gif) as im:  # 2 rows generated, then truth, prediction, tracker: 5 rows of 2 clips, 8 frames
        assert im.n_frames == 8 and im.size[1] > 2 * im.size[0]
    timing = benchmark_module("video_cpu", "timing")
    assert run_cli(timing.main, ["--run", str(out / "runs" / "main"), "--out", str(out), "--clips", "2",
                                 "--train-steps", "4"]) == 0
    t = json.loads((out / "timing.jsonl").read_text().splitlines()[-1])
    assert t["clips"] == 2 and t["completion_s"] > 0 and t["train_steps_per_s"] > 0 and t["commit"]
    assert "50.0 function evaluations" in t["completion_output"]  # no --steps: the flow's default, 50
    assert run_cli(timing.main, ["--run", str(out / "cache"), "--out", str(out)]) == 2
