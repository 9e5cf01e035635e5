"""Samplers written the way crowsonkb/k-diffusion (MIT) writes them: functions of
(model, x, sigmas, extra_args, callback, ..., noise_sampler) that return the final x.

The maths follows k-diffusion's `sampling.py` at the commit AUTOMATIC1111 1.10 pins (ab527a9, identical to
PyPI 0.1.1.post1 for sampling), plus A1111's own LCM and Restart samplers; tests/oracle/test_kdiffusion_samplers.py
checks each one against k-diffusion itself.

Noise never comes from the global RNG: `noise_sampler(sigma, sigma_next)` hands out per-image noise, so a
batch gives the same images as single runs. It is called exactly where k-diffusion draws noise (including
its `torch.randn_like` calls, which A1111 redirects to the per-image RNG), in the same order, so a stream
noise sampler replays A1111's noise. `model(x, sigma_batch, **extra_args)` returns the denoised x.
Sigmas are handled as Python floats; the tensors only carry x."""
from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import torch

from .common import default_noise_sampler, get_ancestral_step, to_d
from .kdiffusion_dpm import DPMSolver

__all__ = ["get_ancestral_step", "to_d"]  # re-exported: part of the k-diffusion-style interface


def _floats(sigmas):
    return sigmas.tolist() if torch.is_tensor(sigmas) else [float(s) for s in sigmas]


def _setup(x, sigmas, extra_args, noise_sampler):
    """(extra_args, noise_sampler, s_in, sigmas as floats): the common preamble."""
    if noise_sampler is None:
        noise_sampler = default_noise_sampler(x)
    return extra_args or {}, noise_sampler, x.new_ones([x.shape[0]]), _floats(sigmas)


def _report(callback, x, i, sigma, sigma_hat, denoised):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


def _ddim_step(x, sigma, sigma_to, denoised):
    """First-order DPM-Solver++ step (= DDIM = Euler in sigma) from sigma to sigma_to > 0:
    sigma_to/sigma * x - expm1(-h) * denoised with h = log(sigma / sigma_to)."""
    ratio = sigma_to / sigma
    return ratio * x + (1 - ratio) * denoised


def _churn(x, sigma, sigma_next, n_steps, s_churn, s_tmin, s_tmax, s_noise, noise_sampler):
    """Karras et al. (2022) Algorithm 2's churn: raise sigma to sigma_hat with fresh noise; (x, sigma_hat).
    The noise is drawn every step, used or not, as k-diffusion draws it."""
    gamma = min(s_churn / n_steps, 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    noise = noise_sampler(sigma, sigma_next)
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + noise * s_noise * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat


def _churn_loop(step, model, x, sigmas, extra_args, callback, s_churn, s_tmin, s_tmax, s_noise, noise_sampler):
    """Karras et al. (2022) Algorithm 2 with churn; `step` moves x from sigma_hat to sigma_next given d."""
    extra_args, noise_sampler, s_in, sigmas = _setup(x, sigmas, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x, sigma_hat = _churn(x, sigma, sigma_next, len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise,
                              noise_sampler)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigma, sigma_hat, denoised)
        x = step(model, x, sigma_hat, sigma_next, d, s_in, extra_args)
    return x


def _euler_step(model, x, sigma, sigma_to, d, s_in, extra_args):
    return x + d * (sigma_to - sigma)


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, s_churn=0.0, s_tmin=0.0,
                 s_tmax=float("inf"), s_noise=1.0, noise_sampler=None):
    """Euler (Karras et al. 2022 Algorithm 2, with optional churn)."""
    return _churn_loop(_euler_step, model, x, sigmas, extra_args, callback, s_churn, s_tmin, s_tmax, s_noise,
                       noise_sampler)


def _ancestral_loop(step, add_noise, model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler):
    """Deterministic `step` down to sigma_down, then fresh noise up to sigma_next where `add_noise` says."""
    extra_args, noise_sampler, s_in, sigmas = _setup(x, sigmas, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta=eta)
        _report(callback, x, i, sigma, sigma, denoised)
        x = step(model, x, sigma, sigma_down, to_d(x, sigma, denoised), s_in, extra_args)
        if add_noise(sigma_next, sigma_down):
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, eta=1.0, s_noise=1.0,
                           noise_sampler=None):
    """Ancestral sampling with Euler steps."""
    return _ancestral_loop(_euler_step, lambda sigma_next, sigma_down: sigma_next > 0, model, x, sigmas,
                           extra_args, callback, eta, s_noise, noise_sampler)


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, s_churn=0.0, s_tmin=0.0,
                s_tmax=float("inf"), s_noise=1.0, noise_sampler=None):
    """Heun (Karras et al. 2022 Algorithm 2): Euler predictor, trapezoidal corrector; Euler into sigma 0."""
    return _churn_loop(_heun_step, model, x, sigmas, extra_args, callback, s_churn, s_tmin, s_tmax, s_noise,
                       noise_sampler)


def _heun_step(model, x, sigma, sigma_to, d, s_in, extra_args):
    """Euler predictor, trapezoidal corrector; a plain Euler step into sigma 0."""
    dt = sigma_to - sigma
    if sigma_to == 0:
        return x + d * dt
    x_pred = x + d * dt
    d_pred = to_d(x_pred, sigma_to, model(x_pred, sigma_to * s_in, **extra_args))
    return x + (d + d_pred) / 2 * dt


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, s_churn=0.0, s_tmin=0.0,
                 s_tmax=float("inf"), s_noise=1.0, noise_sampler=None):
    """DPM2: the slope at the log-midpoint sigma (DPM-Solver-2) inside Karras' Algorithm 2."""
    return _churn_loop(_dpm2_step, model, x, sigmas, extra_args, callback, s_churn, s_tmin, s_tmax, s_noise,
                       noise_sampler)


def _dpm2_step(model, x, sigma, sigma_to, d, s_in, extra_args):
    if sigma_to == 0:
        return x + d * (sigma_to - sigma)
    sigma_mid = (sigma * sigma_to) ** 0.5  # geometric mean = midpoint in log sigma
    x_mid = x + d * (sigma_mid - sigma)
    d_mid = to_d(x_mid, sigma_mid, model(x_mid, sigma_mid * s_in, **extra_args))
    return x + d_mid * (sigma_to - sigma)


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, eta=1.0, s_noise=1.0,
                           noise_sampler=None):
    """Ancestral sampling with DPM2 steps. As k-diffusion: no noise after a final Euler step (even if eta > 1)."""
    return _ancestral_loop(_dpm2_step, lambda sigma_next, sigma_down: sigma_down != 0, model, x, sigmas,
                           extra_args, callback, eta, s_noise, noise_sampler)


def linear_multistep_coeff(order, t, i, j):
    """Integral over [t[i], t[i+1]] of the Lagrange basis polynomial of node t[i-j] among the nodes
    t[i], ..., t[i-order+1]; Gauss-Legendre with `order` points is exact for that degree."""
    if order - 1 > i:
        raise ValueError(f"Order {order} too high for step {i}")
    a, b = t[i], t[i + 1]
    total = 0.0
    for u, w in zip(*np.polynomial.legendre.leggauss(order)):
        tau = (a + b) / 2 + (b - a) / 2 * float(u)
        basis = 1.0
        for k in range(order):
            if k != j:
                basis *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        total += float(w) * basis
    return total * (b - a) / 2


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, order=4, noise_sampler=None):
    """Linear multistep (Adams-Bashforth in sigma) over the last `order` derivatives."""
    extra_args, _, s_in, sigmas = _setup(x, sigmas, extra_args, noise_sampler)
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        ds = (ds + [to_d(x, sigmas[i], denoised)])[-order:]
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        cur_order = min(i + 1, order)
        coeffs = [linear_multistep_coeff(cur_order, sigmas, i, j) for j in range(cur_order)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))  # node i-j goes with ds[-1-j]
    return x


@torch.no_grad()
def sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=None, callback=None, eta=0.0, s_noise=1.0,
                    noise_sampler=None):
    """DPM-Solver-Fast (fixed steps of order 3, 3, ..., then 2/1 to use exactly n model calls)."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    solver = DPMSolver(model, extra_args, callback)
    return solver.fast(x, float(sigma_max), float(sigma_min), n, eta, s_noise, noise_sampler)


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigma_min, sigma_max, extra_args=None, callback=None, order=3, rtol=0.05,
                        atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81,
                        eta=0.0, s_noise=1.0, noise_sampler=None, return_info=False):
    """DPM-Solver-12/23 with a PID-controlled adaptive step size; (x, info) with return_info."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    solver = DPMSolver(model, extra_args, callback)
    x, info = solver.adaptive(x, float(sigma_max), float(sigma_min), order, rtol, atol, h_init, pcoeff, icoeff,
                              dcoeff, accept_safety, eta, s_noise, noise_sampler)
    return (x, info) if return_info else x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, eta=1.0, s_noise=1.0,
                              noise_sampler=None):
    """Ancestral sampling with DPM-Solver++(2S) steps (second model call at the log-midpoint)."""
    extra_args, noise_sampler, s_in, sigmas = _setup(x, sigmas, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta=eta)
        _report(callback, x, i, sigma, sigma, denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        else:
            sigma_mid = (sigma * sigma_down) ** 0.5
            x_mid = _ddim_step(x, sigma, sigma_mid, denoised)
            x = _ddim_step(x, sigma, sigma_down, model(x_mid, sigma_mid * s_in, **extra_args))
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, eta=1.0, s_noise=1.0, noise_sampler=None,
                     r=1 / 2):
    """DPM-Solver++ (stochastic, two stages per step). Meant for a Brownian-tree noise sampler."""
    extra_args, noise_sampler, s_in, sigmas = _setup(x, sigmas, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        _report(callback, x, i, sigma, sigma, denoised)
        if sigma_next == 0:
            x = x + to_d(x, sigma, denoised) * (sigma_next - sigma)
            continue
        # stage 1: an ancestral first-order step to the point r of the way along h = log(sigma / sigma_next)
        sigma_s = sigma * (sigma_next / sigma) ** r
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_s, eta)
        x_s = _ddim_step(x, sigma, sigma_down, denoised) + noise_sampler(sigma, sigma_s) * s_noise * sigma_up
        denoised_s = model(x_s, sigma_s * s_in, **extra_args)
        # stage 2: the whole step with the denoised estimates blended
        fac = 1 / (2 * r)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        x = _ddim_step(x, sigma, sigma_down, (1 - fac) * denoised + fac * denoised_s)
        x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, noise_sampler=None):
    """DPM-Solver++(2M): second order from the previous step's denoised estimate."""
    extra_args, _, s_in, sigmas = _setup(x, sigmas, extra_args, noise_sampler)
    old_denoised = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        _report(callback, x, i, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        elif old_denoised is None:
            x = _ddim_step(x, sigma, sigma_next, denoised)
        else:
            r = math.log(sigmas[i - 1] / sigma) / math.log(sigma / sigma_next)  # h_last / h
            x = _ddim_step(x, sigma, sigma_next, (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * old_denoised)
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None, solver_type="midpoint"):
    """DPM-Solver++(2M) SDE, 'midpoint' or 'heun' second-order correction. Meant for a Brownian tree."""
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    extra_args, noise_sampler, s_in, sigmas = _setup(x, sigmas, extra_args, noise_sampler)
    old_denoised = h_last = h = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        _report(callback, x, i, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            eta_h = eta * h
            phi_1 = -math.expm1(-h - eta_h)  # 1 - exp(-(1 + eta) h)
            x = sigma_next / sigma * math.exp(-eta_h) * x + phi_1 * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + (phi_1 / (-h - eta_h) + 1) / r * (denoised - old_denoised)
                else:
                    x = x + 0.5 * phi_1 / r * (denoised - old_denoised)
            if eta:
                noise = noise_sampler(sigma, sigma_next)
                x = x + noise * sigma_next * (-math.expm1(-2 * eta_h)) ** 0.5 * s_noise
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None):
    """DPM-Solver++(3M) SDE: third order from the two previous denoised estimates. Meant for a Brownian tree."""
    extra_args, noise_sampler, s_in, sigmas = _setup(x, sigmas, extra_args, noise_sampler)
    denoised_1 = denoised_2 = h_1 = h_2 = h = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        _report(callback, x, i, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            if eta:
                noise = noise_sampler(sigma, sigma_next)
                x = x + noise * sigma_next * (-math.expm1(-2 * h * eta)) ** 0.5 * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, noise_sampler=None):
    """LCM (A1111's sd_samplers_lcm): jump to the denoised estimate, re-noise to the next sigma."""
    extra_args, noise_sampler, s_in, sigmas = _setup(x, sigmas, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        _report(callback, x, i, sigma, sigma, denoised)
        x = denoised
        if sigma_next > 0:
            x = x + sigma_next * noise_sampler(sigma, sigma_next)
    return x


def _karras(n, sigma_min, sigma_max, rho=7.0):
    """k-diffusion's get_sigmas_karras (float32, trailing 0) as a list of floats."""
    ramp = torch.linspace(0, 1, n)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [float(s) for s in (max_inv + ramp * (min_inv - max_inv)) ** rho] + [0.0]


def _nearest(sigmas, value):
    """Index of the sigma nearest to value (the first on a tie)."""
    return min(range(len(sigmas)), key=lambda k: abs(sigmas[k] - value))


def restart_plan(sigmas, restart_list=None):
    """A1111's Restart plan: the list of (sigma_from, sigma_to) Heun steps. restart_list maps a sigma where a
    restart begins to [points in the restart schedule, how many times, the sigma to jump back up to]; by
    default, from 20 steps on, the run keeps its step count by moving 9 (36+ steps: 2 x steps//4) of them
    into restarts near sigma 0.1 back up to 2, and the main schedule becomes Karras over the rest."""
    sigmas = _floats(sigmas)
    steps = len(sigmas) - 1
    if restart_list is None:
        restart_list = {}
        if steps >= 20:
            n_restart, times = (steps // 4, 2) if steps >= 36 else (9, 1)
            sigmas = _karras(steps - n_restart * times, sigmas[-2], sigmas[0])
            restart_list = {0.1: [n_restart + 1, times, 2]}
    at = {_nearest(sigmas, key): value for key, value in restart_list.items()}
    plan = []
    for i in range(len(sigmas) - 1):
        plan.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in at:
            n_points, times, restart_max = at[i + 1]
            top = _nearest(sigmas, restart_max)
            if top < i + 1:
                restart = _karras(n_points, sigmas[i + 1], sigmas[top])[:-1]
                plan += list(pairwise(restart)) * times
    return plan


@torch.no_grad()
def restart_sampler(model, x, sigmas, extra_args=None, callback=None, s_noise=1.0, restart_list=None,
                    noise_sampler=None):
    """Restart sampling (Xu et al. 2023) as A1111's sd_samplers_extra: Heun steps along restart_plan(); where
    the plan jumps back up in sigma, fresh noise brings x to the higher level first."""
    extra_args, noise_sampler, s_in, _ = _setup(x, sigmas, extra_args, noise_sampler)
    last_sigma = None
    for i, (sigma, sigma_next) in enumerate(restart_plan(sigmas, restart_list)):
        if last_sigma is not None and last_sigma < sigma:
            x = x + noise_sampler(sigma, last_sigma) * s_noise * (sigma**2 - last_sigma**2) ** 0.5
        denoised = model(x, sigma * s_in, **extra_args)
        d = to_d(x, sigma, denoised)
        _report(callback, x, i, sigma_next, sigma, denoised)  # sic: A1111 reports the target as "sigma"
        x = _heun_step(model, x, sigma, sigma_next, d, s_in, extra_args)
        last_sigma = sigma_next
    return x
