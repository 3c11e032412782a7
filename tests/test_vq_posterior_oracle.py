"""VQ-Diffusion's schedule, q(x_t | x_0) and posterior against an oracle written from the paper alone
(issue 31), not from the code's own `transition` (which tests/test_vq_diffusion.py builds its
matrices from, so a wrong schedule table would pass there).

Everything the oracle uses is written out here in numpy float64, from Gu et al., CVPR 2022, §3.2:
- the schedule: the cumulative abar_t and gbar_t are linear in t from t = 1 to T between the released
  endpoints, and a share r = replace_max of the mask mass is replace mass instead (r = 0.1 is the
  paper's "gbar_t and bbar_t to 0.9 and 0.1"); K bbar_t = 1 - abar_t - gbar_t;
- the one-step parameters, by inverting abar_t = prod alpha_i and 1 - gbar_t = prod (1 - gamma_i):
  alpha_t = abar_t / abar_{t-1}, gamma_t = 1 - (1 - gbar_t) / (1 - gbar_{t-1}),
  beta_t = (1 - alpha_t - gamma_t) / K;
- the paper's (K + 1) x (K + 1) matrix Q_t[to, from]: column j < K is alpha_t + beta_t on the
  diagonal, beta_t on the other regular rows and gamma_t in the [MASK] row; the [MASK] column is
  e_[MASK]; Qbar_t = Q_t ... Q_1 and the skip Q_{s->t} = Q_t ... Q_{s+1} (fast inference, §3.3);
- Bayes: q(x_s | x_t, x0) = Q_{s->t}[x_t, x_s] Qbar_s[x_s, x0] / Qbar_t[x_t, x0], and the model's
  p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p(x0 | x_t).
The code's conventions (dit/processes/vq_schedule.py): ids 0..K-1 regular, K is [MASK]; t = 1..T,
t = 0 the data; distributions over ids on axis 1.
"""

import numpy as np
import pytest
import torch

from dit.processes import VQDiffusion

# The released code's endpoints (VQ-Diffusion's alpha_schedule, diffusers' *_cum_start/end).
ALPHA_START, ALPHA_END, GAMMA_START, GAMMA_END = 0.99999, 0.000009, 0.000009, 0.99999
# A schedule with a real replace mass even at r = 0, so that beta is large enough to matter.
WIDE = dict(alpha_start=0.9, alpha_end=0.05, gamma_start=0.04, gamma_end=0.6)


def paper_schedule(K, T, r, alpha_start=ALPHA_START, alpha_end=ALPHA_END,
                   gamma_start=GAMMA_START, gamma_end=GAMMA_END):
    """Cumulative (abar, bbar, gbar), each (T + 1,) over t = 0..T, t = 0 the data (1, 0, 0)."""
    abar = np.concatenate([[1.0], np.linspace(alpha_start, alpha_end, T)])
    gbar = np.concatenate([[0.0], (1 - r) * np.linspace(gamma_start, gamma_end, T)])
    bbar = (1 - abar - gbar) / K
    return abar, bbar, gbar


def paper_steps(K, T, r, **ends):
    """One-step (alpha_t, beta_t, gamma_t) for t = 1..T, index t - 1."""
    abar, _, gbar = paper_schedule(K, T, r, **ends)
    alpha = abar[1:] / abar[:-1]
    gamma = 1 - (1 - gbar[1:]) / (1 - gbar[:-1])
    beta = (1 - alpha - gamma) / K
    return alpha, beta, gamma


def paper_Q(K, alpha, beta, gamma):
    """Q[to, from] of one mask-and-replace step, (K + 1, K + 1), columns summing to 1."""
    Q = np.zeros((K + 1, K + 1))
    for j in range(K):
        Q[:K, j] = beta
        Q[j, j] = alpha + beta
        Q[K, j] = gamma
    Q[K, K] = 1.0  # [MASK] absorbs
    return Q


class Oracle:
    def __init__(self, K, T, r, **ends):
        self.K, self.T = K, T
        alpha, beta, gamma = paper_steps(K, T, r, **ends)
        self.Q = [None] + [paper_Q(K, alpha[t - 1], beta[t - 1], gamma[t - 1]) for t in range(1, T + 1)]

    def skip(self, s, t):
        """Q_{s->t} = Q_t ... Q_{s+1}: q(x_t = row | x_s = column); the identity for s = t."""
        M = np.eye(self.K + 1)
        for i in range(s + 1, t + 1):
            M = self.Q[i] @ M
        return M

    def q_posterior(self, s, t):
        """q(x_s = j | x_t = k, x0 = i) as (K + 1, K + 1, K) [j, k, i], by Bayes on the matrices."""
        Q_st, Qbar_s, Qbar_t = self.skip(s, t), self.skip(0, s), self.skip(0, t)
        joint = Q_st.T[:, :, None] * Qbar_s[:, None, :self.K]  # q(x_t = k | x_s = j) q(x_s = j | x0 = i)
        return joint / Qbar_t[None, :, :self.K]

    def model_posterior(self, p_x0, s, t):
        """p(x_s = j | x_t = k) = sum_i q(x_s = j | x_t = k, x0 = i) p(x0 = i | x_t = k); p_x0 (K, K + 1) [i, k]."""
        return np.einsum("jki,ik->jk", self.q_posterior(s, t), p_x0)


CASES = [  # (K, T, replace_max, endpoints)
    (2, 6, 0.0, {}), (2, 6, 0.1, {}), (5, 6, 0.5, {}), (3, 6, 0.9, {}),
    (4, 8, 0.0, WIDE), (4, 8, 0.3, WIDE),
    (7, 100, 0.0, {}), (7, 100, 0.1, {}), (16, 100, 0.1, {}),
]


def case_id(case):
    K, T, r, ends = case
    return f"K{K}-T{T}-r{r}" + ("-wide" if ends else "")


def times(T):
    """Every t for short chains; t = 1, 2, the middle, T - 1 and T (the last step) for T = 100."""
    return range(1, T + 1) if T <= 8 else [1, 2, T // 2, T - 1, T]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_schedule_tables_are_the_papers(case):
    K, T, r, ends = case
    abar, bbar, gbar = paper_schedule(K, T, r, **ends)
    alpha, beta, gamma = paper_steps(K, T, r, **ends)
    assert (alpha > 0).all() and (beta >= 0).all() and (gamma > 0).all()  # the schedule is a valid chain
    np.testing.assert_allclose(alpha + K * beta + gamma, 1, rtol=0, atol=1e-15)
    # The paper's closed form (abar = prod alpha, gbar = 1 - prod (1 - gamma)) from the steps:
    np.testing.assert_allclose(np.cumprod(alpha), abar[1:], rtol=1e-10, atol=0)
    np.testing.assert_allclose(1 - np.cumprod(1 - gamma), gbar[1:], rtol=1e-10, atol=0)

    S = VQDiffusion(K, T, replace_max=r, **ends).schedule
    got = [v.numpy() for v in S.cumulative(torch.arange(T + 1))]
    for name, ours, want in zip(("abar", "bbar", "gbar"), got, (abar, bbar, gbar)):
        np.testing.assert_allclose(ours, want, rtol=1e-9, atol=1e-15, err_msg=name)
    if not ends:  # replace_max is the replace mass K bbar_T (r 0.99999 plus the released 1e-6)
        assert abs(K * bbar[T] - (r * GAMMA_END + (1 - ALPHA_END - GAMMA_END))) < 1e-12


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_q_xt_given_x0_is_the_product_of_the_papers_steps(case):
    K, T, r, ends = case
    oracle = Oracle(K, T, r, **ends)
    abar, bbar, gbar = paper_schedule(K, T, r, **ends)
    S = VQDiffusion(K, T, replace_max=r, **ends).schedule
    x0 = torch.arange(K).view(K, 1)  # (K, 1): every regular x0
    for t in times(T):
        Qbar = oracle.skip(0, t)
        # The paper's closed form: Qbar_t v(x0) = abar v(x0) + (gbar - bbar) v(MASK) + bbar.
        closed = np.full((K + 1, K), bbar[t])
        closed[range(K), range(K)] += abar[t]
        closed[K] = gbar[t]
        np.testing.assert_allclose(Qbar[:, :K], closed, rtol=1e-9, atol=1e-15)
        ours = S.log_q(x0, torch.full((K,), t))[..., 0].exp().numpy().T  # (K + 1, K) [x_t, x0]
        np.testing.assert_allclose(ours, Qbar[:, :K], rtol=1e-9, atol=1e-15, err_msg=f"t = {t}")


def compare(ours, want, where):
    """Probabilities at 1e-9 absolute, and each entry above 1e-14 at a relative 1e-8: the released
    schedule's replace mass is 1e-6 / K, so an error there hides below any absolute tolerance. Measured:
    at most 1.3e-10 absolute and 5.2e-10 relative (r = 0, released endpoints: a 1e-6 mass formed as
    1 - 0.99999 - 0.000009 in float64 carries ~1e-10 relative rounding, in the code and in the oracle
    alike), 4e-11 with r > 0 and 3e-15 on the WIDE schedule."""
    np.testing.assert_allclose(ours.sum(0), 1, rtol=0, atol=1e-9, err_msg=where)
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-9, err_msg=where)
    big = want > 1e-14
    np.testing.assert_allclose(ours[big], want[big], rtol=1e-8, atol=0, err_msg=where)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_posterior_is_bayes_on_the_papers_matrices(case):
    K, T, r, ends = case
    oracle = Oracle(K, T, r, **ends)
    S = VQDiffusion(K, T, replace_max=r, **ends).schedule
    g = np.random.default_rng(31 + K + T)
    x_t = torch.arange(K + 1).view(1, K + 1)  # every value of x_t, [MASK] included: one per position
    # Batch row 0..K-1: p(x0) one-hot at i (the true q(x_s | x_t, x0 = i)); row K: a spread p(x0 | x_t)
    # per position, as a network's; row K + 1: a peaked one.
    p = np.zeros((K + 2, K, K + 1))
    p[range(K), range(K)] = 1.0
    p[K] = g.dirichlet(np.ones(K), size=K + 1).T
    p[K + 1] = g.dirichlet(np.full(K, 0.2), size=K + 1).T
    p[K + 1] = np.maximum(p[K + 1], 1e-12)
    p[K + 1] /= p[K + 1].sum(0)
    log_p = torch.from_numpy(np.log(np.maximum(p, 1e-30)))  # (B, K, K + 1), floored like log_onehot
    B = K + 2
    for t in times(T):
        for s in sorted({t - 1, t // 2, 0}):
            got = S.posterior(log_p, x_t.expand(B, -1), torch.full((B,), t), torch.full((B,), s)).exp().numpy()
            q = oracle.q_posterior(s, t)  # (K + 1, K + 1, K) [x_s, x_t, x0]
            for i in range(K):
                compare(got[i], q[:, :, i], f"q(x_s | x_t, x0 = {i}), K = {K}, t = {t}, s = {s}")
            for b in (K, K + 1):
                compare(got[b], oracle.model_posterior(p[b], s, t), f"p(x_s | x_t) row {b}, K = {K}, t = {t}, s = {s}")


def test_posterior_endpoints():
    """t = 1 to s = 0 gives back p(x0 | x_t) itself; at T nearly every x_t is [MASK] and its posterior
    keeps [MASK] with gbar_{T-1} / gbar_T (the oracle's ratio, written here from the schedule)."""
    K, T, r = 4, 10, 0.1
    S = VQDiffusion(K, T, replace_max=r).schedule
    abar, bbar, gbar = paper_schedule(K, T, r)
    g = np.random.default_rng(7)
    p = g.dirichlet(np.ones(K), size=K + 1).T[None]  # (1, K, K + 1)
    x_t = torch.arange(K + 1).view(1, K + 1)
    got = S.posterior(torch.from_numpy(np.log(p)), x_t, torch.tensor([1]), torch.tensor([0])).exp().numpy()[0]
    np.testing.assert_allclose(got[:K], p[0], rtol=1e-9, atol=1e-15)
    # x_0 is never [MASK]: zero up to the code's 1e-30 floor on gbar_0, divided by q(x_1 | x0) (so up
    # to 1e-30 / gbar_1 = 1.2e-25 where x_1 is [MASK])
    assert (got[K] < 1e-24).all()
    got = S.posterior(torch.from_numpy(np.log(p)), x_t, torch.tensor([T]), torch.tensor([T - 1])).exp().numpy()[0]
    # from x_T = [MASK]: q(x_{T-1} = [MASK] | x_T = [MASK], x0) = 1 * gbar_{T-1} / gbar_T, whatever x0
    assert abs(got[K, K] - gbar[T - 1] / gbar[T]) < 1e-12
