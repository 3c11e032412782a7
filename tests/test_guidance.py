"""Classifier-free guidance wrapper: exactness at scale 1, the formula, channels, interval, null class."""

import pytest
import torch

from dit.errors import UserError
from dit.networks.conditioning import labels_of, unconditional
from dit.sampling.guidance import conditional, guided

NULL = 10  # model.null_class (= num_classes) of a 10-class stand-in model: unconditional(y, 10) uses it


class RecordingModel:
    """model(x, t, y): eps depends on the label (cond vs null), variance channels too; records calls."""

    def __init__(self, C=4, learn_sigma=True):
        self.C, self.learn_sigma, self.calls = C, learn_sigma, []

    def __call__(self, x, t, cond):
        y = labels_of(cond)  # a cond dict (the doubled batch) or bare labels
        self.calls.append((x.shape[0], t.clone(), y.clone()))
        is_null = (y == NULL).float().view(-1, 1, 1, 1)
        label = y.float().view(-1, 1, 1, 1)
        eps = x * 0.5 + (1 - is_null) * (label + 1) + is_null * -3.0  # cond: y+1 per row, uncond: -3
        if not self.learn_sigma:
            return eps
        var = (1 - is_null) * 0.25 + is_null * -0.75 + 0 * x
        return torch.cat([eps, var], 1)


def _inputs(B=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, 4, 2, 2, generator=g), torch.full((B,), 500.0), torch.tensor([0, 3, 7])


def test_conditional_binds_labels():
    model = RecordingModel()
    x, t, y = _inputs()
    assert torch.equal(conditional(model, y)(x, t), model(x, t, y))


def test_scale_one_is_exactly_conditional():
    model = RecordingModel()
    x, t, y = _inputs()
    out = guided(model, y, unconditional(y, NULL), 1.0)(x, t)
    assert torch.equal(out, model(x, t, y))
    assert all(n == 3 for n, _, _ in model.calls)  # cheap path: no doubled batch


@pytest.mark.parametrize("scale", [0.0, 1.5, 4.0])
def test_guidance_formula_and_null_class(scale):
    model = RecordingModel()
    x, t, y = _inputs()
    out = guided(model, y, unconditional(y, NULL), scale)(x, t)
    assert out.shape == (3, 8, 2, 2)
    (n, t_seen, y_seen), = model.calls
    assert n == 6 and torch.equal(t_seen, torch.cat([t, t]))
    assert torch.equal(y_seen, torch.cat([y, torch.full((3,), NULL)]))  # cond rows, then null rows
    cond, uncond = model(x, t, y), model(x, t, torch.full((3,), NULL))
    expect = uncond[:, :4] + scale * (cond[:, :4] - uncond[:, :4])
    torch.testing.assert_close(out[:, :4], expect)
    assert torch.equal(out[:, 4:], cond[:, 4:])  # variance channels from the conditional half


def test_three_channel_public_variant():
    """channels=3 reproduces public DiT forward_with_cfg: channel 3 stays conditional."""
    model = RecordingModel()
    x, t, y = _inputs()
    out = guided(model, y, unconditional(y, NULL), 4.0, channels=3)(x, t)
    cond, uncond = model(x, t, y), model(x, t, torch.full((3,), NULL))
    torch.testing.assert_close(out[:, :3], uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3]))
    assert torch.equal(out[:, 3:], cond[:, 3:])
    assert not torch.allclose(out[:, 3], (uncond + 4.0 * (cond - uncond))[:, 3])


def test_fixed_variance_model():
    model = RecordingModel(learn_sigma=False)
    x, t, y = _inputs()
    out = guided(model, y, unconditional(y, NULL), 2.0)(x, t)
    cond, uncond = model(x, t, y), model(x, t, torch.full((3,), NULL))
    torch.testing.assert_close(out, uncond + 2.0 * (cond - uncond))


def test_interval():
    model = RecordingModel()
    x, _, y = _inputs()
    den = guided(model, y, unconditional(y, NULL), 3.0, interval=(100, 600))
    outside = torch.full((3,), 800.0)
    assert torch.equal(den(x, outside), model(x, outside, y))
    assert model.calls[0][0] == 3  # no row inside: the doubled batch is skipped
    # Mixed rows: only rows with t in [100, 600] (inclusive) are guided.
    t = torch.tensor([100.0, 601.0, 600.0])
    out = den(x, t)
    full = guided(model, y, unconditional(y, NULL), 3.0)(x, t)
    cond = model(x, t, y)
    assert torch.equal(out[0], full[0]) and torch.equal(out[2], full[2])
    assert torch.equal(out[1], cond[1])


def test_validation():
    model = RecordingModel()
    x, t, y = _inputs()
    with pytest.raises(UserError):
        guided(model, y, unconditional(y, NULL), -1.0)
    with pytest.raises(UserError):
        guided(model, y, unconditional(y, NULL), float("nan"))
    with pytest.raises(UserError):
        guided(model, y, unconditional(y, NULL), 2.0, channels=0)
    with pytest.raises(UserError):
        guided(model, y, unconditional(y, NULL), 2.0, interval=(600, 100))
    with pytest.raises(UserError):
        guided(model, y, unconditional(y, NULL), 2.0, channels=5)(x, t)  # more channels than x has
