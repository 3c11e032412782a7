"""The data stream (positions, sharding, keyed randomness), the EMA and the learning-rate schedule."""

import math

import numpy as np
import pytest
import torch

from dit.training.ema import EMA
from dit.errors import UserError
from dit.processes.gaussian import GaussianDiffusion
from dit.data.stream import InMemoryImages, StreamBatches, TrainingItems, collate, per_process_batch
from dit.training.config import TrainConfig, from_preset
from dit.training.step import learning_rate


def test_stream_partitions_each_global_batch_across_processes_and_micro_batches():
    n, B = 50, 12
    for procs, accum in [(1, 1), (2, 1), (3, 2), (1, 4)]:
        seen = []
        for step in range(6):  # 72 positions: one epoch and a bit
            for r in range(procs):
                s = StreamBatches(n, B, procs, r, accum, seed=3)
                for k in range(accum):
                    seen += s.micro_batch(step, k)
        positions = sorted(p for p, _ in seen)
        assert positions == list(range(72)), (procs, accum)  # every position once, none twice
        by_pos = dict(seen)
        assert sorted(by_pos[p] for p in range(50)) == list(range(50))  # epoch 0 is a permutation
        assert [by_pos[p] for p in range(50)] != list(range(50))  # ... shuffled
        assert sorted(by_pos[p] for p in range(50, 72)) != list(range(50, 72))
    # The stream is independent of how it is split: (position -> index) agrees everywhere.
    one = dict(sum((StreamBatches(n, B, 1, 0, 1, 3).micro_batch(s, 0) for s in range(6)), []))
    assert one == by_pos


def test_stream_resumes_at_any_step():
    full = iter(StreamBatches(40, 8, 2, 1, 2, seed=0))
    batches = [next(full) for _ in range(10)]
    resumed = iter(StreamBatches(40, 8, 2, 1, 2, seed=0, start_step=3))
    assert [next(resumed) for _ in range(4)] == batches[6:10]  # 2 micro-batches per step


def test_per_process_batch_errors():
    assert per_process_batch(256, 8, 2) == 16
    with pytest.raises(UserError, match="not divisible by 2 processes x 1"):
        per_process_batch(7, 2, 1)


def test_items_are_a_function_of_position_only():
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    base = InMemoryImages(images, torch.arange(10), flip=True, num_classes=10)
    process = GaussianDiffusion.from_schedule("linear", 1000)
    items = TrainingItems(base, seed=0, process=process, label_dropout=0.5, latent_shape=(3, 4, 4))
    a, b = collate([items[(17, 3)]]), collate([items[(17, 3)]])
    assert all(torch.equal(a[k], b[k]) for k in ("x", "y", "drop")) and a["draws"].keys() == {"t", "noise"}
    assert all(torch.equal(a["draws"][k], b["draws"][k]) for k in a["draws"])
    many = collate([items[(p, 3)] for p in range(400)])
    many.update(many.pop("draws"))  # the process's draws: t and noise
    assert many["x"].shape == (400, 3, 4, 4) and many["noise"].shape == (400, 3, 4, 4)
    flipped = (many["x"] != many["x"][0]).flatten(1).any(1).float().mean()  # the same image, flipped or not
    assert 0.35 < flipped < 0.65
    assert 0.4 < many["drop"].float().mean() < 0.6 and many["t"].min() >= 0 and many["t"].max() < 1000
    assert abs(many["noise"].mean()) < 0.05 and abs(many["noise"].std() - 1) < 0.05
    assert many["t"].unique().numel() > 300


def test_ema_update_and_warmup():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v, start[k] + 0.1)  # 0.9 * old + 0.1 * (old + 1)
    ema.update(model, decay=0.0)
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k])
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_learning_rate_schedules():
    paper = TrainConfig(data="x")
    assert {learning_rate(paper, s) for s in (0, 10, 10**6)} == {1e-4}  # DiT §4: constant, no warmup
    demo = from_preset("cpu-demo", lr_schedule="cosine", warmup_steps=10, max_steps=110, lr=1.0)
    assert learning_rate(demo, 0) == pytest.approx(0.1) and learning_rate(demo, 9) == pytest.approx(1.0)
    assert learning_rate(demo, 60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(demo, 110) == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff([learning_rate(demo, s) for s in range(10, 111)]) <= 0)


def test_guarded_step_skips_on_the_device_or_with_one_sync():
    from dit.training.parallel import _guarded_step

    for fused in (True, False):
        p = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.AdamW([p], lr=0.1, fused=fused, foreach=None if fused else True)
        p.grad = torch.full((3,), float("nan"))
        _guarded_step(opt, torch.tensor(False))
        assert torch.equal(p.detach(), torch.ones(3)), fused  # nothing applied, nothing poisoned
        p.grad = torch.ones(3)
        _guarded_step(opt, torch.tensor(True))
        assert (p.detach() < 1).all() and torch.isfinite(p).all(), fused
