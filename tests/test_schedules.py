"""Schedule types (webui.engine.samplers.schedules) against A1111 1.10.1's sd_schedulers.py, by hand.

The denoiser is the SD1 training schedule (scaled_linear 0.00085 → 0.012): sigma_min ≈ 0.0292, sigma_max ≈ 14.61.
Expected values are computed here from the formulas, in float64 where the exact rounding does not matter, and
with A1111's float32 steps where a first value is asserted exactly."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import webui
from webui.engine.models.families.sd1 import AYS_SD15
from webui.engine.models.families.sdxl import AYS_SDXL
from webui.engine.samplers.denoiser import DiscreteEpsDenoiser, alphas_cumprod
from webui.engine.samplers.schedules import (
    SCHEDULES,
    Schedule,
    find_schedule,
    get_sigmas,
)

CONFIG = Path(webui.__file__).parent / "engine" / "models" / "configs" / "sd1" / "scheduler" / "scheduler_config.json"
LABELS = [s.label for s in SCHEDULES if s.function is not None]
STEPS = [1, 2, 7, 10, 11, 20, 30]


@pytest.fixture(scope="module")
def den() -> DiscreteEpsDenoiser:
    return DiscreteEpsDenoiser(None, alphas_cumprod(json.loads(CONFIG.read_text())))


def smin_smax(den):
    return den.sigma_min.item(), den.sigma_max.item()


def expected_length(label, steps):
    if label == "DDIM":  # every (1000 // n)-th training sigma from 1: ceil(999 / stride) of them, then 0
        return len(range(1, 1000, max(1000 // steps, 1))) + 1
    return steps + 1


def expected_first(label, steps, den):
    """A1111's first sigma, exactly (float32)."""
    smin, smax = smin_smax(den)
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)
    if label in ("Uniform", "SGM Uniform", "Normal"):  # sigma at timestep 999 through log-sigma interpolation
        return den.log_sigmas[-1].exp()
    if label == "Karras":
        return f32(smax ** (1 / 7)) ** 7.0
    if label == "Exponential":
        return f32(math.log(smax)).exp()
    if label == "Polyexponential":
        return torch.exp(torch.ones([]) * (math.log(smax) - math.log(smin)) + math.log(smin))
    if label == "KL Optimal":
        return torch.tan(torch.arctan(f32(smax)))
    if label == "Align Your Steps":  # one step: linspace(0, 1, 1) = [0] picks the table's LOWEST sigma
        return f32(0.029) if steps == 1 else f32(14.615)
    if label == "Simple":
        return den.sigmas[-1]
    if label == "DDIM":
        stride = 1000 // steps
        return den.sigmas[list(range(1, 1000, stride))[-1]]
    if label == "Beta":
        return f32(smin + 1.0 * (smax - smin))
    raise AssertionError(label)


# ------------------------------------------------------------------------------------------------- registry


def test_the_list_is_a1111s_in_order_with_keys():
    assert [(s.label, s.key) for s in SCHEDULES] == [
        ("Automatic", "automatic"), ("Uniform", "uniform"), ("Karras", "karras"), ("Exponential", "exponential"),
        ("Polyexponential", "polyexponential"), ("SGM Uniform", "sgm_uniform"), ("KL Optimal", "kl_optimal"),
        ("Align Your Steps", "align_your_steps"), ("Simple", "simple"), ("Normal", "normal"), ("DDIM", "ddim"),
        ("Beta", "beta")]
    rho = {s.label: s.default_rho for s in SCHEDULES if s.default_rho != -1}
    assert rho == {"Karras": 7.0, "Polyexponential": 1.0}
    inner = {s.label for s in SCHEDULES if s.need_inner_model}
    assert inner == {"Uniform", "SGM Uniform", "Simple", "Normal", "DDIM", "Beta"}


@pytest.mark.parametrize("name, label", [
    ("Karras", "Karras"), ("karras", "Karras"), ("KARRAS", "Karras"), (" Exponential ", "Exponential"),
    ("SGMUniform", "SGM Uniform"), ("sgmuniform", "SGM Uniform"), ("sgm_uniform", "SGM Uniform"),
    ("sgm uniform", "SGM Uniform"), ("align_your_steps", "Align Your Steps"), ("kl optimal", "KL Optimal"),
    ("automatic", "Automatic"), ("beta", "Beta"), ("DDIM", "DDIM")])
def test_find_schedule_by_label_key_or_alias(name, label):
    found = find_schedule(name)
    assert isinstance(found, Schedule) and found.label == label


def test_unknown_schedule_lists_the_labels():
    with pytest.raises(ValueError) as err:
        find_schedule("Karras Exponential")
    assert "Align Your Steps" in str(err.value) and "SGM Uniform" in str(err.value)


def test_automatic_and_zero_steps_are_refused(den):
    with pytest.raises(ValueError, match="caller"):
        get_sigmas("Automatic", 10, den)
    with pytest.raises(ValueError):
        get_sigmas("Karras", 0, den)


# ------------------------------------------------------------------------------------- shape, order and ends


@pytest.mark.parametrize("label", LABELS)
def test_every_schedule_shape_order_and_ends(den, label):
    smin, _ = smin_smax(den)
    for steps in STEPS:
        sigmas = get_sigmas(label, steps, den)
        assert sigmas.dtype == torch.float32 and sigmas.device.type == "cpu"
        assert len(sigmas) == expected_length(label, steps), (label, steps)
        assert torch.all(sigmas[:-1] >= sigmas[1:]), (label, steps, sigmas)
        assert torch.isfinite(sigmas).all()
        assert sigmas[0] == expected_first(label, steps, den), (label, steps, sigmas[0])
        if label == "Align Your Steps":
            assert sigmas[0].item() == pytest.approx(0.029 if steps == 1 else 14.615, rel=1e-6)
        elif label == "DDIM":  # starts at timestep 1 + k*(1000 // n), below sigma_max: 10 steps → t=901, ~8.39
            assert sigmas[0] < den.sigma_max
        else:
            assert sigmas[0].item() == pytest.approx(den.sigma_max.item(), rel=1e-5)
        if label == "KL Optimal":  # A1111 1.10.1 appends no 0: it stops at tan(arctan(sigma_min)) ≈ sigma_min
            assert sigmas[-1] == torch.tan(torch.arctan(torch.tensor(smin)))
            assert sigmas[-1].item() == pytest.approx(smin, rel=1e-5)
        else:
            assert sigmas[-1].item() == 0.0
            assert (sigmas[:-1] > 0).all()


# ------------------------------------------------------------------------------------------ values by hand


def test_uniform_is_the_models_own_schedule(den):
    for steps in STEPS:
        assert torch.equal(get_sigmas("Uniform", steps, den), den.get_sigmas(steps))


def test_karras_formula(den):
    smin, smax = smin_smax(den)
    for rho, steps in ((7.0, 10), (7.0, 25), (3.0, 10)):
        i = np.arange(steps) / (steps - 1)
        want = (smax ** (1 / rho) + i * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
        got = get_sigmas("Karras", steps, den, rho=None if rho == 7.0 else rho)
        np.testing.assert_allclose(got[:-1].numpy(), want, rtol=2e-6)
    assert get_sigmas("Karras", 10, den)[-2].item() == pytest.approx(smin, rel=1e-5)


def test_exponential_is_log_linear(den):
    smin, smax = smin_smax(den)
    got = get_sigmas("Exponential", 12, den)
    np.testing.assert_allclose(got[:-1].numpy(), np.exp(np.linspace(np.log(smax), np.log(smin), 12)), rtol=2e-6)
    ratios = got[1:-1] / got[:-2]  # a constant ratio between neighbours
    np.testing.assert_allclose(ratios.numpy(), ratios[0].item(), rtol=1e-5)


def test_polyexponential(den):
    smin, smax = smin_smax(den)
    # rho 1 (its default) is Exponential
    np.testing.assert_allclose(get_sigmas("Polyexponential", 10, den).numpy(),
                               get_sigmas("Exponential", 10, den).numpy(), rtol=2e-6)
    ramp = np.linspace(1, 0, 10) ** 2.0
    want = np.exp(ramp * (np.log(smax) - np.log(smin)) + np.log(smin))
    np.testing.assert_allclose(get_sigmas("Polyexponential", 10, den, rho=2.0)[:-1].numpy(), want, rtol=2e-6)


def test_kl_optimal_formula(den):
    smin, smax = smin_smax(den)
    steps = 10
    frac = np.arange(steps + 1) / steps
    want = np.tan(frac * np.arctan(smin) + (1 - frac) * np.arctan(smax))
    np.testing.assert_allclose(get_sigmas("KL Optimal", steps, den).numpy(), want, rtol=1e-5)


def test_sgm_uniform_and_normal_walk_the_timesteps(den):
    for steps in (5, 10):
        # Normal: n timesteps 999 → 0, both ends included: the model's own schedule up to rounding
        np.testing.assert_allclose(get_sigmas("Normal", steps, den).numpy(), den.get_sigmas(steps).numpy(),
                                   rtol=1e-5)
        # SGM Uniform: n + 1 timesteps 999 → 0 with the last dropped
        t = np.linspace(999, 0, steps + 1)[:-1]
        want = np.exp(np.interp(t, np.arange(1000), den.log_sigmas.double().numpy()))
        got = get_sigmas("SGM Uniform", steps, den)
        np.testing.assert_allclose(got[:-1].numpy(), want, rtol=1e-5)
        assert got[-2] > den.sigma_min * 2  # stops well above sigma_min, then jumps to 0


def test_simple_and_ddim_pick_training_sigmas(den):
    sigmas = den.sigmas
    got = get_sigmas("Simple", 10, den)
    assert torch.equal(got[:-1], sigmas[[999 - 100 * i for i in range(10)]])
    got = get_sigmas("Simple", 7, den)  # stride 1000/7, index truncated
    assert torch.equal(got[:-1], sigmas[[999 - int(i * 1000 / 7) for i in range(7)]])
    assert torch.equal(get_sigmas("DDIM", 1, den), torch.tensor([sigmas[1].item(), 0.0]))
    got = get_sigmas("DDIM", 10, den)
    assert torch.equal(got[:-1], sigmas[[901, 801, 701, 601, 501, 401, 301, 201, 101, 1]])
    got = get_sigmas("DDIM", 30, den)  # stride 33: 31 sigmas, 1 + 33k for k = 30 .. 0
    assert len(got) == 32 and torch.equal(got[:-1], sigmas[[1 + 33 * k for k in range(30, -1, -1)]])


def test_align_your_steps_tables_and_log_linear_interpolation(den):
    got = get_sigmas("Align Your Steps", 11, den)  # 11 steps: the table itself, then 0
    assert torch.equal(got, torch.tensor([*AYS_SD15, 0.0]))
    assert torch.equal(get_sigmas("Align Your Steps", 11, den, ays_sigmas=AYS_SDXL), torch.tensor([*AYS_SDXL, 0.0]))
    got = get_sigmas("Align Your Steps", 21, den)  # every other point is a table value, between: geometric means
    np.testing.assert_allclose(got[:-1:2].numpy(), AYS_SD15, rtol=1e-6)
    np.testing.assert_allclose(got[1:-1:2].numpy(), np.sqrt(np.array(AYS_SD15[:-1]) * AYS_SD15[1:]), rtol=1e-6)
    got = get_sigmas("Align Your Steps", 10, den)
    assert len(got) == 11 and got[0].item() == pytest.approx(14.615) and got[-2].item() == pytest.approx(0.029)
    sdxl = get_sigmas("Align Your Steps", 10, den, ays_sigmas=AYS_SDXL)
    assert not torch.equal(got, sdxl) and sdxl[0] == got[0]


def test_beta_schedule(den):
    stats = pytest.importorskip("scipy.stats")
    smin, smax = smin_smax(den)
    q = stats.beta.ppf(1 - np.linspace(0, 1, 10), 0.6, 0.6)
    want = smin + q * (smax - smin)
    got = get_sigmas("Beta", 10, den)
    np.testing.assert_allclose(got[:-1].numpy(), want, rtol=1e-6)
    assert got[-2].item() == pytest.approx(smin, rel=1e-6)
    # alpha = beta: the quantiles are symmetric about the middle of [sigma_min, sigma_max]
    np.testing.assert_allclose((got[:-1] + got[:-1].flip(0)).numpy(), smin + smax, rtol=1e-5)
    other = get_sigmas("Beta", 10, den, beta_alpha=0.3, beta_beta=0.9)
    np.testing.assert_allclose(other[:-1].numpy(), smin + stats.beta.ppf(1 - np.linspace(0, 1, 10), 0.3, 0.9)
                               * (smax - smin), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ overrides


USES_RANGE = ["Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal", "Normal", "Beta"]
IGNORES_RANGE = ["Uniform", "Align Your Steps", "Simple", "DDIM"]


@pytest.mark.parametrize("label", USES_RANGE)
def test_sigma_min_and_max_overrides_take_effect(den, label):
    got = get_sigmas(label, 10, den, sigma_min=0.1, sigma_max=10.0)
    assert got[0].item() == pytest.approx(10.0, rel=1e-4)
    lowest = got[-1] if label == "KL Optimal" else got[-2]
    if label == "SGM Uniform":  # its last kept timestep is one step above sigma_min's
        assert 0.1 < lowest.item() < got[-3].item()
    else:
        assert lowest.item() == pytest.approx(0.1, rel=1e-4)
    # 0 and None both mean the model's value, as A1111's settings
    assert torch.equal(get_sigmas(label, 10, den, sigma_min=0, sigma_max=0), get_sigmas(label, 10, den))
    assert torch.equal(get_sigmas(label, 10, den, sigma_min=smin_smax(den)[0]), get_sigmas(label, 10, den))


@pytest.mark.parametrize("label", IGNORES_RANGE)
def test_schedules_on_fixed_sigmas_ignore_the_range(den, label):
    assert torch.equal(get_sigmas(label, 10, den, sigma_min=0.1, sigma_max=10.0), get_sigmas(label, 10, den))


def test_rho_only_for_schedules_that_have_one(den):
    assert not torch.equal(get_sigmas("Karras", 10, den, rho=3.0), get_sigmas("Karras", 10, den))
    assert torch.equal(get_sigmas("Karras", 10, den, rho=7.0), get_sigmas("Karras", 10, den))
    assert torch.equal(get_sigmas("Karras", 10, den, rho=0), get_sigmas("Karras", 10, den))
    assert not torch.equal(get_sigmas("Polyexponential", 10, den, rho=2.0), get_sigmas("Polyexponential", 10, den))
    for label in ("Exponential", "KL Optimal", "Beta", "Normal"):
        assert torch.equal(get_sigmas(label, 10, den, rho=3.0), get_sigmas(label, 10, den))
