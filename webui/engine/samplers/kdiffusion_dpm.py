"""DPM-Solver (Lu et al. 2022, https://arxiv.org/abs/2206.00927) behind sample_dpm_fast / sample_dpm_adaptive
in kdiffusion.py: k-diffusion's DPMSolver, in noise-prediction form over the time t = -log(sigma).

Times and sigmas are Python floats. Noise comes only from `noise_sampler(sigma, sigma_next)`; with eta = 0 it
would be multiplied by 0, so it is not drawn at all."""
from __future__ import annotations

import math

import torch

from .common import default_noise_sampler, get_ancestral_step


def _t(sigma):
    return -math.log(sigma) if sigma > 0 else math.inf


def _sigma(t):
    return math.exp(-t)


class PIDStepSizeController:
    """PID control of the step size h from the error estimates (error 1 = exactly at tolerance)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.81, eps=1e-8):
        self.h = h
        self.exponents = ((pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order)
        self.accept_safety = accept_safety
        self.eps = eps
        self.inv_errors = None  # this step's, the last accepted one's, the one before

    def propose_step(self, error) -> bool:
        """Scale h for the next try; True when this step is accepted."""
        inv_error = 1 / (float(error) + self.eps)
        if self.inv_errors is None:
            self.inv_errors = [inv_error] * 3
        self.inv_errors[0] = inv_error
        factor = 1.0
        for e, k in zip(self.inv_errors, self.exponents):
            factor *= e**k
        factor = 1 + math.atan(factor - 1)  # soft limiter
        accept = factor >= self.accept_safety
        if accept:
            self.inv_errors[1:] = self.inv_errors[:2]
        self.h *= factor
        return accept


class DPMSolver:
    """Steps of order 1-3 from t to t_next; every model call goes through eps()."""

    def __init__(self, model, extra_args=None, callback=None):
        self.model = model
        self.extra_args = extra_args or {}
        self.callback = callback

    def eps(self, x, t):
        sigma = _sigma(t)
        return (x - self.model(x, sigma * x.new_ones([x.shape[0]]), **self.extra_args)) / sigma

    def _report(self, info):
        if self.callback is not None:
            self.callback({"sigma": _sigma(info["t"]), "sigma_hat": _sigma(info["t_up"]), **info})

    @staticmethod
    def step_1(x, t, t_next, eps):
        return x - _sigma(t_next) * math.expm1(t_next - t) * eps

    def step_2(self, x, t, t_next, eps, r1=1 / 2, eps_r1=None):
        """(x at t_next, eps at t + r1*h): a third-order step with r1 = 1/3 can reuse the latter."""
        h = t_next - t
        s1 = t + r1 * h
        if eps_r1 is None:
            eps_r1 = self.eps(x - _sigma(s1) * math.expm1(r1 * h) * eps, s1)
        sigma_next = _sigma(t_next)
        x = x - sigma_next * math.expm1(h) * eps - sigma_next / (2 * r1) * math.expm1(h) * (eps_r1 - eps)
        return x, eps_r1

    def step_3(self, x, t, t_next, eps, r1=1 / 3, r2=2 / 3, eps_r1=None):
        h = t_next - t
        s1, s2 = t + r1 * h, t + r2 * h
        if eps_r1 is None:
            eps_r1 = self.eps(x - _sigma(s1) * math.expm1(r1 * h) * eps, s1)
        phi_r2 = math.expm1(r2 * h)
        u2 = x - _sigma(s2) * phi_r2 * eps - _sigma(s2) * (r2 / r1) * (phi_r2 / (r2 * h) - 1) * (eps_r1 - eps)
        eps_r2 = self.eps(u2, s2)
        sigma_next = _sigma(t_next)
        return x - sigma_next * math.expm1(h) * eps - sigma_next / r2 * (math.expm1(h) / h - 1) * (eps_r2 - eps)

    @staticmethod
    def _ancestral(t, t_next, t_end, eta):
        """(t to step to deterministically, sigma of the noise to add after) for an ancestral step."""
        if not eta:
            return t_next, 0.0
        sigma_down, _ = get_ancestral_step(_sigma(t), _sigma(t_next), eta)
        t_down = min(t_end, _t(sigma_down))
        return t_down, (_sigma(t_next) ** 2 - _sigma(t_down) ** 2) ** 0.5

    def fast(self, x, sigma_start, sigma_end, nfe, eta=0.0, s_noise=1.0, noise_sampler=None):
        """Equal steps in t of order 3, ending with 2+1 or nfe % 3, for exactly nfe model calls."""
        noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
        t_start, t_end = _t(sigma_start), _t(sigma_end)
        if not t_end > t_start and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        m = nfe // 3 + 1
        ts = [t_start + (t_end - t_start) * k / m for k in range(m)] + [t_end]
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        for i, order in enumerate(orders):
            t, t_next = ts[i], ts[i + 1]
            t_down, sigma_up = self._ancestral(t, t_next, t_end, eta)
            eps = self.eps(x, t)
            self._report({"x": x, "i": i, "t": t, "t_up": t, "denoised": x - _sigma(t) * eps})
            if order == 1:
                x = self.step_1(x, t, t_down, eps)
            elif order == 2:
                x, _ = self.step_2(x, t, t_down, eps)
            else:
                x = self.step_3(x, t, t_down, eps)
            if eta:
                x = x + sigma_up * s_noise * noise_sampler(_sigma(t), _sigma(t_next))
        return x

    def adaptive(self, x, sigma_start, sigma_end, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0,
                 icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0, noise_sampler=None):
        """Embedded pairs (1,2) or (2,3) estimate the error of each step; (x, info)."""
        noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
        if order not in {2, 3}:
            raise ValueError("order should be 2 or 3")
        t_start, t_end = _t(sigma_start), _t(sigma_end)
        forward = t_end > t_start
        if not forward and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        pid = PIDStepSizeController(abs(h_init) * (1 if forward else -1), pcoeff, icoeff, dcoeff,
                                    1.5 if eta else order, accept_safety)
        info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}
        s, x_prev = t_start, x
        while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
            t = min(t_end, s + pid.h) if forward else max(t_end, s + pid.h)
            t_down, sigma_up = self._ancestral(s, t, t_end, eta)
            eps = self.eps(x, s)
            denoised = x - _sigma(s) * eps
            if order == 2:
                x_low = self.step_1(x, s, t_down, eps)
                x_high, _ = self.step_2(x, s, t_down, eps)
            else:
                x_low, eps_r1 = self.step_2(x, s, t_down, eps, r1=1 / 3)
                x_high = self.step_3(x, s, t_down, eps, eps_r1=eps_r1)
            scale = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
            error = torch.linalg.norm((x_low - x_high) / scale) / x.numel() ** 0.5
            if pid.propose_step(error):
                x_prev, x = x_low, x_high
                if eta:
                    x = x + sigma_up * s_noise * noise_sampler(_sigma(s), _sigma(t))
                s = t
                info["n_accept"] += 1
            else:
                info["n_reject"] += 1
            info["nfe"] += order
            info["steps"] += 1
            self._report({"x": x, "i": info["steps"] - 1, "t": s, "t_up": s, "denoised": denoised, "error": error,
                          "h": pid.h, **info})
        return x, info
