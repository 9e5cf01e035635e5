"""Token merging (A1111's "Token merging ratio", tomesd): off changes nothing, on changes the picture but repeats
exactly, the UNet is left unpatched after the job, settings and infotext follow A1111's rules."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import small
from webui.engine.errors import UserError
from webui.engine.infotext import format_infotext, parse_infotext

HIRES = dict(enable_hr=True, hr_scale=2.0, denoising_strength=0.6, steps=3)


def pixels(result, k=0):
    return np.asarray(result.images[k])


def blocks(manager):
    unet = manager.current.components.unet
    return {type(m).__name__ for m in unet.modules() if "TransformerBlock" in type(m).__name__}


def test_merging_changes_the_picture_repeats_exactly_and_leaves_the_unet_as_it_was(manager):
    plain = manager.txt2img(small(steps=3), None)
    zero = manager.txt2img(small(steps=3, token_merging_ratio=0.0), None)
    merged = manager.txt2img(small(steps=3, token_merging_ratio=0.5), None)
    again = manager.txt2img(small(steps=3, token_merging_ratio=0.5), None)
    assert np.array_equal(pixels(plain), pixels(zero))
    assert not np.array_equal(pixels(plain), pixels(merged)), "merging half the tokens changes the picture"
    assert np.array_equal(pixels(merged), pixels(again)), "no random pairing: the same request, the same picture"
    assert blocks(manager) == {"BasicTransformerBlock"}, "the patch is removed after the job"
    assert np.array_equal(pixels(manager.txt2img(small(steps=3), None)), pixels(plain))
    assert "Token merging ratio: 0.5" in merged.infotexts[0]
    assert "Token merging ratio" not in plain.infotexts[0]


def test_the_setting_applies_when_the_request_says_nothing(manager):
    by_request = manager.txt2img(small(steps=3, token_merging_ratio=0.3), None)
    manager.update_settings(token_merging_ratio=0.3)
    by_setting = manager.txt2img(small(steps=3), None)
    assert np.array_equal(pixels(by_request), pixels(by_setting))
    assert "Token merging ratio: 0.3" in by_setting.infotexts[0]


def test_hires_ratio_is_written_only_with_hires_and_falls_back_to_the_first_pass():
    from webui.engine.jobs.resolve import resolve
    from webui.engine.settings import Settings

    settings = Settings(token_merging_ratio=0.4)
    assert resolve(small(**HIRES), settings).token_merging_ratio_hr == 0.4
    settings = Settings(token_merging_ratio=0.4, token_merging_ratio_hr=0.2)
    hires = resolve(small(**HIRES), settings)
    assert (hires.token_merging_ratio, hires.token_merging_ratio_hr) == (0.4, 0.2)
    text = format_infotext(hires)
    assert "Token merging ratio: 0.4" in text and "Token merging ratio hr: 0.2" in text
    assert "Token merging ratio hr" not in format_infotext(resolve(small(), settings))
    pasted = parse_infotext("a cat\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, "
                            "Token merging ratio: 0.5, Token merging ratio hr: 0.3")
    assert (pasted.token_merging_ratio, pasted.token_merging_ratio_hr) == (0.5, 0.3)


def test_the_hires_pass_merges_at_its_own_ratio(manager):
    first_only = manager.txt2img(small(**HIRES, token_merging_ratio=0.5, token_merging_ratio_hr=0.0), None)
    both = manager.txt2img(small(**HIRES, token_merging_ratio=0.5, token_merging_ratio_hr=0.5), None)
    assert not np.array_equal(pixels(first_only), pixels(both))
    assert "Token merging ratio hr: 0.5" in both.infotexts[0]


def test_img2img_takes_its_own_setting(manager):
    init = Image.new("RGB", (64, 64), (120, 40, 200))
    params = small(steps=3, denoising_strength=0.8)
    manager.update_settings(token_merging_ratio=0.5, token_merging_ratio_img2img=0.2)
    from_setting = manager.img2img(params, init)
    explicit = manager.img2img(params.replace(token_merging_ratio=0.2), init)
    assert np.array_equal(pixels(from_setting), pixels(explicit))
    assert "Token merging ratio: 0.2" in from_setting.infotexts[0]


@pytest.mark.parametrize("ratio", [0.95, -0.1])
def test_an_out_of_range_ratio_is_refused(manager, ratio):
    with pytest.raises(UserError, match="(?i)token merging"):
        manager.txt2img(small(steps=2, token_merging_ratio=ratio), None)
