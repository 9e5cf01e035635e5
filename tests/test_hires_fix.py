"""Hires fix (A1111's txt2img second pass) on the tiny SD1 model: sizes, every upscaler, A1111's infotext keys,
and the parsed infotext regenerating the same pixels."""
import numpy as np
import pytest
import torch

from conftest import small
from webui.engine.infotext import format_infotext, parse_infotext
from webui.engine.jobs import hires

HIRES = dict(enable_hr=True, hr_scale=2.0, denoising_strength=0.6, steps=4)


def px(processed, i=0):
    return np.asarray(processed.images[i], dtype=np.int16)


def keys(infotext: str) -> list[str]:
    line = infotext.splitlines()[-1]
    return [part.split(":")[0].strip() for part in line.split(", ")]


@pytest.mark.parametrize("upscaler", [*hires.LATENT_MODES, "Lanczos", "Nearest", "None"])
def test_64_to_128_with_every_upscaler_regenerates_from_its_infotext(manager, upscaler):
    processed = manager.txt2img(small(**HIRES, hr_upscaler=upscaler), None)
    image = processed.images[0]
    assert image.size == (128, 128)
    text = processed.infotexts[0]
    assert "Size: 64x64" in text and "Denoising strength: 0.6" in text and "Hires upscale: 2" in text
    assert f"Hires upscaler: {upscaler}" in text
    again = parse_infotext(text)
    assert again.enable_hr and again.hr_upscaler == upscaler and again.hr_scale == 2.0
    regenerated = manager.txt2img(again, None)
    assert np.array_equal(px(regenerated), px(processed))
    assert regenerated.infotexts[0] == text


def test_infotext_key_set_and_order_are_a1111s(manager):
    processed = manager.txt2img(small(**HIRES, hr_upscaler="Latent (bicubic)", hr_second_pass_steps=3,
                                      hr_sampler_name="Euler", hr_prompt="a dog", sampler_name="DPM++ 2M"), None)
    # A1111 1.10: create_infotext's fixed keys, then init()'s extra_generation_params in the order it sets them
    assert keys(processed.infotexts[0]) == [
        "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
        "Denoising strength", "RNG", "Hires sampler", "Hires prompt", "Hires upscale", "Hires steps",
        "Hires upscaler", "Version"]
    assert "Hires sampler: Euler, Hires prompt: a dog, Hires upscale: 2" in processed.infotexts[0]


@pytest.mark.parametrize("sampler, scheduler, hr_sampler, hr_scheduler, written", [
    ("DPM++ 2M", "Automatic", None, None, None),  # Karras both times
    ("DPM++ 2M", "Automatic", "Euler", None, None),  # Euler's own schedule is the model's: nothing to write
    ("DPM++ 2M", "Automatic", None, "Exponential", "Exponential"),
    ("Euler", "Automatic", "DPM++ 2M", None, "Karras"),  # the first pass wrote no schedule of its own
    ("DPM++ 2M", "Karras", None, "Karras", None),
])
def test_hires_schedule_type_is_written_as_a1111_does(manager, sampler, scheduler, hr_sampler, hr_scheduler,
                                                       written):
    """sd_samplers_kdiffusion.get_sigmas: in the hires pass, a schedule that has a function and differs from
    the first pass's recorded one."""
    text = manager.txt2img(small(**HIRES, sampler_name=sampler, scheduler=scheduler, hr_sampler_name=hr_sampler,
                                 hr_scheduler=hr_scheduler), None).infotexts[0]
    if written is None:
        assert "Hires schedule type" not in text
    else:
        assert f"Hires schedule type: {written}" in text
    assert parse_infotext(text).hr_scheduler == (written or None) or written is None


def test_without_enable_hr_nothing_of_hires_is_written_or_done(manager):
    plain = manager.txt2img(small(), None)
    ignored = manager.txt2img(small(hr_upscaler="Latent", hr_scale=2.0, denoising_strength=0.7,
                                    hr_second_pass_steps=3, hr_prompt="x"), None)
    assert ignored.images[0].size == (64, 64) and ignored.infotexts == plain.infotexts
    assert np.array_equal(px(ignored), px(plain))


def test_hires_changes_the_picture_and_denoise_zero_keeps_the_upscale(manager):
    first = manager.txt2img(small(), None)
    fixed = manager.txt2img(small(**HIRES), None)
    up = np.asarray(first.images[0].resize((128, 128)), dtype=np.int16)
    assert np.abs(px(fixed) - up).mean() > 3  # the second pass repainted it


@pytest.mark.parametrize("change, size, written", [
    (dict(hr_scale=1.5), (96, 96), "Hires upscale: 1.5"),
    (dict(hr_resize_x=128), (128, 128), "Hires resize: 128x0"),
    (dict(hr_resize_y=96), (96, 96), "Hires resize: 0x96"),
    (dict(hr_resize_x=128, hr_resize_y=64), (128, 64), "Hires resize: 128x64"),  # cover then crop
])
def test_target_sizes(manager, change, size, written):
    processed = manager.txt2img(small(**{**HIRES, **change}), None)
    assert processed.images[0].size == size
    assert written in processed.infotexts[0]
    again = parse_infotext(processed.infotexts[0])
    assert np.array_equal(px(manager.txt2img(again, None)), px(processed))


def test_batches_use_the_same_per_image_seeds_in_both_passes(manager):
    """Image i of a hires batch is the picture of seed+i alone: the second pass draws its noise from the same
    per-image generators (A1111 builds a new ImageRNG with the job's seeds)."""
    batches = manager.txt2img(small(**HIRES, n_iter=3, sampler_name="Euler a"), None)
    assert [p.seed for p in batches.params] == [1234, 1235, 1236]
    alone = manager.txt2img(small(**HIRES, seed=1236, sampler_name="Euler a"), None)
    assert np.array_equal(px(batches, 2), px(alone))
    # in one batch of two, only batched matmuls' rounding differs (test_txt2img.test_batch_equals_single_runs)
    pair = manager.txt2img(small(**HIRES, seed=1235, batch_size=2, sampler_name="Euler a"), None)
    diff = np.abs(px(pair, 1) - px(alone))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.02


def test_a_pasted_a1111_hires_infotext_turns_hires_on():
    text = ("a castle\nNegative prompt: fog\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, "
            "Seed: 1, Size: 512x768, Model hash: 6ce0161689, Model: v1-5, Denoising strength: 0.45, "
            "Hires upscale: 1.75, Hires steps: 10, Hires upscaler: R-ESRGAN 4x+, Version: v1.10.1")
    p = parse_infotext(text)
    assert (p.enable_hr, p.hr_scale, p.hr_second_pass_steps, p.hr_upscaler, p.denoising_strength) == (
        True, 1.75, 10, "R-ESRGAN 4x+", 0.45)
    assert format_infotext(p) == text
    resized = parse_infotext(text.replace("Hires upscale: 1.75", "Hires resize: 1024x1536"))
    assert (resized.hr_resize_x, resized.hr_resize_y) == (1024, 1536)
    img2img = parse_infotext(text.replace(", Hires upscale: 1.75, Hires steps: 10, Hires upscaler: R-ESRGAN 4x+", ""))
    assert not img2img.enable_hr and img2img.denoising_strength == 0.45


def test_unknown_upscaler_is_a_clear_error_and_the_model_is_untouched(manager):
    before = {k: v.clone() for k, v in manager.current.components.unet.state_dict().items()}
    with pytest.raises(ValueError, match="could not find upscaler named 'R-ESRGAN 4x\\+'"):
        manager.txt2img(small(**HIRES, hr_upscaler="R-ESRGAN 4x+"), None)
    after = manager.current.components.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_hires_progress_counts_both_passes(manager):
    seen = []
    manager.txt2img(small(**HIRES, hr_second_pass_steps=3), None, on_progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == 4 + 3


def test_hires_fix_from_the_ui(served):
    """The txt2img tab's Hires. fix accordion, over gradio's client (its inputs follow the seed fields)."""
    from gradio_client import Client
    from PIL import Image

    client = Client(served, verbose=False)
    gallery, info = client.predict(
        "tiny.safetensors", "a red ball", "", "Euler", "Automatic", 3, 64, 64, 1, 1, 7, 5, -1, 0, 0, 0,
        True, "Nearest", 2, 0.5, 1.5, 0, 0, "Use same sampler", "Automatic", "", "", api_name="/txt2img")
    image = Image.open(gallery[0]["image"])
    assert image.size == (96, 96)
    assert "Denoising strength: 0.5, RNG: CPU, Hires upscale: 1.5, Hires steps: 2, Hires upscaler: Nearest" in info
    off = client.predict("tiny.safetensors", "a red ball", "", "Euler", "Automatic", 3, 64, 64, 1, 1, 7, 5,
                         api_name="/txt2img")[1]
    assert "Hires" not in off and "Denoising" not in off


def test_hires_checkpoint_samples_the_second_pass_on_another_model(manager, data_dir, tiny_files):
    """A1111's Hires checkpoint: the first pass on the job's model, the second on the named one (its text encoder
    and UNet); recorded as `Hires checkpoint: other [hash]`, which pasted back regenerates the same pixels. The
    job's model stays the current one and the cache keeps to its limit."""
    import shutil

    from webui.engine.infotext import parse_infotext

    shutil.copy(tiny_files["other"], data_dir / "models" / "Stable-diffusion" / "other.safetensors")
    base = small(steps=3, seed=12, enable_hr=True, hr_upscaler="Latent", hr_scale=2.0, denoising_strength=0.6)
    same = manager.txt2img(base, None)
    other = manager.txt2img(base.replace(hr_checkpoint_name="other"), None)
    assert other.images[0].size == (128, 128)
    assert not np.array_equal(np.asarray(other.images[0]), np.asarray(same.images[0]))
    text = other.infotexts[0]
    short = manager.hashes.cached(data_dir / "models" / "Stable-diffusion" / "other.safetensors")[:10]
    assert f"Hires checkpoint: other [{short}]" in text
    assert manager.current.info.name == "tiny.safetensors" and len(manager.cache) == 1
    again = manager.txt2img(parse_infotext(text).replace(model=None), None)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(other.images[0]))
    assert "Hires checkpoint" not in manager.txt2img(base.replace(hr_checkpoint_name="Use same checkpoint"),
                                                     None).infotexts[0]


def test_hires_checkpoint_of_another_kind_or_missing_is_refused(manager, data_dir):
    from webui.engine.errors import UserError
    from webui.engine.models.tiny import make_tiny_checkpoint

    make_tiny_checkpoint(data_dir / "models" / "Stable-diffusion" / "inpaint.safetensors", seed=0, inpainting=True)
    base = small(steps=2, enable_hr=True, hr_scale=2.0)
    with pytest.raises(UserError, match="inpainting model and an ordinary one"):
        manager.txt2img(base.replace(hr_checkpoint_name="inpaint"), None)
    with pytest.raises(UserError, match="nope"):
        manager.txt2img(base.replace(hr_checkpoint_name="nope"), None)
    assert manager.txt2img(small(steps=2), None).images
