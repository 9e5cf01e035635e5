"""Noise schedules ("Schedule type") for the k-diffusion samplers, as A1111 1.10.1 computes them.

Every schedule returns the sigmas a sampler walks through, highest first. The numbers follow A1111's
`modules/sd_schedulers.py` (and k-diffusion's get_sigmas_* for Karras, Exponential and Polyexponential) operation
for operation, in the same dtypes, so the same inputs give the same float32 values:

- the model's sigma_min / sigma_max enter as Python floats (A1111 takes `.item()` of the model's sigmas);
- schedules that walk the model's timesteps (SGM Uniform, Normal) convert one timestep at a time, as A1111 does,
  because a vectorised exp may round differently from a scalar one;
- the list-built schedules (SGM Uniform, AYS, Simple, Normal, DDIM, Beta) are rounded to float32 at the end.

Lengths and ends (n = steps asked for):

| schedule     | first sigma                           | last sigma        | length                     |
|--------------|---------------------------------------|-------------------|----------------------------|
| Uniform      | model's sigma at t=999 (~sigma_max)   | 0                 | n+1                        |
| Karras       | sigma_max                             | 0                 | n+1                        |
| Exponential  | sigma_max                             | 0                 | n+1                        |
| Polyexp.     | sigma_max                             | 0                 | n+1                        |
| SGM Uniform  | sigma at sigma_to_t(sigma_max)        | 0                 | n+1                        |
| KL Optimal   | tan(arctan(sigma_max)) ~ sigma_max    | ~sigma_min, NOT 0 | n+1                        |
| AYS          | 14.615 (table; ignores the model);    | 0                 | n+1                        |
|              | n=1: 0.029 (interp at x=0 = lowest)   |                   |                            |
| Simple       | model's sigmas[-1] (= sigma_max)      | 0                 | n+1                        |
| Normal       | sigma at sigma_to_t(sigma_max)        | 0                 | n+1                        |
| DDIM         | sigmas[1 + k*(1000//n)], highest k    | 0                 | ceil(999/(1000//n)) + 1    |
|              | (below sigma_max: 10 steps → t=901)   |                   |                            |
| Beta         | sigma_max                             | 0                 | n+1                        |

"Automatic" is listed (the UI offers it) but has no function: the caller resolves it to the sampler's default
schedule, or to the model's own `denoiser.get_sigmas(n)` when the sampler has none.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# Align Your Steps (NVIDIA, https://research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html): the
# published 10-step schedules (11 sigmas), as A1111 1.10.1 lists them.

BETA_DIST_ALPHA = 0.6  # A1111 settings beta_dist_alpha / beta_dist_beta
BETA_DIST_BETA = 0.6


@dataclass(frozen=True)
class Schedule:
    label: str  # what the UI and the infotext ("Schedule type") show
    key: str  # A1111's scheduler name (API `scheduler` accepts either)
    aliases: tuple[str, ...] = ()
    function: Callable[..., torch.Tensor] | None = None  # None only for Automatic
    default_rho: float = -1  # -1: the schedule has no rho, and the rho setting is ignored for it
    need_inner_model: bool = False  # walks the model's own training sigmas/timesteps


def _zero_appended(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


# --------------------------------------------------------------------------------------------- the schedules
# Each takes (n, sigma_min, sigma_max, **context) with context: denoiser, rho, ays_sigmas, beta_alpha, beta_beta.


def uniform(n, sigma_min, sigma_max, *, denoiser, **_):
    """The model's own discrete schedule (ignores sigma_min/max overrides, as A1111)."""
    return denoiser.get_sigmas(n)


def karras(n, sigma_min, sigma_max, *, rho=7.0, **_):
    """Karras et al. (2022): sigma_i^(1/rho) evenly spaced from sigma_max to sigma_min, then 0."""
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _zero_appended((hi + ramp * (lo - hi)) ** rho)


def exponential(n, sigma_min, sigma_max, **_):
    """log sigma evenly spaced from sigma_max to sigma_min, then 0."""
    return _zero_appended(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential(n, sigma_min, sigma_max, *, rho=1.0, **_):
    """log sigma = log sigma_min + (1 - i/(n-1))^rho * (log sigma_max - log sigma_min), then 0."""
    ramp = torch.linspace(1, 0, n) ** rho
    log_min = math.log(sigma_min)
    return _zero_appended(torch.exp(ramp * (math.log(sigma_max) - log_min) + log_min))


def _timestep_walk(n, sigma_min, sigma_max, denoiser, points):
    """`points` model timesteps evenly spaced from sigma_max's down to sigma_min's, each back to a sigma."""
    start = denoiser.sigma_to_t(torch.tensor(sigma_max))
    end = denoiser.sigma_to_t(torch.tensor(sigma_min))
    ts = torch.linspace(start, end, points)[:n]
    return [float(denoiser.t_to_sigma(t)) for t in ts]


def sgm_uniform(n, sigma_min, sigma_max, *, denoiser, **_):
    """n+1 timesteps evenly spaced from sigma_max's to sigma_min's, the last one dropped, then 0 (SGM's)."""
    return torch.tensor(_timestep_walk(n, sigma_min, sigma_max, denoiser, n + 1) + [0.0], dtype=torch.float32)


def normal(n, sigma_min, sigma_max, *, denoiser, **_):
    """n timesteps evenly spaced from sigma_max's to sigma_min's (both included), then 0."""
    return torch.tensor(_timestep_walk(n, sigma_min, sigma_max, denoiser, n) + [0.0], dtype=torch.float32)


def kl_optimal(n, sigma_min, sigma_max, **_):
    """KL-optimal schedule (arctan sigma linear in i) over n+1 points from sigma_max to sigma_min.

    A1111 1.10.1 does NOT append a 0: its n+1 values end at tan(arctan(sigma_min)) ~= sigma_min, so every sampler
    stops at sigma_min with that much noise left in the latent (ComfyUI's version ends in 0). Kept as A1111."""
    alpha_min = torch.arctan(torch.tensor(sigma_min))
    alpha_max = torch.arctan(torch.tensor(sigma_max))
    frac = torch.arange(n + 1) / n
    return torch.tan(frac * alpha_min + (1.0 - frac) * alpha_max)


def align_your_steps(n, sigma_min, sigma_max, *, ays_sigmas=None, **_):
    """NVIDIA's fixed 11-sigma table of the model's family (ModelFamily.ays_sigmas; SD1.5's when none is given),
    log-linearly resampled to n points when n != 11, then 0. Ignores the model's sigmas and the sigma_min/max
    overrides, as A1111."""
    if ays_sigmas is None:
        from ..models.families.sd1 import AYS_SD15 as ays_sigmas
    table = ays_sigmas
    if n == len(table):
        values = [*table, 0.0]
    else:
        # Interpolate log sigma over [0, 1] in ascending order, as A1111's loglinear_interp, then flip back.
        ascending = np.log(np.asarray(table[::-1], dtype=np.float64))
        resampled = np.exp(np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(table)), ascending))[::-1]
        values = [*resampled.tolist(), 0.0]
    return torch.tensor(values, dtype=torch.float32)


def simple(n, sigma_min, sigma_max, *, denoiser, **_):
    """Every (1000/n)-th training sigma counted down from the top (truncating the float index), then 0."""
    sigmas = denoiser.sigmas
    stride = len(sigmas) / n
    values = [float(sigmas[-(1 + int(i * stride))]) for i in range(n)]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


def ddim(n, sigma_min, sigma_max, *, denoiser, **_):
    """Training sigmas 1, 1+s, 1+2s, ... below 1000 with s = 1000 // n, highest first, then 0.

    As A1111, the count is ceil(999 / s), which is n only when s divides evenly enough: n=30 gives s=33 and 31
    sigmas (32 with the 0), so the sampler runs one step more than asked."""
    sigmas = denoiser.sigmas
    stride = max(len(sigmas) // n, 1)
    values = [float(sigmas[i]) for i in range(1, len(sigmas), stride)][::-1]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


def beta(n, sigma_min, sigma_max, *, beta_alpha=BETA_DIST_ALPHA, beta_beta=BETA_DIST_BETA, **_):
    """"Beta Sampling is All You Need" (Lee et al. 2024, arXiv:2407.12173), A1111 1.10.1's version: the Beta(a, b)
    quantiles of 1 - linspace(0, 1, n) mapped linearly onto [sigma_min, sigma_max] (sigma space, not the dev
    branch's timestep space), then 0."""
    from scipy import stats  # only this schedule needs scipy

    quantiles = [float(stats.beta.ppf(q, beta_alpha, beta_beta)) for q in 1 - np.linspace(0, 1, n)]
    values = [sigma_min + q * (sigma_max - sigma_min) for q in quantiles]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


SCHEDULES: list[Schedule] = [
    Schedule("Automatic", "automatic"),
    Schedule("Uniform", "uniform", function=uniform, need_inner_model=True),
    Schedule("Karras", "karras", function=karras, default_rho=7.0),
    Schedule("Exponential", "exponential", function=exponential),
    Schedule("Polyexponential", "polyexponential", function=polyexponential, default_rho=1.0),
    Schedule("SGM Uniform", "sgm_uniform", ("SGMUniform",), function=sgm_uniform, need_inner_model=True),
    Schedule("KL Optimal", "kl_optimal", function=kl_optimal),
    Schedule("Align Your Steps", "align_your_steps", function=align_your_steps),
    Schedule("Simple", "simple", function=simple, need_inner_model=True),
    Schedule("Normal", "normal", function=normal, need_inner_model=True),
    Schedule("DDIM", "ddim", function=ddim, need_inner_model=True),
    Schedule("Beta", "beta", function=beta, need_inner_model=True),
]


def find_schedule(name: str) -> Schedule:
    """By label, key or alias, case-insensitively ("karras", "SGM Uniform", "sgmuniform", "sgm_uniform")."""
    wanted = (name or "").strip().lower()
    for schedule in SCHEDULES:
        if wanted in (n.lower() for n in (schedule.label, schedule.key, *schedule.aliases)):
            return schedule
    raise ValueError(f"unknown schedule type {name!r}; choose one of: {', '.join(s.label for s in SCHEDULES)}")


def get_sigmas(schedule_label: str, steps: int, denoiser, *, sigma_min: float | None = None,
               sigma_max: float | None = None, rho: float | None = None, ays_sigmas=None,
               beta_alpha: float = BETA_DIST_ALPHA, beta_beta: float = BETA_DIST_BETA) -> torch.Tensor:
    """A1111's sigmas (float32, CPU) for `steps` steps of the named schedule.

    sigma_min / sigma_max / rho: A1111's settings; 0 or None means the model's value (rho: the schedule's own
    default; rho is ignored by schedules without one). `ays_sigmas`: the model family's Align Your Steps table. discard_next_to_last_sigma is the caller's: ask for steps+1 and drop the penultimate.
    """
    schedule = find_schedule(schedule_label)
    if schedule.function is None:
        raise ValueError("the Automatic schedule is resolved by the caller (the sampler's default, or the model's)")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    context = {"denoiser": denoiser, "ays_sigmas": ays_sigmas, "beta_alpha": beta_alpha, "beta_beta": beta_beta}
    if schedule.default_rho != -1:
        context["rho"] = float(rho) if rho else schedule.default_rho
    lo = float(sigma_min) if sigma_min else float(denoiser.sigma_min)
    hi = float(sigma_max) if sigma_max else float(denoiser.sigma_max)
    sigmas = schedule.function(steps, lo, hi, **context)
    return sigmas.to(device="cpu", dtype=torch.float32)
