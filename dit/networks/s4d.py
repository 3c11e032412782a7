"""S4D: diagonal state space layers (Gu, Gupta, Goel & Ré 2022, "On the Parameterization and
Initialization of Diagonal State Space Models"), the long-range core of DiffuSSM.

Layout: u (B, L, H), L positions along the sequence and H independent channels on the last axis,
as the transformer's tokens. Each channel h is a linear time-invariant system

    x'(t) = A x(t) + B u(t),   y(t) = C x(t) + D u(t),   A diagonal,

with state size N held as N/2 complex modes lambda_n (the other N/2 are their conjugates, which
is where the factor 2 Re below comes from).

Parameterisation and initialisation (S4D §3-4, S4D-Lin):
- lambda_n = -exp(log_neg_real_n) + i * imag_n, initialised -1/2 + i*pi*n, n = 0..N/2-1; the real
  part is negative by construction, so every mode decays whatever the optimiser does;
- Delta = exp(log_dt), log Delta ~ U[log 1e-3, log 1e-1], one step size per channel;
- B = 1, fixed (S4D: a trainable B is redundant with C for a diagonal A);
- C complex normal, real and imaginary parts each N(0, 1/2) (E|C_n|^2 = 1);
- D (here `skip`) real, one per channel, initialised to ONES: the layer starts as the identity
  plus a small long-range term (|K| is of order Delta).

Zero-order hold (S4D eq. 4): dA = exp(Delta lambda), dB = (exp(Delta lambda) - 1) / lambda * B.
Kernel: K_l = 2 Re sum_n C_n dB_n dA_n^l, l = 0..L-1, computed once per forward through the
Vandermonde matrix dA_n^l = exp(Delta lambda_n l). The convolution y = K * u + D u runs as an FFT
of length 2L (no wrap-around), for any L.

Bidirectional convention (BiSSM). Two independent kernels, forward Kf and backward Kb, each with
its own Delta, lambda and C; one D. We use the single length-2L kernel [Kf, flip(Kb)]:

    y[n] = sum_{m<=n} Kf[n-m] u[m]  +  sum_{m>n} Kb[m-n-1] u[m]  +  D u[n],

causal plus STRICTLY anti-causal: the backward part sees u[n+1:] only, so u[n] is counted once
(by Kf[0] and D). "Flip, causal conv, flip" is a different layer: it counts u[n] a second time
through Kb[0] (tests/test_diffussm.py pins ours against it).

Precision: the kernel is built in complex64 (complex128 only for float64 inputs, for tests) and
the FFT runs in float32 with autocast disabled, whatever autocast would pick: bf16/fp16 FFTs of
long kernels lose the small tail of K. The output is cast back to the input's dtype.
Memory: the Vandermonde matrix is (H, N/2, L) complex per direction and autograd keeps it; at
DiffuSSM-XL's H = 1152, N = 64, L = 1024 that is about 0.3 GB per direction and block.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

from dit.networks.base import AnalyticCost

__all__ = ["S4D", "S4DKernel", "fft_conv", "recurrence", "reference", "s4d_macs"]

DT_MIN, DT_MAX = 1e-3, 1e-1  # S4D's range of log-uniform step sizes


def _compute_dtypes(dtype: torch.dtype) -> tuple[torch.dtype, torch.dtype]:
    """(real, complex) dtype the SSM computes in for inputs of `dtype`: float64 for float64 (tests),
    float32 for everything else (float32 itself, and bf16/fp16 under autocast)."""
    return (torch.float64, torch.complex128) if dtype == torch.float64 else (torch.float32, torch.complex64)


class S4DKernel(nn.Module):
    """The S4D-Lin kernel generator of H channels with state size N (N/2 complex modes each)."""

    def __init__(self, channels: int, state_size: int = 64, dt_min: float = DT_MIN, dt_max: float = DT_MAX):
        super().__init__()
        if state_size % 2:
            raise ValueError(f"S4D's state size counts conjugate pairs and must be even, got {state_size}")
        H, half = channels, state_size // 2
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)  # (H,)
        self.log_neg_real = nn.Parameter(torch.full((H, half), math.log(0.5)))  # Re lambda = -1/2
        self.imag = nn.Parameter(math.pi * torch.arange(half, dtype=torch.float32).repeat(H, 1))  # Im lambda = pi n
        # C as (real, imag) pairs: complex Parameters do not survive .to(bfloat16), safetensors or every optimiser.
        self.C = nn.Parameter(torch.randn(H, half, 2) * math.sqrt(0.5))  # (H, N/2, 2)

    def discrete(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Delta lambda, dB, C), each (H, N/2) complex; dA = exp(Delta lambda). ZOH, S4D eq. 4, B = 1."""
        real, _ = _compute_dtypes(dtype)
        lam = torch.complex(-torch.exp(self.log_neg_real.to(real)), self.imag.to(real))  # (H, N/2)
        dt_lam = lam * torch.exp(self.log_dt.to(real)).unsqueeze(-1)
        dB = torch.expm1(dt_lam) / lam  # expm1: exact for the small Delta lambda of slow channels
        return dt_lam, dB, torch.view_as_complex(self.C.to(real))

    def forward(self, length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """K (H, length), real: K_l = 2 Re sum_n C_n dB_n exp(Delta lambda_n l)."""
        real, _ = _compute_dtypes(dtype)
        dt_lam, dB, C = self.discrete(dtype)
        steps = torch.arange(length, dtype=real, device=dt_lam.device)
        vandermonde = torch.exp(dt_lam.unsqueeze(-1) * steps)  # (H, N/2, L)
        return 2 * torch.einsum("hn,hnl->hl", C * dB, vandermonde).real


def fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y (B, L, H) = k * u along L, linear (not circular) thanks to length-2L padding.

    u (B, L, H); k (H, L) a causal kernel (zero-padded to 2L), or (H, 2L) the two-sided kernel
    [Kf, flip(Kb)] read circularly: index 2L + d holds the weight of lag d < 0.
    """
    L = u.shape[1]
    n = 2 * L
    spectrum = torch.fft.rfft(u, n=n, dim=1) * torch.fft.rfft(k, n=n, dim=-1).transpose(0, 1)  # (B, L+1, H)
    return torch.fft.irfft(spectrum, n=n, dim=1)[:, :L]


class S4D(nn.Module, AnalyticCost):
    """An S4D layer, (B, L, H) -> (B, L, H): y = K * u + D u, bidirectional by default (module docstring)."""

    def __init__(self, channels: int, state_size: int = 64, bidirectional: bool = True):
        super().__init__()
        self.bidirectional = bidirectional
        self.forward_kernel = S4DKernel(channels, state_size)
        self.backward_kernel = S4DKernel(channels, state_size) if bidirectional else None
        self.skip = nn.Parameter(torch.ones(channels))  # D

    def kernel(self, length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(H, L) causal, or (H, 2L) = [Kf, flip(Kb)]: the causal plus strictly anti-causal kernel."""
        k = self.forward_kernel(length, dtype)
        if self.bidirectional:
            k = torch.cat([k, self.backward_kernel(length, dtype).flip(-1)], dim=-1)
        return k

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        real, _ = _compute_dtypes(u.dtype)
        # FFTs in float32, whatever autocast says (no autocast context on devices without one, e.g. meta)
        off = torch.autocast(device_type=u.device.type, enabled=False) \
            if torch.amp.is_autocast_available(u.device.type) else contextlib.nullcontext()
        with off:
            v = u.to(real)
            y = fft_conv(v, self.kernel(u.shape[1], real)) + v * self.skip.to(real)
        return y.to(u.dtype)

    def analytic_macs(self, shape: tuple[int, ...]) -> dict[str, float]:
        """s4d_macs at u's shape (B, L, H): FlopCounterMode sees no FFT (dit/analysis/flops.py)."""
        B, L, H = shape
        kernel, fft = s4d_macs(L, H, 2 * self.forward_kernel.C.shape[1], self.bidirectional, B)
        return {"kernel": kernel, "fft": fft}


# --- Its cost: FFTs and kernel generation, which FlopCounterMode does not see (dit/analysis/flops.py) ---

REAL_FFT_FLOPS = 2.5  # x n log2 n: a real FFT (or inverse) of length n; see s4d_macs
COMPLEX_EXP_FLOPS = 5  # e^a (cos b + i sin b): 3 transcendentals at 1 FLOP each + 2 multiplies
COMPLEX_MUL_FLOPS = 6  # 4 multiplies + 2 adds
COMPLEX_MAC_FLOPS = 8  # a complex multiply plus a complex add


def real_fft_flops(n: int) -> float:
    """FLOPs of one real-input FFT (rfft) or real-output inverse (irfft) of length n."""
    return REAL_FFT_FLOPS * n * math.log2(n)


def s4d_macs(length: int, channels: int, state_size: int, bidirectional: bool = True,
             batch: int = 1) -> tuple[float, float]:
    """(kernel, fft): the analytic MACs of one forward of an S4D layer (dit/networks/s4d.py) on
    u (batch, length, channels), state size N (N/2 complex modes per channel and direction).
    FLOPs are counted as below and converted to MACs as dit/analysis/flops.py counts: MACs = FLOPs / 2.

    Conventions. A real FFT of length n costs (5/2) n log2 n FLOPs: the radix-2 count of 5 n log2 n
    for a complex FFT (FFTW's benchmark convention, used for any n), halved because a real
    transform is about half a complex one of the same length (rfft and irfft alike). A
    transcendental (exp, cos, sin) counts as 1 FLOP, so exp(a + ib) = e^a (cos b + i sin b) is
    3 + 2 = 5; a complex multiply is 6 FLOPs (4 multiplies, 2 adds), a complex multiply-add 8.

    Kernel generation (S4DKernel.forward), per direction, with L = length, H = channels:
        z_hnl = (Delta lambda)_hn * l          complex x real         2 FLOPs  per (h, n, l)
        V_hnl = exp(z_hnl)                     the Vandermonde matrix 5 FLOPs  per (h, n, l)
        K_hl  = sum_n (C dB)_hn V_hnl          complex multiply-add   8 FLOPs  per (h, n, l)
        K_hl <- 2 Re K_hl                                             1 FLOP   per (h, l)
      = H L (15 N/2 + 1) FLOPs, times 2 directions when bidirectional. The kernel is built once per
      forward, whatever the batch: at batch B each image carries 1/B of it (this count is for the
      whole call). Left out: the discretisation (lambda, expm1, dB, C dB), O(H N) with no factor L.

    FFT convolution (fft_conv), n = 2L (zero padding, so the circular convolution is linear):
        rfft of the kernel, H transforms           H (5/2) n log2 n    (once per forward, as the kernel)
        rfft of the input, B H transforms          B H (5/2) n log2 n
        spectrum product, B H (L + 1) bins          B H (L + 1) 6
        irfft, B H transforms                      B H (5/2) n log2 n
      The bidirectional kernel [Kf, flip(Kb)] is one length-2L kernel: one convolution either way.
      Left out: the skip term D u (elementwise, as the norms and activations the paper's counts
      leave out) and the concatenation and flip (no arithmetic).
    """
    L, H, half = length, channels, state_size // 2
    directions = 2 if bidirectional else 1
    kernel = directions * H * L * ((2 + COMPLEX_EXP_FLOPS + COMPLEX_MAC_FLOPS) * half + 1)
    fft = real_fft_flops(2 * L)
    conv = H * fft + batch * H * (2 * fft + COMPLEX_MUL_FLOPS * (L + 1))
    return kernel / 2, conv / 2


# --- The reference: the same layer as a step-by-step recurrence, for the tests ---------------------


def recurrence(u: torch.Tensor, dt_lam: torch.Tensor, dB: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Causal SSM by its recurrence: x_k = dA x_{k-1} + dB u_k, y_k = 2 Re(C x_k); u (B, L, H) real,
    the rest (H, N/2) complex (S4DKernel.discrete). O(L) Python steps: for tests only."""
    dA = torch.exp(dt_lam)
    x = torch.zeros(u.shape[0], *dA.shape, dtype=dA.dtype, device=u.device)  # (B, H, N/2)
    ys = []
    for k in range(u.shape[1]):
        x = dA * x + dB * u[:, k, :, None]
        ys.append(2 * (C * x).sum(-1).real)
    return torch.stack(ys, dim=1)  # (B, L, H)


def reference(layer: S4D, u: torch.Tensor) -> torch.Tensor:
    """`layer`'s output by recurrence, in u's precision (float64 for the exact check). The backward
    SSM runs over the reversed sequence and is shifted by one, so position n sees u[n+1:] only."""
    real, _ = _compute_dtypes(u.dtype)
    u = u.to(real)
    y = recurrence(u, *layer.forward_kernel.discrete(real)) + u * layer.skip.to(real)
    if layer.bidirectional:
        z = recurrence(u.flip(1), *layer.backward_kernel.discrete(real)).flip(1)  # z[n] = sum_{m>=n} Kb[m-n] u[m]
        y = y + torch.cat([z[:, 1:], torch.zeros_like(z[:, :1])], dim=1)  # strictly after n: z[n+1]
    return y
