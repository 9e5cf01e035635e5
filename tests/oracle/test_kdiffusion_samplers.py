"""webui.engine.samplers.kdiffusion against k-diffusion itself (the oracle).

The oracle is the PyPI package k-diffusion 0.1.1.post1, whose sampling.py is identical to the commit A1111 1.10
pins (ab527a9), loaded by oracle.originals without its package __init__. Both sides get the same noise: a
stream drawn from a seeded torch.Generator in call order (k-diffusion's own `torch.randn_like` calls are
redirected to it, as A1111 does), or a smooth function of (sigma, sigma_next) for the SDE samplers."""
from __future__ import annotations

import inspect
import math
from itertools import pairwise

import pytest
import torch

from oracle.originals import load_kdiffusion
from webui.engine.samplers import kdiffusion as ours

SHAPE = (2, 4, 8, 8)
SIGMA_MIN, SIGMA_MAX = 0.03, 14.6
TOL = 1e-5
# DPM-Solver's times t = -log(sigma) are float32 tensors in k-diffusion and floats here. That moves a run of a
# few huge steps, and the adaptive step-size control (its first error estimates are at rounding level), by
# more than TOL; rounding our times to float32 brings them back under it.
DPM_SOLVER_TOL = 1e-4


@pytest.fixture(scope="module")
def K():
    return load_kdiffusion().sampling


class _TorchWithNoise:
    """What k-diffusion sees as `torch` during a run: torch, but randn_like draws from our stream (as A1111's
    TorchHijack does)."""

    def __init__(self, noise):
        self._noise = noise

    def randn_like(self, x, *args, **kwargs):
        return self._noise.draw(x)

    def __getattr__(self, name):
        return getattr(torch, name)


def run_oracle(K, func_name, *args, noise, **kwargs):
    K.torch = _TorchWithNoise(noise)
    try:
        return getattr(K, func_name)(*args, disable=True, **kwargs)
    finally:
        K.torch = torch


# ---------------------------------------------------------------------------------------- model and noise

class ToyDenoiser:
    """A smooth, nonlinear, sigma-dependent 'denoiser' that counts its calls."""

    def __init__(self):
        g = torch.Generator().manual_seed(7)
        self.mu = torch.randn(SHAPE[1:], generator=g) * 0.5
        self.calls = 0

    def __call__(self, x, sigma, shift=0.0):
        assert sigma.shape == (x.shape[0],) and sigma.dtype == x.dtype
        self.calls += 1
        s = sigma.reshape(-1, 1, 1, 1)
        c = 1 / (1 + s**2)
        return c * (0.7 * torch.tanh(x) + self.mu) + (1 - c) * 0.3 * torch.sin(x / (1 + s)) + shift


class Stream:
    """Noise in call order from a seeded generator; usable as noise_sampler and as randn_like."""

    def __init__(self, seed=1234):
        self.gen = torch.Generator().manual_seed(seed)
        self.count = 0

    def draw(self, like=None):
        self.count += 1
        return torch.randn(SHAPE, generator=self.gen)

    def __call__(self, sigma, sigma_next):
        return self.draw()


class Smooth:
    """Noise as a smooth function of (sigma, sigma_next): call order does not matter (as a Brownian tree)."""

    def __init__(self, seed=99):
        g = torch.Generator().manual_seed(seed)
        self.a, self.b = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
        self.count = 0

    def draw(self, like=None):
        raise AssertionError("torch.randn_like used where the noise sampler should be")

    def __call__(self, sigma, sigma_next):
        self.count += 1
        sigma, sigma_next = float(sigma), float(sigma_next)
        return self.a * math.cos(3 * sigma + 0.5) + self.b * math.sin(2 * sigma_next + 1.0)


def zeros(sigma, sigma_next):
    return torch.zeros(SHAPE)


def karras(n, sigma_min, sigma_max, rho=7.0):
    """k-diffusion's get_sigmas_karras (test_schedules_are_kdiffusions checks it), so that the tests without
    an oracle run without k-diffusion too."""
    ramp = torch.linspace(0, 1, n)
    max_inv, min_inv = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return torch.cat([(max_inv + ramp * (min_inv - max_inv)) ** rho, torch.zeros(1)])


def exponential(n, sigma_min, sigma_max):
    return torch.cat([torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp(), torch.zeros(1)])


SCHEDULES = {"karras": karras(10, SIGMA_MIN, SIGMA_MAX), "exponential": exponential(11, SIGMA_MIN, SIGMA_MAX)}


def test_schedules_are_kdiffusions(K):
    assert torch.equal(SCHEDULES["karras"], K.get_sigmas_karras(10, SIGMA_MIN, SIGMA_MAX))
    assert torch.equal(SCHEDULES["exponential"], K.get_sigmas_exponential(11, SIGMA_MIN, SIGMA_MAX))
    assert torch.equal(karras(26, 0.1, 3.0), K.get_sigmas_karras(26, 0.1, 3.0))


def start(sigma_max):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * float(sigma_max)


def max_diff(a, b):
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------------- sigma-list samplers

CASES = [
    ("sample_euler", {}),
    ("sample_euler", {"s_churn": 1.0}),
    ("sample_euler", {"s_churn": 2.0, "s_tmin": 0.5, "s_tmax": 5.0, "s_noise": 1.003}),
    ("sample_euler_ancestral", {}),
    ("sample_euler_ancestral", {"eta": 0.5, "s_noise": 0.9}),
    ("sample_heun", {}),
    ("sample_heun", {"s_churn": 1.0, "s_tmin": 0.2, "s_tmax": 8.0}),
    ("sample_dpm_2", {}),
    ("sample_dpm_2", {"s_churn": 1.0}),
    ("sample_dpm_2_ancestral", {}),
    ("sample_dpm_2_ancestral", {"eta": 0.5}),
    ("sample_lms", {}),
    ("sample_lms", {"order": 2}),
    ("sample_dpmpp_2s_ancestral", {}),
    ("sample_dpmpp_2s_ancestral", {"eta": 0.5, "s_noise": 0.8}),
    ("sample_dpmpp_sde", {}),
    ("sample_dpmpp_sde", {"eta": 0.6, "r": 0.4}),
    ("sample_dpmpp_sde", {"eta": 0.0}),
    ("sample_dpmpp_2m", {}),
    ("sample_dpmpp_2m_sde", {}),
    ("sample_dpmpp_2m_sde", {"solver_type": "heun"}),
    ("sample_dpmpp_2m_sde", {"eta": 0.0}),
    ("sample_dpmpp_2m_sde", {"eta": 0.7, "s_noise": 0.9, "solver_type": "heun"}),
    ("sample_dpmpp_3m_sde", {}),
    ("sample_dpmpp_3m_sde", {"eta": 0.0}),
    ("sample_dpmpp_3m_sde", {"eta": 0.5, "s_noise": 1.1}),
]
SDE = {"sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"}


def _compare(K, name, kwargs, sigmas, noise_factory, extra_args=None):
    x0 = start(sigmas[0])
    runs = []
    for side in ("oracle", "ours"):
        model, noise, seen = ToyDenoiser(), noise_factory(), []
        args = dict(kwargs, extra_args=extra_args, callback=seen.append)
        if side == "oracle":
            if "noise_sampler" in inspect.signature(getattr(K, name)).parameters:
                args["noise_sampler"] = noise
            x = run_oracle(K, name, model, x0.clone(), sigmas, noise=noise, **args)
        else:
            x = getattr(ours, name)(model, x0.clone(), sigmas, noise_sampler=noise, **args)
        runs.append((x, model.calls, noise.count, seen))
    (x_k, calls_k, draws_k, seen_k), (x_o, calls_o, draws_o, seen_o) = runs
    assert torch.isfinite(x_o).all()
    assert max_diff(x_o, x_k) <= TOL
    assert calls_o == calls_k
    assert [d["i"] for d in seen_o] == [d["i"] for d in seen_k]
    for d_o, d_k in zip(seen_o, seen_k):
        assert set(d_o) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert d_o["sigma"] == pytest.approx(float(d_k["sigma"]), rel=1e-6)
        assert d_o["sigma_hat"] == pytest.approx(float(d_k["sigma_hat"]), rel=1e-6)
        assert max_diff(d_o["denoised"], d_k["denoised"]) <= TOL
    return draws_o, draws_k


@pytest.mark.parametrize("schedule", ["karras", "exponential"])
@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n[7:]}-{k}" for n, k in CASES])
def test_matches_kdiffusion_with_a_noise_stream(K, name, kwargs, schedule):
    """Same noise in the same call order: also checks that every draw happens where k-diffusion draws."""
    draws_ours, draws_oracle = _compare(K, name, kwargs, SCHEDULES[schedule], Stream)
    assert draws_ours == draws_oracle


@pytest.mark.parametrize("name,kwargs", [c for c in CASES if c[0] in SDE],
                         ids=[f"{n[7:]}-{k}" for n, k in CASES if n in SDE])
def test_sde_samplers_match_with_a_sigma_keyed_noise_sampler(K, name, kwargs):
    _compare(K, name, kwargs, SCHEDULES["karras"], Smooth, extra_args={"shift": 0.05})


def test_extra_args_reach_the_model(K):
    _compare(K, "sample_heun", {}, SCHEDULES["exponential"], Stream, extra_args={"shift": -0.2})


# --------------------------------------------------------------------------------------------- DPM-Solver

@pytest.mark.parametrize("n", [10, 11, 12, 4])
@pytest.mark.parametrize("eta", [0.0, 1.0, 0.5])
def test_dpm_fast_matches_kdiffusion(K, n, eta):
    x0 = start(SIGMA_MAX)
    runs = []
    for side in ("oracle", "ours"):
        model, noise, seen = ToyDenoiser(), Stream(), []
        kwargs = {"extra_args": {"shift": 0.1}, "callback": seen.append, "eta": eta, "s_noise": 0.95,
                  "noise_sampler": noise}
        if side == "oracle":
            x = run_oracle(K, "sample_dpm_fast", model, x0.clone(), SIGMA_MIN, SIGMA_MAX, n, noise=noise, **kwargs)
        else:
            x = ours.sample_dpm_fast(model, x0.clone(), SIGMA_MIN, SIGMA_MAX, n, **kwargs)
        runs.append((x, model.calls, seen))
    (x_k, calls_k, seen_k), (x_o, calls_o, seen_o) = runs
    assert max_diff(x_o, x_k) <= (TOL if n >= 10 else DPM_SOLVER_TOL)
    assert calls_o == calls_k == n
    assert [d["i"] for d in seen_o] == [d["i"] for d in seen_k]
    assert [d["sigma"] for d in seen_o] == pytest.approx([float(d["sigma"]) for d in seen_k], rel=1e-5)


@pytest.mark.parametrize("order,eta,rtol", [(3, 0.0, 0.05), (2, 0.0, 0.05), (3, 1.0, 0.05), (3, 0.0, 0.01),
                                            (2, 0.5, 0.02)])
def test_dpm_adaptive_matches_kdiffusion(K, order, eta, rtol):
    x0 = start(SIGMA_MAX)
    runs = []
    for side in ("oracle", "ours"):
        model, noise, seen = ToyDenoiser(), Stream(), []
        kwargs = {"extra_args": {"shift": 0.1}, "callback": seen.append, "order": order, "rtol": rtol, "eta": eta,
                  "noise_sampler": noise, "return_info": True}
        if side == "oracle":
            x, info = run_oracle(K, "sample_dpm_adaptive", model, x0.clone(), SIGMA_MIN, SIGMA_MAX, noise=noise,
                                 **kwargs)
        else:
            x, info = ours.sample_dpm_adaptive(model, x0.clone(), SIGMA_MIN, SIGMA_MAX, **kwargs)
        runs.append((x, info, model.calls, seen))
    (x_k, info_k, calls_k, seen_k), (x_o, info_o, calls_o, seen_o) = runs
    assert info_o == info_k and info_o["n_accept"] > 3
    assert calls_o == calls_k == info_o["nfe"]
    assert max_diff(x_o, x_k) <= DPM_SOLVER_TOL
    assert set(seen_o[0]) == set(seen_k[0])
    assert [d["h"] for d in seen_o] == pytest.approx([float(d["h"]) for d in seen_k], rel=1e-3)


def test_dpm_adaptive_returns_x_only_by_default():
    x = ours.sample_dpm_adaptive(ToyDenoiser(), start(SIGMA_MAX), SIGMA_MIN, SIGMA_MAX, noise_sampler=zeros)
    assert torch.is_tensor(x) and x.shape == SHAPE


# ------------------------------------------------------------------------------------------- signatures

ORACLE_TWINS = sorted({n for n, _ in CASES} | {"sample_dpm_fast", "sample_dpm_adaptive"})


@pytest.mark.parametrize("name", ORACLE_TWINS)
def test_keywords_and_defaults_match_kdiffusion(K, name):
    theirs = inspect.signature(getattr(K, name)).parameters
    mine = inspect.signature(getattr(ours, name)).parameters
    assert list(mine)[:2] == ["model", "x"] and "noise_sampler" in mine and "disable" not in mine
    for param, p in theirs.items():
        if param != "disable":
            assert param in mine, param
            assert mine[param].default == p.default, param


# ------------------------------------------------------------------------- all samplers: determinism etc.

def _run(name, model, x, sigmas, noise_sampler, **kwargs):
    if name in ("sample_dpm_fast", "sample_dpm_adaptive"):
        extra = (len(sigmas) - 1,) if name == "sample_dpm_fast" else ()
        return getattr(ours, name)(model, x, float(sigmas[-2]), float(sigmas[0]), *extra,
                                   noise_sampler=noise_sampler, **kwargs)
    return getattr(ours, name)(model, x, sigmas, noise_sampler=noise_sampler, **kwargs)


ALL = ORACLE_TWINS + ["sample_lcm", "restart_sampler"]


@pytest.mark.parametrize("name", ALL)
def test_zero_noise_is_deterministic_and_finite(name):
    sigmas = SCHEDULES["karras"]
    a = _run(name, ToyDenoiser(), start(sigmas[0]), sigmas, zeros)
    b = _run(name, ToyDenoiser(), start(sigmas[0]), sigmas, zeros)
    assert torch.equal(a, b) and torch.isfinite(a).all()


@pytest.mark.parametrize("name", ALL)
def test_all_noise_comes_from_the_noise_sampler(name, monkeypatch):
    sigmas, x, noise, model = SCHEDULES["karras"], start(SIGMA_MAX), Smooth(), ToyDenoiser()
    kwargs = {"eta": 1.0} if name in ("sample_dpm_fast", "sample_dpm_adaptive") else {}

    def global_rng(*args, **kwargs):
        raise AssertionError("global RNG used")

    for fn in ("randn_like", "rand_like", "randint_like", "randn", "rand", "randint", "normal"):
        monkeypatch.setattr(torch, fn, global_rng)
    state = torch.get_rng_state()
    x = _run(name, model, x, sigmas, noise, **kwargs)
    assert torch.isfinite(x).all()
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("name,calls", [
    ("sample_euler", 10), ("sample_euler_ancestral", 10), ("sample_heun", 19), ("sample_dpm_2", 19),
    ("sample_dpm_2_ancestral", 19), ("sample_lms", 10), ("sample_dpmpp_2s_ancestral", 19),
    ("sample_dpmpp_sde", 19), ("sample_dpmpp_2m", 10), ("sample_dpmpp_2m_sde", 10),
    ("sample_dpmpp_3m_sde", 10), ("sample_lcm", 10), ("restart_sampler", 19), ("sample_dpm_fast", 10)])
def test_model_calls_per_sampler(name, calls):
    """n steps ending at sigma 0: one call per step, two for second-order steps except the last."""
    model = ToyDenoiser()
    _run(name, model, start(SIGMA_MAX), karras(10, SIGMA_MIN, SIGMA_MAX), Stream())
    assert model.calls == calls


# -------------------------------------------------------------------------------------------------- LCM

class Constant:
    def __init__(self, c):
        self.c, self.calls = c, 0

    def __call__(self, x, sigma, **_):
        self.calls += 1
        return self.c.clone()


def test_lcm_returns_the_denoised_value_when_the_last_sigma_is_0():
    c = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    sigmas = SCHEDULES["karras"]
    noise = Stream()
    out = ours.sample_lcm(Constant(c), start(sigmas[0]), sigmas, noise_sampler=noise)
    assert torch.equal(out, c)
    assert noise.count == len(sigmas) - 2  # fresh noise after every step but the last


def test_lcm_renoises_to_the_next_sigma():
    c = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    sigmas = karras(6, 0.5, SIGMA_MAX)[:-1]  # ends at 0.5, not 0
    out = ours.sample_lcm(Constant(c), start(sigmas[0]), sigmas, noise_sampler=Stream(5))
    expected_noise = Stream(5)
    for _ in range(len(sigmas) - 1):  # every step re-noises, the last one too
        last = expected_noise.draw()
    assert max_diff(out, c + float(sigmas[-1]) * last) <= 1e-6


def test_lcm_passes_denoised_to_the_callback_untouched():
    sigmas = SCHEDULES["karras"]
    seen = []
    ours.sample_lcm(ToyDenoiser(), start(sigmas[0]), sigmas, callback=seen.append, noise_sampler=Stream())
    assert [d["i"] for d in seen] == list(range(len(sigmas) - 1))
    assert all(d["sigma"] == d["sigma_hat"] for d in seen)


# ---------------------------------------------------------------------------------------------- Restart

def test_restart_below_20_steps_is_plain_heun():
    sigmas = karras(19, SIGMA_MIN, SIGMA_MAX)
    heun = ours.sample_heun(ToyDenoiser(), start(sigmas[0]), sigmas, noise_sampler=zeros)
    noise = Stream()
    restart = ours.restart_sampler(ToyDenoiser(), start(sigmas[0]), sigmas, noise_sampler=noise)
    assert torch.equal(heun, restart) and noise.count == 0


@pytest.mark.parametrize("steps,n_restart,times", [(20, 9, 1), (25, 9, 1), (36, 9, 2), (40, 10, 2)])
def test_restart_default_plan(steps, n_restart, times):
    sigmas = exponential(steps, SIGMA_MIN, SIGMA_MAX)  # Restart swaps it for Karras
    plan = ours.restart_plan(sigmas)
    assert len(plan) == steps
    main = karras(steps - n_restart * times, float(sigmas[-2]), float(sigmas[0]))
    at = int(torch.argmin((main - 0.1).abs()))
    top = int(torch.argmin((main - 2).abs()))
    restart = karras(n_restart + 1, float(main[at]), float(main[top]))[:-1]
    expected = [(float(a), float(b)) for a, b in pairwise(main[:at + 1])]
    expected += [(float(a), float(b)) for a, b in pairwise(restart)] * times
    expected += [(float(a), float(b)) for a, b in pairwise(main[at:])]
    assert len(plan) == len(expected)
    assert [s for step in plan for s in step] == pytest.approx([s for step in expected for s in step], rel=1e-6)
    model, noise, seen = ToyDenoiser(), Stream(), []
    x = ours.restart_sampler(model, start(sigmas[0]), sigmas, callback=seen.append, noise_sampler=noise)
    assert torch.isfinite(x).all()
    assert model.calls == 2 * steps - 1 and noise.count == times
    assert [d["i"] for d in seen] == list(range(steps))


def test_restart_is_heun_with_noise_at_each_jump(K):
    """Rebuilt from k-diffusion's Heun over the pieces of the plan, with the jump's noise in between."""
    sigmas = karras(25, SIGMA_MIN, SIGMA_MAX)
    x0 = start(sigmas[0])
    got = ours.restart_sampler(ToyDenoiser(), x0.clone(), sigmas, s_noise=0.9, noise_sampler=Stream(11))

    main = karras(16, float(sigmas[-2]), float(sigmas[0]))
    at, top = int(torch.argmin((main - 0.1).abs())), int(torch.argmin((main - 2).abs()))
    restart = karras(10, float(main[at]), float(main[top]))[:-1]
    jump_noise = Stream(11)
    x = run_oracle(K, "sample_heun", ToyDenoiser(), x0.clone(), main[:at + 1], noise=Stream())
    x = x + jump_noise.draw() * 0.9 * (restart[0] ** 2 - main[at] ** 2) ** 0.5
    x = run_oracle(K, "sample_heun", ToyDenoiser(), x, restart, noise=Stream())
    x = run_oracle(K, "sample_heun", ToyDenoiser(), x, main[at:], noise=Stream())
    assert max_diff(got, x) <= TOL


def test_restart_custom_list_and_determinism():
    sigmas = karras(12, SIGMA_MIN, SIGMA_MAX)
    restart_list = {0.5: [4, 3, 5.0]}
    a = ours.restart_sampler(ToyDenoiser(), start(sigmas[0]), sigmas, restart_list=restart_list,
                             noise_sampler=Stream(2))
    noise, model = Stream(2), ToyDenoiser()
    b = ours.restart_sampler(model, start(sigmas[0]), sigmas, restart_list=restart_list, noise_sampler=noise)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert noise.count == 3 and len(ours.restart_plan(sigmas, restart_list)) == 12 + 3 * 3


@pytest.mark.parametrize("steps", [10, 25, 40])
def test_restart_with_an_exact_point_mass_denoiser_ends_at_the_point(steps):
    c = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    sigmas = karras(steps, SIGMA_MIN, SIGMA_MAX)
    out = ours.restart_sampler(Constant(c), start(sigmas[0]), sigmas, noise_sampler=Stream())
    assert max_diff(out, c) <= TOL


@pytest.mark.parametrize("name", ALL)
def test_without_a_noise_sampler_the_global_rng_is_the_fallback(name):
    sigmas = SCHEDULES["karras"]
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(_run(name, ToyDenoiser(), start(sigmas[0]), sigmas, None))
    assert torch.equal(*runs) and torch.isfinite(runs[0]).all()
