"""VQ-Diffusion's importance sampling of t (the released code's): it follows the loss history, its state
round-trips, and a run resumed from that state continues exactly."""

import torch
from test_vq_diffusion import batch_of, tiny_net

from dit.processes import VQDiffusion


def test_importance_sampling_follows_history_and_round_trips():
    process = VQDiffusion(8, 20, time_sampling="importance")
    x0 = torch.randint(0, 8, (4, 4, 4), generator=torch.Generator().manual_seed(5))
    batch = batch_of(process, x0, range(4))
    t, w = process._time(batch)  # cold: the drawn t, weight T
    assert torch.equal(t, batch["t"]) and torch.allclose(w, torch.full((4,), 20.0))
    process.history = torch.linspace(1, 4, 20, dtype=torch.float64)
    process.count = torch.full((20,), 11.0, dtype=torch.float64)
    p = process.time_probabilities()
    batch["t_u"] = torch.tensor([0.0, 0.3, 0.7, 0.999999])
    t, w = process._time(batch)
    want = torch.searchsorted(p.cumsum(0), batch["t_u"].double(), right=True) + 1
    assert torch.equal(t, want) and torch.allclose(w.double(), 1 / p[want - 1], rtol=1e-6)
    net = tiny_net()
    process.loss(net, batch)  # records L_t of the chosen t
    assert float(process.count.sum()) == 20 * 11 + 4
    state = process.state_dict()
    other = VQDiffusion(8, 20, time_sampling="importance")
    other.load_state_dict(state)
    assert torch.equal(other.history, process.history) and torch.equal(other.count, process.count)


def test_importance_sampling_resumes_exactly_from_its_state():
    """Three micro-batches straight through vs. two, then a fresh process loaded from state_dict."""
    x0 = torch.randint(0, 8, (4, 4, 4), generator=torch.Generator().manual_seed(6))
    net = tiny_net()
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    batches = [batch_of(VQDiffusion(8, 5), x0, range(4 * i, 4 * i + 4)) for i in range(3)]

    def warm():
        process = VQDiffusion(8, 5, time_sampling="importance")
        process.count = torch.full((5,), 11.0, dtype=torch.float64)
        process.history = torch.linspace(0.5, 2, 5, dtype=torch.float64)
        return process

    straight = warm()
    losses = [straight.loss(net, b)["loss"] for b in batches]
    first = warm()
    for b in batches[:2]:
        first.loss(net, b)
    resumed = VQDiffusion(8, 5, time_sampling="importance")
    resumed.load_state_dict(first.state_dict())
    assert torch.equal(resumed.loss(net, batches[2])["loss"], losses[2])
    assert torch.equal(resumed.history, straight.history)
