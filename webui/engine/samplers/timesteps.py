"""A1111's timestep-based samplers: DDIM, PLMS and UniPC (`modules/sd_samplers_timesteps_impl.py` and
`modules/models/diffusion/uni_pc/uni_pc.py` of A1111 1.10.1), written over our k-diffusion-style model.

These samplers live in the VP ("variance preserving") parameterisation of the original LDM code: the latent at
training timestep t is x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, with a_t = alphas_cumprod[t]. So, unlike the
k-diffusion samplers, they START FROM UNIT-VARIANCE NOISE: A1111 does not multiply the initial noise by
sigma_max for them. What they return is the VP latent at the last timestep they reach (DDIM/PLMS: timestep 1,
not 0; UniPC: continuous time 1/1000, i.e. timestep 0), which the VAE decodes as is.

Our pipeline's model is `model(x, sigma) -> denoised` (k-diffusion's CompVisDenoiser semantics, classifier-free
guidance inside). `EpsModel` turns it into the epsilon predictor over timesteps that these samplers call: for
timestep t, sigma_t = sqrt((1 - a_t) / a_t) and x_k = x_vp / sqrt(a_t) = x_vp * sqrt(1 + sigma_t^2), so the UNet
sees exactly the input and timestep A1111's apply_model gets, and eps = (x_k - denoised) / sigma_t. CFG on
`denoised` is CFG on eps (denoised is affine in eps with the same x), so guidance is unchanged.

Model evaluations, with T = len(get_timesteps(steps)) = ceil(1000 / (1000 // steps)) (T = steps for 10, 20, 25,
40, 50 steps, but 7 → 8 and 30 → 31):
- DDIM: T - 1 (10 steps → 9). The loop runs over timesteps[T-1] … timesteps[1]; timesteps[0] is only the target.
- PLMS: T (10 steps → 10): T - 1 steps, the first of which evaluates twice (pseudo improved Euler).
- UniPC: T (10 steps → 10): its own T+1 times from 1 to 1/1000, one evaluation per time but the last.
"""
from __future__ import annotations

import math

import torch

# A1111's UniPC settings and their defaults (shared_options.py): uni_pc_variant, uni_pc_skip_type,
# uni_pc_order, uni_pc_lower_order_final.
UNIPC_VARIANT = "bh1"
UNIPC_SKIP_TYPE = "time_uniform"
UNIPC_ORDER = 3
UNIPC_LOWER_ORDER_FINAL = True


def get_timesteps(steps: int) -> torch.Tensor:
    """A1111's CompVisSampler.get_timesteps: clip(range(0, 1000, 1000 // steps) + 1, 0, 999), ascending int64.

    The count is len(range(0, 1000, 1000 // steps)): 10 steps → [1, 101, ..., 901]; 30 steps → stride 33 and 31
    timesteps (1 ... 991). The highest is never 999 unless steps > 500."""
    if not 1 <= steps <= 1000:
        raise ValueError(f"timestep samplers take 1 to 1000 steps, got {steps}")
    return torch.clip(torch.arange(0, 1000, 1000 // steps, dtype=torch.int64) + 1, 0, 999)


class EpsModel:
    """(x_vp, timesteps) -> eps, from the k-diffusion-style `model(x, sigma) -> denoised`. Timesteps may be
    fractional (UniPC): sigma is then interpolated in log sigma between training timesteps, as k-diffusion's
    t_to_sigma, so our denoiser's sigma_to_t hands the UNet the same fractional timestep."""

    def __init__(self, model, alphas_cumprod: torch.Tensor, extra_args: dict | None = None):
        self.model = model
        self.extra_args = extra_args or {}
        ac = alphas_cumprod.detach().to("cpu", torch.float32)
        self.sigmas = ((1 - ac) / ac) ** 0.5  # bit-identical to DiscreteEpsDenoiser.sigmas for the same a_t
        self.log_sigmas = self.sigmas.log()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """k-diffusion sigma of (batched) timesteps t, float32 on the CPU."""
        t = t.detach().to("cpu", torch.float32).clamp(0, len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        interpolated = ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()
        return torch.where(w == 0, self.sigmas[low], interpolated)  # whole timesteps: the training sigma itself

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = self.sigma(t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t)
        s = sigma.to(x.device, x.dtype)[:, None, None, None]
        x_k = x * (1 + s**2).sqrt()  # x_vp / sqrt(a_t)
        denoised = self.model(x_k, sigma.to(x.device), **self.extra_args)
        return (x_k - denoised) / s


def _report(callback, x, i, sigma, denoised):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


def _vp_tables(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor):
    """alphas (float32) and alphas_prev (float64: a_t of the timestep before, alphas_cumprod[0] before the first),
    as A1111's ddim/plms build them."""
    ac = alphas_cumprod.detach().to("cpu", torch.float32)
    timesteps = timesteps.detach().to("cpu", torch.int64)
    alphas = ac[timesteps]
    alphas_prev = ac[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    return timesteps, alphas, alphas_prev


@torch.no_grad()
def sample_ddim(model, x, timesteps, alphas_cumprod, extra_args=None, callback=None, eta=0.0, noise_sampler=None):
    """DDIM (Song et al. 2020) as A1111's `ddim`: x starts as unit-variance noise (not times sigma_max);
    len(timesteps) - 1 model calls, at timesteps[-1] down to timesteps[1], landing on timesteps[0]'s noise level
    (10 steps: 9 calls at 901 … 101, returning the latent at timestep 1, not a final pred_x0).

    Noise: A1111 draws one noise tensor every step (randn_like via its TorchHijack: the per-image RNG) and scales it
    by the step's eta sigma, 0 when eta = 0. Here it comes from noise_sampler(sigma, sigma_next), called every step
    as A1111 draws, so the per-image stream advances the same; with eta = 0 and no noise_sampler nothing is drawn.
    eta != 0 without a noise_sampler is an error (no hidden global RNG)."""
    if eta and noise_sampler is None:
        raise ValueError("DDIM with eta > 0 needs a noise_sampler")
    eps_model = EpsModel(model, alphas_cumprod, extra_args)
    timesteps, alphas, alphas_prev = _vp_tables(timesteps, alphas_cumprod)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    # eta * sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev)), in float64 from the float32 a's, as A1111's numpy mix
    sigmas = eta * torch.sqrt((1 - alphas_prev) / (1 - alphas).to(torch.float64)
                              * (1 - alphas.to(torch.float64) / alphas_prev))

    s_in = x.new_ones([x.shape[0]])
    s_x = x.new_ones([x.shape[0], 1, 1, 1])
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = eps_model(x, timesteps[index].item() * s_in)

        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sigma_t = sigmas[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x

        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_t
        x = a_prev.sqrt() * pred_x0 + dir_xt
        sigma_from = float(eps_model.sigmas[timesteps[index]])
        sigma_to = float(eps_model.sigmas[timesteps[index - 1]])
        if noise_sampler is not None:
            noise = noise_sampler(sigma_from, sigma_to)
            x = x + sigma_t * noise

        _report(callback, x, i, sigma_from, pred_x0)
    return x


@torch.no_grad()
def sample_plms(model, x, timesteps, alphas_cumprod, extra_args=None, callback=None, noise_sampler=None):
    """PLMS (pseudo linear multistep, Liu et al. 2022) as A1111's `plms`: x starts as unit-variance noise;
    len(timesteps) - 1 steps, the first a pseudo improved Euler step (two model calls), then Adams-Bashforth of
    order 2, 3 and 4 over the eps history: len(timesteps) model calls. Deterministic; noise_sampler is unused."""
    eps_model = EpsModel(model, alphas_cumprod, extra_args)
    timesteps, alphas, alphas_prev = _vp_tables(timesteps, alphas_cumprod)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    s_in = x.new_ones([x.shape[0]])
    s_x = x.new_ones([x.shape[0], 1, 1, 1])

    def step(x, e_t, index):
        """DDIM (eta 0) from timesteps[index] to the one before with eps e_t: (x_prev, pred_x0)."""
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t, pred_x0

    old_eps: list[torch.Tensor] = []
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = eps_model(x, timesteps[index].item() * s_in)
        if not old_eps:
            x_next, _ = step(x, e_t, index)
            e_next = eps_model(x_next, timesteps[max(index - 1, 0)].item() * s_in)
            e_prime = (e_t + e_next) / 2
        elif len(old_eps) == 1:
            e_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x, pred_x0 = step(x, e_prime, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
        _report(callback, x, i, float(eps_model.sigmas[timesteps[index]]), pred_x0)
    return x


# ------------------------------------------------------------------------------------------------------ UniPC


class _VPSchedule:
    """The discrete VP schedule as continuous time (UniPC's NoiseScheduleVP('discrete')): training timestep n sits
    at t = (n + 1) / N; log alpha_t = 0.5 log a_t is piecewise linear in t (extended linearly past the ends)."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        log_alphas = 0.5 * torch.log(alphas_cumprod.detach().to("cpu", torch.float32))
        self.total_n = len(log_alphas)
        self.t_grid = torch.linspace(0.0, 1.0, self.total_n + 1)[1:]
        self.log_alpha_grid = log_alphas

    @staticmethod
    def _interp(x, xp, yp):
        """Piecewise linear y(x) through (xp, yp), xp ascending; outside, the end segment extended."""
        k = len(xp)
        seg = (torch.searchsorted(xp, x.contiguous(), right=False) - 1).clamp(0, k - 2)
        x0, x1, y0, y1 = xp[seg], xp[seg + 1], yp[seg], yp[seg + 1]
        return y0 + (x - x0) * (y1 - y0) / (x1 - x0)

    def log_alpha(self, t):
        return self._interp(t.to("cpu", torch.float32), self.t_grid, self.log_alpha_grid)

    def alpha(self, t):
        return torch.exp(self.log_alpha(t))

    def std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lam(self, t):
        """Half log-SNR: log alpha_t - log sigma_t."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))

    def t_of_lambda(self, lam):
        log_alpha = -0.5 * torch.logaddexp(torch.zeros(1), -2.0 * lam)
        return self._interp(log_alpha, self.log_alpha_grid.flip(0), self.t_grid.flip(0))

    def times(self, skip_type: str, t_start: float, t_end: float, n: int) -> torch.Tensor:
        """n + 1 continuous times from t_start down to t_end."""
        if skip_type == "time_uniform":
            return torch.linspace(t_start, t_end, n + 1)
        if skip_type == "time_quadratic":
            return torch.linspace(t_start**0.5, t_end**0.5, n + 1).pow(2)
        if skip_type == "logSNR":
            lam_start = float(self.lam(torch.as_tensor(t_start, dtype=torch.float32).reshape(1)))
            lam_end = float(self.lam(torch.as_tensor(t_end, dtype=torch.float32).reshape(1)))
            return self.t_of_lambda(torch.linspace(lam_start, lam_end, n + 1))
        raise ValueError(f"unknown UniPC skip type {skip_type!r}: time_uniform, time_quadratic or logSNR")


class _UniPC:
    """Multistep UniPC (Zhao et al. 2023) in data prediction (x0) form, without thresholding: A1111's configuration.
    Variants: bh1 (B(h) = h, A1111's default), bh2 (B(h) = e^h - 1) and vary_coeff."""

    def __init__(self, eps_model: EpsModel, schedule: _VPSchedule, variant: str, callback):
        if variant not in ("bh1", "bh2", "vary_coeff"):
            raise ValueError(f"unknown UniPC variant {variant!r}: bh1, bh2 or vary_coeff")
        self.eps_model, self.ns, self.variant, self.callback = eps_model, schedule, variant, callback
        self.index = 0

    def data_prediction(self, x, t):
        """x0 from the eps model, called at the model time (t - 1/N) * 1000 (fractional in general)."""
        t_model = (t - 1.0 / self.ns.total_n) * 1000.0
        eps = self.eps_model(x, t_model)
        alpha = self.ns.alpha(t).to(x.device, x.dtype)[:, None, None, None]
        std = self.ns.std(t).to(x.device, x.dtype)[:, None, None, None]
        return (x - std * eps) / alpha

    def update(self, x, model_prev, t_prev, t, order, use_corrector):
        """One step from t_prev[-1] to t with `order` previous x0 predictions: (x_t, x0 at x_t or None)."""
        ns = self.ns
        lam_prev0, lam_t = ns.lam(t_prev[-1]), ns.lam(t)
        m0 = model_prev[-1]
        sigma_prev0, sigma_t = ns.std(t_prev[-1]), ns.std(t)
        alpha_t = torch.exp(ns.log_alpha(t))
        h = lam_t - lam_prev0

        rks, d1s = [], []
        for i in range(1, order):
            rk = ((ns.lam(t_prev[-(i + 1)]) - lam_prev0) / h)[0]
            rks.append(rk)
            d1s.append((model_prev[-(i + 1)] - m0) / rk)
        rks = torch.tensor([*[float(r) for r in rks], 1.0])
        d1s = torch.stack(d1s, dim=1) if d1s else None

        def bcast(v):
            return v.to(x.device, x.dtype)[:, None, None, None] if torch.is_tensor(v) and v.ndim else v

        hh = -h[0]  # data prediction: the exponential integrator runs in -lambda
        h_phi_1 = torch.expm1(hh)
        x_base = bcast(sigma_t / sigma_prev0) * x - bcast(alpha_t * h_phi_1) * m0

        if self.variant == "vary_coeff":
            return self._vary_coeff(x_base, x, m0, d1s, rks, hh, h_phi_1, alpha_t, t, order, use_corrector, bcast)

        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        rows, b = [], []
        h_phi_k = h_phi_1 / hh - 1
        factorial = 1
        for i in range(1, order + 1):
            rows.append(rks ** (i - 1))
            b.append(float(h_phi_k * factorial / b_h))
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        r_matrix = torch.stack(rows)
        b = torch.tensor(b)
        scale = bcast(alpha_t * b_h)

        x_t = x_base
        if d1s is not None:
            rhos_p = torch.tensor([0.5]) if order == 2 else torch.linalg.solve(r_matrix[:-1, :-1], b[:-1])
            x_t = x_base - scale * torch.einsum("k,bkchw->bchw", rhos_p.to(x.device, x.dtype), d1s)
        if not use_corrector:
            return x_t, None
        rhos_c = (torch.tensor([0.5]) if order == 1 else torch.linalg.solve(r_matrix, b)).to(x.device, x.dtype)
        model_t = self.data_prediction(x_t, t)
        correction = torch.einsum("k,bkchw->bchw", rhos_c[:-1], d1s) if d1s is not None else 0
        return x_base - scale * (correction + rhos_c[-1] * (model_t - m0)), model_t

    def _vary_coeff(self, x_base, x, m0, d1s, rks, hh, h_phi_1, alpha_t, t, order, use_corrector, bcast):
        k_count = len(rks)
        # C[i, j] = r_i^j / (j + 1)!
        c_matrix = torch.stack([rks**j / math.factorial(j + 1) for j in range(k_count)], dim=1)
        h_phis = [h_phi_1]  # h phi_k(h) for k = 1 .. K+1, by phi_{k+1} = (phi_k - 1/k!) / h
        for k in range(1, k_count + 1):
            h_phis.append(h_phis[-1] / hh - 1 / math.factorial(k))
        x_t = x_base
        if d1s is not None:
            a_p = torch.linalg.inv(c_matrix[:-1, :-1]).to(x.device, x.dtype)
            for k in range(k_count - 1):
                x_t = x_t - bcast(alpha_t * h_phis[k + 1]) * torch.einsum("bkchw,k->bchw", d1s, a_p[k])
        if not use_corrector:
            return x_t, None
        a_c = torch.linalg.inv(c_matrix).to(x.device, x.dtype)
        model_t = self.data_prediction(x_t, t)
        x_t = x_base
        last = 0
        for last in range(k_count - 1):
            x_t = x_t - bcast(alpha_t * h_phis[last + 1]) * torch.einsum("bkchw,k->bchw", d1s, a_c[last][:-1])
        # As A1111 (and the UniPC reference code): the last row's weight comes from row `last` of C^-1.
        x_t = x_t - bcast(alpha_t * h_phis[k_count]) * ((model_t - m0) * a_c[last][-1])
        return x_t, model_t

    def after_update(self, x, model_x, t_from):
        # A1111 reports sigma 0 for the timestep samplers; here, as k-diffusion, the sigma the step started from.
        sigma = float(self.ns.std(t_from[:1]) / self.ns.alpha(t_from[:1]))
        _report(self.callback, x, self.index, sigma, model_x)
        self.index += 1

    def sample(self, x, steps, t_start, t_end, order, skip_type, lower_order_final):
        times = self.ns.times(skip_type, t_start, t_end, steps)
        batch = x.shape[0]
        vec_t = times[0].expand(batch)
        model_prev = [self.data_prediction(x, vec_t)]
        t_prev = [vec_t]
        for init_order in range(1, order):  # warm-up: lower orders, corrector always on
            vec_t = times[init_order].expand(batch)
            x, model_x = self.update(x, model_prev, t_prev, vec_t, init_order, use_corrector=True)
            if model_x is None:
                model_x = self.data_prediction(x, vec_t)
            self.after_update(x, model_x, t_prev[-1])
            model_prev.append(model_x)
            t_prev.append(vec_t)
        for step in range(order, steps + 1):
            vec_t = times[step].expand(batch)
            step_order = min(order, steps + 1 - step) if lower_order_final else order
            last = step == steps
            x, model_x = self.update(x, model_prev, t_prev, vec_t, step_order, use_corrector=not last)
            # A1111 reports None as the last step's denoised (no model call there); the final x is as clean.
            self.after_update(x, x if model_x is None else model_x, t_prev[-1])
            t_prev = [*t_prev[1:], vec_t]
            if not last:
                if model_x is None:
                    model_x = self.data_prediction(x, vec_t)
                model_prev = [*model_prev[1:], model_x]
        return x


@torch.no_grad()
def sample_unipc(model, x, timesteps, alphas_cumprod, extra_args=None, callback=None, noise_sampler=None,
                 is_img2img=False, variant=UNIPC_VARIANT, skip_type=UNIPC_SKIP_TYPE, order=UNIPC_ORDER,
                 lower_order_final=UNIPC_LOWER_ORDER_FINAL):
    """UniPC as A1111's `unipc`: x starts as unit-variance noise; multistep bh1 UniPC of order 3 with lower orders
    at the end, data prediction, on its OWN len(timesteps) + 1 times: "time_uniform" from t = 1 (timestep 999) to
    1/1000 (timestep 0), whatever `timesteps` holds (only its length counts, and for img2img its last entry as the
    start, t = timesteps[-1] / 1000 + 1/1000, as A1111). len(timesteps) model calls; the last step has no
    corrector. Deterministic; noise_sampler is unused.

    A1111 asserts order <= steps (so 1 or 2 steps fail there); here the order is lowered to the step count."""
    steps = len(timesteps)
    schedule = _VPSchedule(alphas_cumprod)
    t_end = 1.0 / schedule.total_n
    # img2img: a float32 0-d tensor, as A1111's `timesteps[-1] / 1000 + 1 / 1000`
    t_start = torch.as_tensor(timesteps)[-1].cpu() / 1000 + 1 / 1000 if is_img2img else 1.0
    solver = _UniPC(EpsModel(model, alphas_cumprod, extra_args), schedule, variant, callback)
    return solver.sample(x, steps, t_start, t_end, min(order, steps), skip_type, lower_order_final)
