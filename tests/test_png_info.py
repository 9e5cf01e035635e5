"""PNG Info and paste: a picture's parameters (PNG chunk, JPEG/WebP EXIF) shown with every key, sent to txt2img,
and regenerated to the same pixels; JPEG/WebP saving read back by us and by a third-party reader (sd-parsers)."""
import io

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from conftest import small
from webui.engine.infotext import parse_infotext, read_png_infotext

# What A1111 1.10.1 writes for a hires job with a LoRA and clip skip, plus keys this version does not model
A1111_TEXT = (
    "a red ball <lora:style:0.7>, (shiny:1.2)\nNegative prompt: blurry, text\n"
    "Steps: 6, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 64x64, "
    "Model hash: 0123456789, Model: elsewhere, Denoising strength: 0.55, Clip skip: 2, Hires upscale: 1.5, "
    "Hires steps: 3, Hires upscaler: Latent (nearest-exact), Lora hashes: \"style: 0123456789ab\", "
    "ADetailer model: face_yolov8n.pt, Version: v1.10.1")


def png_with(text: str, size=(64, 64)) -> bytes:
    meta = PngInfo()
    meta.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buffer, format="PNG", pnginfo=meta)
    return buffer.getvalue()


def value(x):
    """What a component shows after an event: the value itself, or the value of an update (gradio's client
    hands updates over as dicts)."""
    return x.get("value") if isinstance(x, dict) and x.get("__type__") == "update" else x


@pytest.fixture
def client(served):
    from gradio_client import Client

    return Client(served, verbose=False)


def test_png_info_shows_every_key_and_sends_every_field_to_txt2img(client, tmp_path):
    from gradio_client import handle_file

    path = tmp_path / "from-a-model-site.png"
    path.write_bytes(png_with(A1111_TEXT))
    text, table = client.predict(handle_file(str(path)), api_name="/png_info")
    assert text == A1111_TEXT
    for shown in ("ADetailer model", "face_yolov8n.pt", "Lora hashes", "Hires upscaler"):
        assert shown in table
    values = client.predict(text, api_name="/png_info_to_txt2img")
    (checkpoint, prompt, negative, sampler, scheduler, steps, width, height, cfg, seed, subseed, strength, rw, rh,
     enable_hr, upscaler, hr_steps, denoise, hr_scale, hr_x, hr_y, hr_sampler, hr_scheduler, hr_prompt,
     hr_negative, hr_checkpoint, overrides, styles) = values
    assert prompt == "a red ball <lora:style:0.7>, (shiny:1.2)" and negative == "blurry, text"  # LoRA tag stays
    assert (sampler, scheduler, steps, width, height, cfg, seed) == ("DPM++ 2M", "Karras", 6, 64, 64, 6.5, 1234)
    assert (enable_hr, upscaler, hr_steps, denoise, hr_scale) == (True, "Latent (nearest-exact)", 3, 0.55, 1.5)
    assert hr_checkpoint == "Use same checkpoint"  # the infotext's hires checkpoint is not here
    assert value(overrides) == ["Clip skip: 2"]
    assert checkpoint == {"__type__": "update"}  # "elsewhere" is not here: the current checkpoint stays


def test_send_to_txt2img_then_generate_gives_the_same_pixels(client, manager, tmp_path):
    """The everyday loop: a saved picture → PNG Info → txt2img → Generate → the identical picture."""
    from gradio_client import handle_file

    original = manager.txt2img(small(seed=77, steps=4, sampler_name="Euler a", clip_skip=2, enable_hr=True,
                                     hr_scale=1.5, hr_upscaler="Nearest", denoising_strength=0.5), tmp_path)
    text, _ = client.predict(handle_file(str(original.paths[0])), api_name="/png_info")
    values = client.predict(text, api_name="/png_info_to_txt2img")
    (checkpoint, prompt, negative, sampler, scheduler, steps, width, height, cfg, seed, subseed, strength, rw, rh,
     *hires_values, overrides, styles) = values
    gallery, info = client.predict(checkpoint, prompt, negative, sampler, scheduler, steps, width, height, 1, 1, cfg,
                                   seed, subseed, strength, rw, rh, *hires_values, value(overrides),
                                   api_name="/txt2img")
    again = Image.open(gallery[0]["image"])
    assert np.array_equal(np.asarray(again), np.asarray(original.images[0]))
    assert parse_infotext(info) == parse_infotext(original.infotexts[0])


def test_paste_button_reads_an_infotext_from_the_prompt_box(client):
    values = client.predict(A1111_TEXT, api_name="/paste_prompt")
    assert values[1] == "a red ball <lora:style:0.7>, (shiny:1.2)" and values[5] == 6
    untouched = client.predict("just a prompt", api_name="/paste_prompt")
    assert all(x == {"__type__": "update"} for x in untouched)  # not an infotext: nothing changes


def test_png_info_of_a_picture_without_parameters_or_not_a_picture(client, tmp_path):
    from gradio_client import handle_file

    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert client.predict(handle_file(str(plain)), api_name="/png_info") == (
        "", "<p>This picture carries no generation parameters.</p>")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    text, message = client.predict(handle_file(str(junk)), api_name="/png_info")
    assert text == "" and message.startswith("<p>Cannot read")


@pytest.mark.parametrize("fmt, suffix", [("jpg", ".jpg"), ("webp", ".webp"), ("png", ".png")])
def test_saved_formats_carry_the_infotext_for_us_and_for_sd_parsers(manager, tmp_path, fmt, suffix):
    from sd_parsers import ParserManager

    manager.update_settings(samples_format=fmt)
    processed = manager.txt2img(small(seed=5), tmp_path)
    [path] = processed.paths
    assert path.suffix == suffix and path.name == f"00000-5{suffix}"
    assert read_png_infotext(path) == processed.infotexts[0]
    with Image.open(path) as image:
        info = ParserManager().parse(image)
    assert info.generator.name == "AUTOMATIC1111"
    assert [p.value for p in info.prompts] == ["a cat"] and [p.value for p in info.negative_prompts] == ["ugly"]
    [sampler] = info.samplers
    assert sampler.name == "DPM++ 2M" and sampler.parameters["seed"] == "5" and sampler.parameters["steps"] == "6"


def test_save_txt_writes_the_infotext_beside_each_picture(manager, tmp_path):
    manager.update_settings(save_txt=True, samples_format="jpg")
    processed = manager.txt2img(small(seed=9, n_iter=2), tmp_path)
    for path, text in zip(processed.paths, processed.infotexts):
        assert path.with_suffix(".txt").read_text(encoding="utf-8") == text
    assert not list(tmp_path.rglob("*.tmp"))
    manager.update_settings(save_txt=False)
    [plain] = manager.txt2img(small(seed=10), tmp_path).paths
    assert not plain.with_suffix(".txt").exists()
