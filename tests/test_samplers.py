"""Samplers, schedules and seeds end to end on the tiny model: what a user sees in pixels and infotext."""
import dataclasses

import numpy as np
import pytest
import torch

from conftest import small
from webui.cli import main as cli_main
from webui.engine.infotext import format_infotext, parse_infotext, read_png_infotext
from webui.engine.rng import ImageRNG
from webui.engine.samplers import SAMPLERS, UnknownSampler, sampler_names, split_sampler_name

ANCESTRAL = ["Euler a", "DPM2 a", "DPM++ 2S a"]
SDE = ["DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"]


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def run(manager, **kw):
    return manager.txt2img(small(steps=kw.pop("steps", 5), **kw), None)


def test_every_a1111_sampler_is_registered_under_its_label():
    assert sampler_names() == [
        "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a",
        "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "PLMS", "UniPC",
        "LCM"]


@pytest.mark.parametrize("sampler", [s.name for s in SAMPLERS])
def test_each_sampler_draws_a_finite_picture_and_repeats_it(manager, sampler):
    first = run(manager, sampler_name=sampler)
    image = pixels(first.images[0])
    assert image.std() > 1, "not a flat image"
    again = pixels(run(manager, sampler_name=sampler).images[0])
    assert np.array_equal(image, again)
    text = first.infotexts[0]
    assert f"Sampler: {sampler}," in text
    params = parse_infotext(text)
    assert format_infotext(params) == text
    # the infotext alone regenerates the picture
    regenerated = manager.txt2img(params.replace(model=None, model_hash=None), None)
    assert np.array_equal(pixels(regenerated.images[0]), image)


@pytest.mark.parametrize("schedule", ["Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform",
                                      "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"])
@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M", "DPM++ SDE"])
def test_schedules_with_samplers(manager, sampler, schedule):
    processed = run(manager, sampler_name=sampler, scheduler=schedule)
    assert pixels(processed.images[0]).std() > 1
    assert f"Schedule type: {schedule}," in processed.infotexts[0]


@pytest.mark.parametrize("sampler, written", [
    ("DPM++ 2M", "Karras"), ("DPM++ 2M SDE", "Exponential"), ("DPM++ 3M SDE", "Exponential"),
    ("Euler a", "Automatic"), ("Euler", "Automatic"), ("DDIM", "Automatic"), ("Restart", "Karras")])
def test_automatic_schedule_is_written_as_resolved(manager, sampler, written):
    text = run(manager, sampler_name=sampler, steps=3).infotexts[0]
    assert f"Sampler: {sampler}, Schedule type: {written}, CFG scale" in text


def test_automatic_equals_the_resolved_schedule(manager):
    auto = run(manager, sampler_name="DPM++ 2M", scheduler="Automatic").images[0]
    karras = run(manager, sampler_name="DPM++ 2M", scheduler="Karras").images[0]
    uniform = run(manager, sampler_name="DPM++ 2M", scheduler="Uniform").images[0]
    assert np.array_equal(pixels(auto), pixels(karras))
    assert not np.array_equal(pixels(auto), pixels(uniform))


@pytest.mark.parametrize("sampler", ANCESTRAL + SDE + ["Euler"])
def test_batch_of_three_equals_single_runs(manager, sampler):
    batch = run(manager, sampler_name=sampler, seed=5, batch_size=3)
    assert [p.seed for p in batch.params] == [5, 6, 7]
    for seed, image in zip((5, 6, 7), batch.images):
        single = run(manager, sampler_name=sampler, seed=seed).images[0]
        diff = np.abs(pixels(image) - pixels(single))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (seed, diff.max())


def test_ancestral_noise_matters(manager):
    """Euler a with eta 0 is plain Euler-like; eta changes the picture and is written as Eta."""
    default = run(manager, sampler_name="Euler a")
    half = run(manager, sampler_name="Euler a", eta=0.5)
    assert "Eta" not in default.infotexts[0]
    assert ", Eta: 0.5, " in half.infotexts[0]
    assert not np.array_equal(pixels(default.images[0]), pixels(half.images[0]))
    assert "Eta" not in run(manager, sampler_name="Euler", eta=0.5).infotexts[0]


def test_ddim_eta_is_written_as_eta_ddim(manager):
    text = run(manager, sampler_name="DDIM", eta_ddim=0.3).infotexts[0]
    assert ", Eta DDIM: 0.3, " in text and ", Eta: " not in text
    assert parse_infotext(text).eta_ddim == 0.3


def test_ensd_changes_ancestral_noise_and_is_written_only_where_a1111_writes_it(manager):
    plain = run(manager, sampler_name="Euler a")
    manager.settings.eta_noise_seed_delta = 31337
    ensd = run(manager, sampler_name="Euler a")
    assert "ENSD: 31337" in ensd.infotexts[0] and "ENSD" not in plain.infotexts[0]
    assert not np.array_equal(pixels(plain.images[0]), pixels(ensd.images[0]))
    assert "ENSD" not in run(manager, sampler_name="Euler").infotexts[0]
    manager.settings.eta_noise_seed_delta = 0
    # the infotext carries it: regenerating with the setting back at 0 gives the ENSD picture
    again = manager.txt2img(parse_infotext(ensd.infotexts[0]).replace(model=None), None).images[0]
    assert np.array_equal(pixels(again), pixels(ensd.images[0]))


def test_churn_settings_reach_euler_and_are_written(manager):
    manager.settings.s_churn = 1.0
    churned = run(manager, sampler_name="Euler")
    manager.settings.s_churn = 0.0
    assert ", Sigma churn: 1, " in churned.infotexts[0]
    assert not np.array_equal(pixels(churned.images[0]), pixels(run(manager, sampler_name="Euler").images[0]))


def test_schedule_overrides_are_written_and_used(manager):
    text = run(manager, sampler_name="DPM++ 2M", sigma_max=10.0, rho=5.0).infotexts[0]
    assert "Schedule max sigma: 10" in text and "Schedule rho: 5" in text
    params = parse_infotext(text)
    assert (params.sigma_max, params.rho, params.sigma_min) == (10.0, 5.0, None)


def test_variation_seed(manager):
    base = run(manager, sampler_name="Euler", seed=3)
    varied = run(manager, sampler_name="Euler", seed=3, subseed=9, subseed_strength=0.5, batch_size=2)
    assert [(p.seed, p.subseed) for p in varied.params] == [(3, 9), (3, 10)]
    text = varied.infotexts[1]
    assert "Seed: 3, Size: 64x64" in text and "Variation seed: 10, Variation seed strength: 0.5" in text
    assert "Variation" not in base.infotexts[0]
    assert not np.array_equal(pixels(base.images[0]), pixels(varied.images[0]))
    # strength 1 is the variation seed's own noise (Euler adds no noise of its own)
    full = run(manager, sampler_name="Euler", seed=3, subseed=9, subseed_strength=1.0)
    assert np.array_equal(pixels(full.images[0]), pixels(run(manager, sampler_name="Euler", seed=9).images[0]))


def test_resize_seed_from(manager):
    same = run(manager, sampler_name="Euler", seed=3, seed_resize_from_w=64, seed_resize_from_h=64)
    assert np.array_equal(pixels(same.images[0]), pixels(run(manager, sampler_name="Euler", seed=3).images[0]))
    grown = run(manager, sampler_name="Euler", seed=3, width=128, height=128, seed_resize_from_w=64,
                seed_resize_from_h=64)
    assert "Seed resize from: 64x64" in grown.infotexts[0]


def test_resize_seed_pastes_the_old_noise_in_the_centre():
    old = ImageRNG((4, 8, 8), [3]).next()[0]
    new = ImageRNG((4, 16, 12), [3], seed_resize_from=(64, 64)).next()[0]
    assert torch.equal(new[:, 4:12, 2:10], old)
    smaller = ImageRNG((4, 4, 4), [3], seed_resize_from=(64, 64)).next()[0]
    assert torch.equal(smaller, old[:, 2:6, 2:6])


def test_rng_source_is_recorded(manager):
    assert ", RNG: CPU, " in run(manager).infotexts[0]
    gpu = run(manager, rng="GPU")
    assert "RNG" not in gpu.infotexts[0]  # A1111 writes only non-GPU sources
    if not torch.cuda.is_available():  # no GPU here: the CPU generator stands in, same seeds same noise
        assert np.array_equal(pixels(gpu.images[0]), pixels(run(manager).images[0]))


@pytest.mark.parametrize("name, scheduler, expected", [
    ("DPM++ 2M Karras", "Automatic", ("DPM++ 2M", "Automatic")),
    ("DPM++ 2M SDE Karras", "Automatic", ("DPM++ 2M SDE", "Karras")),
    ("DPM++ 2M SDE Exponential", "Automatic", ("DPM++ 2M SDE", "Automatic")),
    ("Euler a Karras", "Automatic", ("Euler a", "Karras")),
    ("dpm++ sde karras", "Automatic", ("DPM++ SDE", "Automatic")),
    ("k_dpmpp_2m_ka", "Automatic", ("DPM++ 2M", "Automatic")),
    ("k_euler_a", "Automatic", ("Euler a", "Automatic")),
    ("DPM++ 2M", "SGMUniform", ("DPM++ 2M", "SGM Uniform")),
    ("DPM2 a Exponential", "Automatic", ("DPM2 a", "Exponential")),
])
def test_old_combined_names_split(name, scheduler, expected):
    assert split_sampler_name(name, scheduler) == expected


def test_unknown_names_are_clear_errors(manager):
    with pytest.raises(UnknownSampler, match="unknown sampler 'Euler b'"):
        split_sampler_name("Euler b")
    with pytest.raises(UnknownSampler, match="Karras"):
        run(manager, scheduler="Karas")


def test_old_name_in_pasted_infotext_generates_like_the_new_one(manager):
    old = manager.txt2img(small(sampler_name="DPM++ 2M Karras", steps=4), None)
    new = manager.txt2img(small(sampler_name="DPM++ 2M", scheduler="Karras", steps=4), None)
    assert np.array_equal(pixels(old.images[0]), pixels(new.images[0]))
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in old.infotexts[0]


def test_acceptance_cli_batch_of_three_matches_single_runs(data_dir, capsys):
    ckpt = str(data_dir / "models" / "Stable-diffusion" / "tiny.safetensors")
    common = ["txt2img", "--ckpt", ckpt, "--prompt", "a cat", "--steps", "6", "--width", "64", "--height", "64",
              "--sampler", "DPM++ 2M SDE", "--scheduler", "Karras", "--data-dir", str(data_dir)]
    assert cli_main([*common, "--batch-size", "3", "--seed", "5", "--outdir", str(data_dir / "batch")]) == 0
    batch = capsys.readouterr().out.split()
    singles = []
    for seed in (5, 6, 7):
        assert cli_main([*common, "--batch-size", "1", "--seed", str(seed), "--outdir",
                         str(data_dir / f"single{seed}")]) == 0
        singles += capsys.readouterr().out.split()
    from PIL import Image

    for b, s in zip(batch, singles):
        diff = np.abs(pixels(Image.open(b)) - pixels(Image.open(s)))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01
        tb, ts = read_png_infotext(b), read_png_infotext(s)
        assert tb == ts and "Sampler: DPM++ 2M SDE, Schedule type: Karras" in tb


def test_switching_samplers_leaves_no_state(manager):
    first = run(manager, sampler_name="DPM++ 2M")
    for other in ("Euler a", "DPM++ SDE", "DDIM", "LCM", "DPM adaptive"):
        run(manager, sampler_name=other)
    assert np.array_equal(pixels(run(manager, sampler_name="DPM++ 2M").images[0]), pixels(first.images[0]))


def test_settings_dataclass_matches_the_request_knobs():
    from webui.engine.params import GenerationParams

    fields = {f.name for f in dataclasses.fields(GenerationParams)}
    assert {"eta", "eta_ddim", "s_churn", "s_tmin", "s_tmax", "s_noise", "ensd", "rng"} <= fields
