"""Bad numbers and text are refused or repaired at entry, by name, and never stored or passed to a job."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import small
from webui.engine.infotext import format_infotext, parse_infotext
from webui.engine.params import InvalidParams


@pytest.mark.parametrize("change, message", [
    (dict(sigma_min=-5.0), "sigma min must be at least 0.0, got -5"),
    (dict(eta_noise_seed_delta=2**64), "ENSD must be between 0 and 4294967295"),
    (dict(eta_ancestral=float("nan")), "eta must be a finite number"),
    (dict(randn_source="NV"), "RNG source must be one of CPU, GPU"),
    (dict(CLIP_stop_at_last_layers=13), "clip skip must be between 1 and 12"),
])
def test_a_bad_setting_is_refused_and_nothing_is_stored(manager, change, message):
    before = manager.txt2img(small(sampler_name="DPM++ 2M", scheduler="Karras"), None)
    with pytest.raises(InvalidParams, match=message):
        manager.update_settings(s_noise=0.5, **change)  # refused whole: s_noise is not stored either
    assert manager.settings.s_noise == 1.0
    after = manager.txt2img(small(sampler_name="DPM++ 2M", scheduler="Karras"), None)
    assert np.array_equal(np.asarray(after.images[0]), np.asarray(before.images[0]))


@pytest.mark.parametrize("field, value, message", [
    ("sigma_min", float("nan"), "schedule min sigma must be a finite number"),
    ("ensd", 2**64, "eta noise seed delta must be between 0 and 4294967295"),
    ("eta", 3.0, "eta must be between 0.0 and 1.0"),
])
def test_bad_request_knobs_are_refused_by_name(manager, field, value, message):
    with pytest.raises(InvalidParams, match=message):
        manager.txt2img(small(**{field: value}), None)


def test_cli_nan_sigma_is_an_error_not_a_black_image(tmp_path, tiny_files, capsys):
    from webui import cli

    code = cli.main(["txt2img", "--ckpt", str(tiny_files["safetensors"]), "--prompt", "a cat", "--steps", "1",
                     "--width", "64", "--height", "64", "--sigma-min", "nan", "--outdir", str(tmp_path)])
    assert code == 2
    assert "schedule min sigma must be a finite number" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.png"))


def test_out_of_range_infotext_values_stay_text():
    text = ("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 99999999999999999999, Size: 64x64, "
            "Schedule min sigma: nan, ENSD: 18446744073709551616")
    params = parse_infotext(text)
    assert (params.seed, params.sigma_min, params.ensd, params.steps) == (-1, None, None, 20)
    assert params.extra["Seed"] == "99999999999999999999"
    params.validate()  # what reaches a job is valid
    assert "Seed: 99999999999999999999" in format_infotext(params)  # and nothing the user wrote is lost


def test_a_lone_surrogate_in_a_prompt_is_replaced_with_a_warning(manager):
    processed = manager.txt2img(small(prompt="a \ud800 cat", negative_prompt="ugly \udfff"), None)
    assert processed.images and processed.images[0].size == (64, 64)
    assert any("prompt were replaced" in w for w in processed.warnings)
    assert any("negative prompt were replaced" in w for w in processed.warnings)
    assert manager.token_count("a \ud800 cat", 20)[1] == 75
