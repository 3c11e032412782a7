"""S4D's zero-order-hold discretisation checked against the continuous system itself, not against the
code's own `discrete()` (which both the FFT path and the recurrence share).

For one mode x'(t) = lam x(t) + u(t) with u held constant over each step of length dt (ZOH, S4D eq. 4
with B = 1), Van Loan's identity gives the exact one-step map: expm([[lam, 1], [0, 0]] dt) =
[[dA, dB], [0, 1]]. scipy's expm of that 2 x 2 block, per mode, is the independent oracle; the kernel
K_l = 2 Re sum_n C_n dB_n dA_n^l is then the response of y = 2 Re C x to a unit impulse held for one step.
"""

import numpy as np
import scipy.linalg
import torch

from dit.networks.s4d import S4DKernel


def van_loan(lam: complex, dt: float) -> tuple[complex, complex]:
    m = scipy.linalg.expm(np.array([[lam, 1.0], [0.0, 0.0]], dtype=np.complex128) * dt)
    return m[0, 0], m[0, 1]


def test_zoh_kernel_matches_the_exact_one_step_map_of_the_continuous_system():
    torch.manual_seed(0)
    kernel = S4DKernel(3, state_size=8, dt_min=1e-3, dt_max=0.5).double()
    with torch.no_grad():  # spread the modes: fast and slow decay, several frequencies
        kernel.log_neg_real.copy_(torch.log(torch.tensor([[0.5, 2.0, 0.01, 5.0]] * 3, dtype=torch.float64)))
    L = 40
    with torch.no_grad():
        got = kernel(L, torch.float64).numpy()  # (H, L)
    lam = -np.exp(kernel.log_neg_real.detach().numpy()) + 1j * kernel.imag.detach().numpy()
    dt = np.exp(kernel.log_dt.detach().numpy())
    C = kernel.C.detach().numpy()[..., 0] + 1j * kernel.C.detach().numpy()[..., 1]
    for h in range(lam.shape[0]):
        want = np.zeros(L)
        for n in range(lam.shape[1]):
            dA, dB = van_loan(lam[h, n], dt[h])
            x = dB  # the state after one step of a unit input held from 0 to dt, then input 0
            for l in range(L):
                want[l] += 2 * (C[h, n] * x).real
                x = dA * x
        np.testing.assert_allclose(got[h], want, rtol=1e-9, atol=1e-12)
