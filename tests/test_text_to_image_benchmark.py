"""benchmarks/text_to_image/text_to_image.py end to end on a few steps: the prompt sets, the judge's ceiling on real
renders, timing, training through train.py, sampling from prompts, the tables and the figure; a rerun redoes
nothing. And the judge itself: perfect on real scenes, blind to colour when reading shapes."""

import json

import numpy as np
import pytest

from dit.cli import run_cli
from dit.data import shapes_captions as sc
from dit.eval import scene_judge as sj
from dit.eval.tables import benchmark_module

t2i = benchmark_module("text_to_image")
tables = benchmark_module("text_to_image", "tables")


def test_prompt_sets_hold_what_they_say():
    sets = t2i.prompt_sets()
    assert [len(v) for v in sets.values()] == [t2i.SINGLE + t2i.PAIRS] * 2 and sets == t2i.prompt_sets()
    for name, prompts in sets.items():
        for p in prompts:
            things, relation = sc.parse_canonical(p)
            held = [sc.held_out(t.shape, t.colour, t.cell if relation is None else -1) for t in things]
            assert any(held) == (name == "held-out"), p  # exactly the held-out set asks for unrendered pairs


@pytest.mark.slow("trains the shape reader and a text DiT through train.py (timing and quality runs), judges 256 samples")
def test_micro_benchmark_tables_figure_and_resume(tmp_path, capsys):
    out = tmp_path / "t2i"
    argv = ["--out", str(out), "--conditionings", "joint", "--seeds", "0", "--minutes", "0.02",
            "--per-prompt", "1", "--steps", "2", "--timing-steps", "60", "--timing-warmup", "0", "--timing-rounds", "1",
            "--scenes", "64", "--reader-steps", "60"]
    assert run_cli(t2i.main, argv) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    kinds = sorted((r["kind"], r.get("conditioning"), r["set"] if "set" in r else None) for r in rows)
    assert kinds == sorted([("real", None, "seen"), ("real", None, "held-out"), ("timing", "joint", None),
                            ("quality", "joint", "seen"), ("quality", "joint", "held-out")])
    quality = [r for r in rows if r["kind"] == "quality"]
    assert all(len(r["joint"]) == 64 and r["nfe"] == 2 and r["steps_trained"] >= 1 for r in quality)
    timing = [r for r in rows if r["kind"] == "timing"]
    assert all(t["params"] > 1e6 and t["gflops"] > 0 for t in timing)
    text = capsys.readouterr().out
    assert "accuracy:" in text and "real renders" in text and "joint attention (MMDiT)" in text
    assert (out / "text_to_image.png").is_file() and (out / "prompts-held-out.txt").is_file()
    assert run_cli(t2i.main, argv) == 0  # everything is found: nothing trained, sampled or added again
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)


def test_the_judge_reads_real_scenes_and_not_colour_for_shape(tmp_path, monkeypatch):
    monkeypatch.setattr(sj, "TRAIN_IMAGES", 4000)  # a quicker reader (its own cache folder): still near perfect
    reader = sj.load_reader(tmp_path, 32, steps=300)
    rng = np.random.default_rng(3)
    images, expected = [], []
    for _ in range(120):
        things, relation = sc.draw_scene(rng, allow_held_out=True)
        image, _ = sc.render_scene(things, rng, 32)
        images.append(np.round(image * 255).astype(np.uint8))
        expected.append((things, relation))
    marks = [sj.judge(e, f) for e, f in zip(expected, sj.read_images(np.stack(images), reader))]
    assert np.mean([m["joint"] for m in marks]) >= 0.97 and np.mean([m["count"] for m in marks]) >= 0.97
    # The same scenes judged against prompts with the colour changed: colour fails, shape and position stand.
    wrong = [([sc.Thing(t.shape, (t.colour + 1) % 6, t.cell, t.size, 0, 0, 0, 0) for t in th], r) for th, r in expected]
    marks = [sj.judge(e, f) for e, f in zip(wrong, sj.read_images(np.stack(images), reader))]
    assert np.mean([m["colour"] for m in marks]) == 0 and np.mean([m["shape"] for m in marks]) >= 0.97
    # Shapes painted in colours the scenes never use are read alike: the reader sees no colour.
    crops, labels = sj.training_crops(400, 32, seed=99)
    import torch

    with torch.no_grad():
        assert (reader(crops).argmax(1) == labels).float().mean() >= 0.95
    assert sj.judge(expected[0], []) == dict(shape=False, colour=False, position=False, joint=False, count=False)
