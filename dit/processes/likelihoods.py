"""Gaussian KL and the discretised Gaussian likelihood of 8-bit data: the terms of the variational
bound the hybrid loss trains the variance with (DDPM §3.3, Improved DDPM §3.1)."""

import math

import torch


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x):
    """Phi(x) ~ 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the approximation Improved DDPM uses."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log p(x) for data in [-1, 1] quantised to 256 levels (bin width 2/255) under N(means, e^(2 log_scales)),
    DDPM §3.3 eq. 13; the edge bins extend to -inf / +inf. Elementwise, in nats."""
    inv_std = torch.exp(-log_scales)
    centered = x - means
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))  # the bin (-inf, x + 1/255]
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))  # the bin [x - 1/255, inf)
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
