"""What the k-diffusion-style samplers share (kdiffusion.py and the DPM-Solver in kdiffusion_dpm.py both import
it; neither imports the other's internals)."""
from __future__ import annotations

import torch


def to_d(x, sigma, denoised):
    """Karras ODE derivative dx/dsigma."""
    return (x - denoised) / sigma


def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    """Split a step to sigma_to into a deterministic part (down) and fresh noise (up)."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def default_noise_sampler(x):
    """Global-RNG noise, only for direct calls without a noise sampler (jobs always pass one)."""
    return lambda sigma, sigma_next: torch.randn_like(x)
