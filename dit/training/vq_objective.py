"""The objective of train_vq.py: a VQ-VAE tokenizer (dit/networks/vq_tokenizer.py) on pixels.

Loss per image (van den Oord et al. 2017, eq. 3, each term a mean over its elements):

    L = ||x - x^||^2 + ||sg[z_e] - z_q||^2 + beta ||z_e - sg[z_q]||^2,   beta = --commitment (0.25)

the codebook term moves the codes towards the encoder outputs, the commitment term (weight beta)
keeps the encoder near its codes, and the reconstruction reaches the encoder through the
straight-through estimator. diffusers' VectorQuantizer (legacy=True, what VQModel builds) swaps the
weights of the two middle terms; tests/test_vq_tokenizer.py checks the gradients of ours. A pixel
MSE is the whole reconstruction loss: the built-in shapes are flat colours at 16 px, where a
perceptual or adversarial term (VQGAN's) has nothing to add; at 256 px it would.

The codebook is kept alive as in Łańcucki et al. 2020 ("Robust training of vector quantized
bottleneck models"):
- k-means init: before the first forward, k-means++ seeding (Arthur & Vassilvitskii 2007) and
  `--kmeans-iters` Lloyd iterations over the encoder outputs of the first batch; afterwards it is just
  weights (and the network's `initialized` buffer says so: a resumed run does not redo it);
- dead-code restart: `usage`, an EMA (decay USAGE_DECAY a forward) of the share of tokens each code
  takes, is a buffer of the network (so it resumes exactly); every `--restart-every` forwards the
  codes whose usage is below `--dead-code-threshold` / K are re-seeded with encoder outputs of the
  current batch, drawn without replacement, and their usage reset to 1/K.
The draws (k-means++ seeds, restart candidates) come from a torch generator seeded with the run's
seed and the forward count (the `updates` buffer): the same on every process and after a resume.
Under data parallelism the encoder outputs are all-gathered (rank order is stream order) and the
code histograms all-reduced before anything is decided, so every process writes the same codebook,
from the same global batch a single process would see: the run does not depend on the process
count. Under gradient accumulation all of this happens per micro-batch. Host syncs: only at the
first step and at restarts.

Logged: recon_mse and psnr (pixels in [-1, 1]), vq_mse (||z_e - z_q||^2: the codebook term, and the
commitment term over beta), perplexity
(exp of the entropy of the batch's code histogram: K when codes are used uniformly), codes_used (the
fraction of codes the batch uses) and restarted (codes re-seeded, at restart steps).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dit.networks.vq_tokenizer import nearest
from dit.processes.base import Objective

USAGE_DECAY = 0.99  # per forward: a code's usage forgets with a time constant of ~100 forwards


def _gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate `t` (n, ...) over the processes in rank order (itself when alone)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def kmeans_plus_plus(z: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k seeds (k, D) among the rows of z (N, D) (Arthur & Vassilvitskii 2007): the first uniformly, each
    next with probability proportional to its squared distance to the nearest seed so far, by inverse
    CDF of a uniform from `generator` (CPU) on z's device: no host sync. Fewer distinct rows than k:
    the extra seeds repeat rows (their codes stay unused until a restart re-seeds them)."""
    z = z.float()
    u = torch.rand(k, generator=generator, dtype=torch.float64).tolist()
    first = min(int(u[0] * len(z)), len(z) - 1)
    seeds = [z[first]]
    d2 = ((z - z[first]) ** 2).sum(1)
    for j in range(1, k):
        cdf = d2.double().cumsum(0)
        i = torch.searchsorted(cdf, (u[j] * cdf[-1]).unsqueeze(0), right=True).clamp(max=len(z) - 1)
        seeds.append(z[i[0]])
        d2 = torch.minimum(d2, ((z - z[i[0]]) ** 2).sum(1))
    return torch.stack(seeds)


def kmeans(z: torch.Tensor, init: torch.Tensor, iters: int) -> torch.Tensor:
    """Lloyd's algorithm from centroids `init` (K, D) over rows z (N, D); a centroid that loses all its
    points keeps its place. The sums are one-hot matrix products (deterministic on every device,
    unlike scatter-adds on a GPU)."""
    c = init.float().clone()
    z = z.float()
    K = c.shape[0]
    for _ in range(iters):
        assign = nearest(z, c)
        sums, counts = torch.zeros_like(c), torch.zeros(K, device=z.device)
        for rows, a in zip(z.split(8192), assign.split(8192)):
            onehot = torch.nn.functional.one_hot(a, K).float()  # (n, K)
            sums += onehot.T @ rows
            counts += onehot.sum(0)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
    return c


class VQObjective(Objective):
    key = "vq-tokenizer"  # the "objective" its checkpoints and exports record (train_vq.py)

    def __init__(self, run):
        self.beta = float(run.commitment)
        self.kmeans_iters, self.restart_every = int(run.kmeans_iters), int(run.restart_every)
        self.threshold = float(run.dead_code_threshold)
        self.seed = int(run.seed)
        self._initialized = self._updates = None  # host copies of the network's buffers, read once

    def draw(self, rng: np.random.Generator, shape: Sequence[int]) -> dict:
        return {}  # nothing per sample: the codebook's draws are per batch (_generator)

    def _generator(self, updates: int) -> torch.Generator:
        seed = int(np.random.SeedSequence([self.seed, updates]).generate_state(1, np.uint64)[0] >> 1)
        return torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def _encoded(self, net, x: torch.Tensor) -> torch.Tensor:
        """The global batch's encoder outputs, one row per token (N, D), in stream order."""
        z = net.encode_latents(x).float()  # (B, D, h, w)
        return _gather(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))

    @torch.no_grad()
    def _maintain(self, net, x: torch.Tensor) -> int | None:
        """k-means init (first forward) or dead-code restart (every restart_every forwards), before the
        forward. Returns the number of codes re-seeded at a restart, None at other steps."""
        K = net.config.codebook_size
        if self._initialized is None:  # one host sync per (re)start: the buffers may come from a checkpoint
            self._initialized, self._updates = bool(net.initialized), int(net.updates)
        if not self._initialized:
            if self.kmeans_iters:
                z = self._encoded(net, x)
                start = kmeans_plus_plus(z, K, self._generator(self._updates))
                net.codebook.copy_(kmeans(z, start, self.kmeans_iters).to(net.codebook.dtype))
            net.usage.fill_(1.0 / K)
            net.initialized.fill_(1)
            self._initialized = True
            return None
        if not self.restart_every or self._updates % self.restart_every:
            return None
        dead = (net.usage < self.threshold / K).nonzero().squeeze(1)
        if not len(dead):
            return 0
        z = self._encoded(net, x)
        n = min(len(dead), len(z))
        pick = torch.randperm(len(z), generator=self._generator(self._updates))[:n].to(z.device)
        net.codebook[dead[:n]] = z[pick].to(net.codebook.dtype)
        net.usage[dead[:n]] = 1.0 / K
        return n

    def loss(self, network, batch: dict) -> dict:
        net = getattr(network, "module", network)  # the bare tokenizer under DDP: its codebook and buffers
        x = batch["x0"]
        restarted = self._maintain(net, x)
        out = network(x)
        recon = (out["recon"].float() - x.float()).pow(2).mean((1, 2, 3))
        z_e, z_q = out["z_e"].float(), out["z_q"].float()
        codebook = (z_e.detach() - z_q).pow(2).mean((1, 2, 3))  # moves the codes only
        commitment = (z_e - z_q.detach()).pow(2).mean((1, 2, 3))  # moves the encoder only
        stats = self._record(net, out["ids"])
        ones = torch.ones_like(recon)
        metrics = {"recon_mse": (recon, ones), "psnr": (10 * torch.log10(4.0 / recon.detach().clamp_min(1e-10)), ones),
                   "vq_mse": (codebook.detach(), ones),
                   **{k: (v.expand_as(recon), ones) for k, v in stats.items()}}
        if restarted is not None:
            metrics["restarted"] = (torch.full_like(recon, float(restarted)), ones)
        return {"loss": recon + codebook + self.beta * commitment, "metrics": metrics}

    @torch.no_grad()
    def _record(self, net, ids: torch.Tensor) -> dict:
        """Update the usage EMA from the global batch's code histogram (no host sync); its statistics."""
        K = net.config.codebook_size
        counts = _all_sum(torch.bincount(ids.reshape(-1), minlength=K).float())
        p = counts / counts.sum().clamp_min(1)
        net.usage.mul_(USAGE_DECAY).add_(p, alpha=1 - USAGE_DECAY)
        net.updates.add_(1)
        self._updates += 1
        entropy = -(p * p.clamp_min(1e-30).log()).sum()
        return {"perplexity": entropy.exp(), "codes_used": (counts > 0).float().mean()}
