"""A1111's timestep samplers (webui.engine.samplers.timesteps): DDIM, PLMS and UniPC over our k-diffusion-style
model, on toy denoisers small enough to run in milliseconds.

Two toy models:
- `unet_model`: our real DiscreteEpsDenoiser around a toy "UNet" eps(x_in, t) (any smooth function), so the whole
  path sigma → timestep → UNet input is exercised; the test's own DDIM works on eps(x_vp, t) directly.
- `gaussian_model`: the exact denoiser for data ~ N(MU, S²) per element, D(x, sigma) = (S² x + sigma² MU) / (S² +
  sigma²), whose probability-flow ODE has a closed-form solution to measure the samplers' accuracy against."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import webui
from webui.engine.samplers.denoiser import DiscreteEpsDenoiser, alphas_cumprod
from webui.engine.samplers.timesteps import (
    EpsModel,
    get_timesteps,
    sample_ddim,
    sample_plms,
    sample_unipc,
)

CONFIG = Path(webui.__file__).parent / "engine" / "models" / "configs" / "sd1" / "scheduler" / "scheduler_config.json"
AC = alphas_cumprod(json.loads(CONFIG.read_text()))
SHAPE = (2, 4, 8, 8)
MU, S = 0.3, 0.5
SAMPLERS = {"DDIM": sample_ddim, "PLMS": sample_plms, "UniPC": sample_unipc}


def initial_noise(seed=0):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def noise_stream(seed):
    """A noise_sampler(sigma, sigma_next) drawing from its own generator, and the list of what it drew."""
    g, drawn = torch.Generator().manual_seed(seed), []

    def sample(sigma, sigma_next):
        drawn.append(torch.randn(SHAPE, generator=g))
        return drawn[-1]
    return sample, drawn


_W = torch.randn(4, 4, generator=torch.Generator().manual_seed(3)) * 0.3


def toy_eps(x_in, t):
    """A smooth, timestep-dependent eps prediction mixing channels."""
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)[:, None, None, None]
    mixed = torch.einsum("ij,bjhw->bihw", _W.to(x_in.dtype), x_in)
    return (torch.tanh(mixed + 0.3 * x_in) * (0.5 + t / 2000) + 0.1 * torch.sin(t / 100)).to(x_in.dtype)


class ToyUnet:
    dtype = torch.float32

    def __init__(self):
        self.timesteps = []

    def __call__(self, x_in, t, encoder_hidden_states=None, return_dict=False):
        self.timesteps.append(t.clone())
        return (toy_eps(x_in, t),)


class Counting:
    """model(x, sigma) -> denoised, counting calls and recording the sigmas it got."""

    def __init__(self, fn):
        self.fn, self.sigmas = fn, []

    def __call__(self, x, sigma):
        self.sigmas.append(sigma.clone())
        return self.fn(x, sigma)

    @property
    def calls(self):
        return len(self.sigmas)


def unet_model():
    unet = ToyUnet()
    den = DiscreteEpsDenoiser(unet, AC)
    model = Counting(lambda x, sigma: den(x, sigma, torch.zeros(x.shape[0], 1)))
    model.unet = unet
    return model


def gaussian_model():
    def denoise(x, sigma):
        s2 = sigma.to(x.dtype)[:, None, None, None] ** 2
        return (S**2 * x + s2 * MU) / (S**2 + s2)
    return Counting(denoise)


def exact_vp(x_init, a_start, a_end):
    """The probability-flow ODE for N(MU, S²) data, from VP latent x_init at alpha_bar a_start to a_end."""
    sig = lambda a: math.sqrt((1 - a) / a)
    x_k = x_init.double() / math.sqrt(a_start)
    ratio = math.sqrt((S**2 + sig(a_end) ** 2) / (S**2 + sig(a_start) ** 2))
    return (MU + (x_k - MU) * ratio) * math.sqrt(a_end)


# ------------------------------------------------------------------------------------------------ timesteps


def test_get_timesteps_is_a1111s():
    assert get_timesteps(10).tolist() == [1, 101, 201, 301, 401, 501, 601, 701, 801, 901]
    assert get_timesteps(10).dtype == torch.int64
    assert get_timesteps(1).tolist() == [1]
    t30 = get_timesteps(30)  # stride 1000 // 30 = 33: 31 timesteps, 1 … 991
    assert len(t30) == 31 and t30[0] == 1 and t30[-1] == 991
    assert len(get_timesteps(7)) == 8
    t1000 = get_timesteps(1000)  # 1 … 1000 clipped at 999
    assert t1000[-1] == 999 and t1000[-2] == 999 and len(t1000) == 1000
    for bad in (0, 1001):
        with pytest.raises(ValueError):
            get_timesteps(bad)


# --------------------------------------------------------------------------------------------- the adapter


def test_adapter_gives_the_unet_the_vp_input_and_integer_timestep():
    model = unet_model()
    eps_model = EpsModel(model, AC)
    x = initial_noise()
    t = torch.full([SHAPE[0]], 501.0)
    eps = eps_model(x, t)
    assert model.sigmas[0][0] == model_sigma(501)  # the training sigma itself, no log/exp round trip
    assert model.unet.timesteps[0].tolist() == [501.0, 501.0]  # cond and uncond halves of the batch
    torch.testing.assert_close(eps, toy_eps(x, 501.0), rtol=1e-5, atol=1e-5)
    eps_model(x, torch.full([SHAPE[0]], 250.5))  # fractional (UniPC): log-sigma interpolation, same timestep back
    assert model.unet.timesteps[1] == pytest.approx(250.5, abs=1e-3)


def model_sigma(t):
    return ((1 - AC[t]) / AC[t]) ** 0.5


# --------------------------------------------------------------------------------------------------- DDIM


def reference_ddim(x, timesteps, eta=0.0, noises=None):
    """A1111's DDIM update written out on eps(x_vp, t), in float64: for index = T-1 … 1,
    pred_x0 = (x - sqrt(1-a) eps) / sqrt(a); x = sqrt(a') pred_x0 + sqrt(1 - a' - s²) eps + s z,
    a = ac[t_index], a' = ac[t_index-1], s = eta sqrt((1-a')/(1-a) (1 - a/a'))."""
    ac = AC.double()
    x = x.double()
    for step, index in enumerate(range(len(timesteps) - 1, 0, -1)):
        a, a_prev = ac[timesteps[index]], ac[timesteps[index - 1]]
        eps = toy_eps(x.float(), float(timesteps[index])).double()
        pred_x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        s = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
        x = a_prev.sqrt() * pred_x0 + (1 - a_prev - s**2).sqrt() * eps
        if eta:
            x = x + s * noises[step].double()
    return x


def test_ddim_eta_0_is_deterministic_and_draws_no_noise_without_a_sampler():
    x = initial_noise()
    first = sample_ddim(unet_model(), x, get_timesteps(10), AC)
    assert torch.equal(first, sample_ddim(unet_model(), x, get_timesteps(10), AC))
    assert torch.isfinite(first).all()


def test_ddim_matches_the_closed_form_update():
    x = initial_noise()
    ts = get_timesteps(10)
    got = sample_ddim(unet_model(), x, ts, AC)
    torch.testing.assert_close(got.double(), reference_ddim(x, ts), rtol=1e-4, atol=1e-4)


def test_ddim_with_eta_uses_the_noise_sampler_once_per_step():
    x = initial_noise()
    ts = get_timesteps(10)
    with pytest.raises(ValueError, match="noise_sampler"):
        sample_ddim(unet_model(), x, ts, AC, eta=0.5)
    sampler, drawn = noise_stream(7)
    got = sample_ddim(unet_model(), x, ts, AC, eta=0.5, noise_sampler=sampler)
    assert len(drawn) == 9
    torch.testing.assert_close(got.double(), reference_ddim(x, ts, 0.5, drawn), rtol=1e-4, atol=1e-4)
    again = sample_ddim(unet_model(), x, ts, AC, eta=0.5, noise_sampler=noise_stream(7)[0])
    assert torch.equal(got, again)
    # eta 0 with a noise sampler: the stream advances as A1111's (one draw per step) but the result is eta 0's
    sampler, drawn = noise_stream(7)
    plain = sample_ddim(unet_model(), x, ts, AC, eta=0.0, noise_sampler=sampler)
    assert len(drawn) == 9
    assert torch.equal(plain, sample_ddim(unet_model(), x, ts, AC))
    assert not torch.allclose(plain, got)


def test_ddim_on_a_single_data_point_is_exact():
    """Denoised ≡ c: every pred_x0 is c and eps stays the initial one, so DDIM lands on
    sqrt(a_1) c + sqrt(1 - a_1) (x - sqrt(a_901) c) / sqrt(1 - a_901) for 10 steps."""
    c = 0.7
    model = Counting(lambda x, sigma: torch.full_like(x, c))
    x = initial_noise()
    seen = []
    got = sample_ddim(model, x, get_timesteps(10), AC, callback=seen.append)
    a_start, a_end = AC[901].double(), AC[1].double()
    want = a_end.sqrt() * c + (1 - a_end).sqrt() * (x.double() - a_start.sqrt() * c) / (1 - a_start).sqrt()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert [d["i"] for d in seen] == list(range(9))
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    for d in seen:  # denoised is pred_x0
        torch.testing.assert_close(d["denoised"], torch.full_like(x, c), rtol=1e-4, atol=1e-4)
    assert seen[-1]["x"] is got


# ------------------------------------------------------------------------------------------- PLMS / UniPC


@pytest.mark.parametrize("name", ["PLMS", "UniPC"])
def test_plms_and_unipc_are_finite_and_deterministic(name):
    sampler = SAMPLERS[name]
    x = initial_noise()
    first = sampler(unet_model(), x, get_timesteps(10), AC)
    assert torch.isfinite(first).all()
    assert torch.equal(first, sampler(unet_model(), x, get_timesteps(10), AC))
    assert not torch.allclose(first, x)


# ------------------------------------------------------------------------------------ model evaluations


@pytest.mark.parametrize("steps, calls", [
    (10, {"DDIM": 9, "PLMS": 10, "UniPC": 10}),
    (20, {"DDIM": 19, "PLMS": 20, "UniPC": 20}),
    (30, {"DDIM": 30, "PLMS": 31, "UniPC": 31}),  # 31 timesteps (stride 33)
    (1, {"DDIM": 0, "PLMS": 0, "UniPC": 1}),
    (2, {"DDIM": 1, "PLMS": 2, "UniPC": 2}),
])
def test_model_evaluations_per_sampler_are_a1111s(steps, calls):
    for name, sampler in SAMPLERS.items():
        model, seen = unet_model(), []
        sampler(model, initial_noise(), get_timesteps(steps), AC, callback=seen.append)
        assert model.calls == calls[name], name
        # progress callbacks: one per step (DDIM/PLMS: len(timesteps) - 1, UniPC: len(timesteps))
        assert len(seen) == len(get_timesteps(steps)) - (name != "UniPC"), name
        assert [d["i"] for d in seen] == list(range(len(seen)))


def test_first_model_calls_are_at_a1111s_timesteps():
    for name, first, second in (("DDIM", 901, 801), ("PLMS", 901, 801)):
        model = unet_model()
        SAMPLERS[name](model, initial_noise(), get_timesteps(10), AC)
        assert model.sigmas[0][0] == model_sigma(first), name
        assert model.sigmas[1][0] == model_sigma(second), name  # PLMS: its improved-Euler probe at the next one
    model = unet_model()
    sample_unipc(model, initial_noise(), get_timesteps(10), AC)
    # UniPC's own times: timestep 999, then (1 - k/10 * 0.999 - 0.001) * 1000 = 899.1, 799.2, ...
    got = [float(t[0]) for t in model.unet.timesteps]
    want = [999 - 99.9 * k for k in range(10)]
    assert got == pytest.approx(want, abs=2e-2)


def test_unipc_img2img_starts_at_the_last_timestep_given():
    model = unet_model()
    ts = get_timesteps(20)[:8]  # img2img: the first t_enc timesteps, ending at 351
    sample_unipc(model, initial_noise(), ts, AC, is_img2img=True)
    assert model.calls == 8
    assert float(model.unet.timesteps[0][0]) == pytest.approx(351, abs=1e-2)


@pytest.mark.parametrize("variant", ["bh1", "bh2", "vary_coeff"])
@pytest.mark.parametrize("skip_type", ["time_uniform", "time_quadratic", "logSNR"])
def test_unipc_settings_all_run(variant, skip_type):
    model = unet_model()
    got = sample_unipc(model, initial_noise(), get_timesteps(8), AC, variant=variant, skip_type=skip_type)
    assert torch.isfinite(got).all() and model.calls == 8
    with pytest.raises(ValueError):
        sample_unipc(unet_model(), initial_noise(), get_timesteps(8), AC, variant="bh3")


# ---------------------------------------------------------------------------------------------- accuracy


def errors(steps):
    """Max error against the exact ODE solution for Gaussian data, each sampler over its own time span."""
    x = initial_noise()
    ts = get_timesteps(steps)
    out = {}
    for name, sampler in SAMPLERS.items():
        got = sampler(gaussian_model(), x, ts, AC).double()
        if name == "UniPC":  # from t = 1 (timestep 999) to 1/1000 (timestep 0)
            want = exact_vp(x, AC[999].item(), AC[0].item())
        else:  # from the highest timestep to the lowest
            want = exact_vp(x, AC[int(ts[-1])].item(), AC[int(ts[0])].item())
        out[name] = (got - want).abs().max().item()
    return out


def test_samplers_converge_to_the_exact_ode_solution():
    """Errors shrink with more steps. UniPC's only slowly: its "time_uniform" times put a long final step in
    log-SNR between timesteps ~100 and 0, taken at order 1 without corrector (lower_order_final), as in A1111
    (measured with A1111's own uni_pc.py: the same numbers)."""
    coarse, fine = errors(10), errors(50)
    for name in SAMPLERS:
        assert fine[name] < coarse[name] / 3, (name, coarse, fine)
    assert coarse["DDIM"] < 0.6 and coarse["PLMS"] < 0.15 and coarse["UniPC"] < 0.4, coarse
    assert fine["DDIM"] < 0.15 and fine["PLMS"] < 0.02 and fine["UniPC"] < 0.06, fine


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_single_data_point_is_reached_exactly(name):
    """Denoised ≡ c: eps is constant along the ODE, so every multistep combination is exact too and each sampler
    lands on sqrt(a_end) c + sqrt(1 - a_end) (x - sqrt(a_start) c) / sqrt(1 - a_start)."""
    c = -0.4
    x = initial_noise(1)
    ts = get_timesteps(10)
    got = SAMPLERS[name](Counting(lambda x, sigma: torch.full_like(x, c)), x, ts, AC).double()
    start, end = (999, 0) if name == "UniPC" else (int(ts[-1]), int(ts[0]))
    a_start, a_end = AC[start].double(), AC[end].double()
    want = a_end.sqrt() * c + (1 - a_end).sqrt() * (x.double() - a_start.sqrt() * c) / (1 - a_start).sqrt()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
