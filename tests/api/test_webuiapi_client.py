"""A1111's own Python client (PyPI `webuiapi`) against a live server on the tiny model: what programs built on it
see. The pictures are checked against the CLI's for the same request, and against the request's own infotext."""
import io
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from webui.engine.infotext import parse_infotext

SMALL = dict(prompt="a red circle", negative_prompt="blurry", width=64, height=64, steps=5, seed=42,
             sampler_name="DPM++ 2M", cfg_scale=6.5)


def px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def png_parameters(image) -> str:
    """What a reader of the saved file gets: the PNG's `parameters` chunk, re-read from the encoded bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=None)
    return image.info.get("parameters") or image.text.get("parameters")


def cli_picture(data_dir, tmp_path, *flags) -> np.ndarray:
    from webui.cli import main

    outdir = tmp_path / "cli-out"
    assert main(["txt2img", "--data-dir", str(data_dir), "--outdir", str(outdir), *flags]) == 0
    [path] = list(outdir.rglob("*.png"))
    with Image.open(path) as saved:
        return px(saved), saved.info["parameters"]


def test_txt2img_images_carry_infotext_and_equal_the_cli_picture(webui, data_dir, tmp_path):
    result = webui.txt2img(**SMALL)
    [image] = result.images
    assert image.size == (64, 64)
    infotext = png_parameters(image)
    assert infotext == result.info["infotexts"][0]
    assert "Steps: 5, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 42, Size: 64x64" in infotext
    assert result.info["all_seeds"] == [42] and result.info["sd_model_name"] == "tiny"
    assert result.parameters["prompt"] == "a red circle" and result.parameters["steps"] == 5

    cli, cli_infotext = cli_picture(data_dir, tmp_path, "--prompt", "a red circle", "--negative-prompt", "blurry",
                                    "--width", "64", "--height", "64", "--steps", "5", "--seed", "42",
                                    "--sampler", "DPM++ 2M", "--cfg-scale", "6.5")
    assert np.array_equal(px(image), cli)
    assert parse_infotext(cli_infotext) == parse_infotext(infotext)


def test_api_defaults_are_a1111s(api):
    """steps 50 and sampler Euler when the request says nothing (A1111's API, not its UI)."""
    import requests

    info = requests.post(f"{api}/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "seed": 1},
                         timeout=120).json()["info"]
    text = __import__("json").loads(info)["infotexts"][0]
    assert "Steps: 50, Sampler: Euler, Schedule type: Automatic" in text


def test_old_combined_sampler_name_is_split(webui):
    result = webui.txt2img(**{**SMALL, "sampler_name": "DPM++ 2M SDE Karras", "steps": 3})
    assert "Sampler: DPM++ 2M SDE, Schedule type: Karras" in result.info["infotexts"][0]


def test_img2img_with_mask_changes_only_the_masked_area(webui):
    init = Image.new("RGB", (64, 64), (30, 120, 200))
    ImageDraw.Draw(init).rectangle([0, 0, 20, 63], fill=(250, 250, 20))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle([40, 16, 63, 47], fill=255)
    result = webui.img2img(images=[init], mask_image=mask, prompt="a cat", steps=4, seed=7, width=64, height=64,
                           denoising_strength=0.9, mask_blur=0, inpainting_fill=1, inpaint_full_res=False,
                           include_init_images=True)
    out, original = px(result.images[0]), px(init)
    masked = np.asarray(mask) > 0
    assert np.abs(out - original)[~masked].max() == 0  # composited: untouched outside the mask
    assert np.abs(out - original)[masked].mean() > 5  # and repainted inside it
    text = png_parameters(result.images[0])
    assert "Denoising strength: 0.9" in text and "Masked content: original" not in text  # 1 is the default
    assert len(result.images) == 3  # include_init_images: the init image and the mask come back too
    assert np.array_equal(px(result.images[1]), original)


def test_img2img_api_inpaint_defaults_are_a1111s(webui):
    """A1111's API inpaints "Only masked" with "fill" and no padding unless told otherwise."""
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle([16, 16, 47, 47], fill=255)
    result = webui.img2img(images=[init], mask_image=mask, prompt="a dog", steps=3, seed=3, width=64, height=64)
    text = result.info["infotexts"][0]
    assert "Masked content: fill" in text and "Inpaint area: Only masked" in text
    assert "Masked area padding: 0" in text and "Mask blur: 4" in text


def test_png_info_reads_the_parameters_back(webui):
    image = webui.txt2img(**SMALL).image
    info = webui.png_info(image)
    assert info.info == png_parameters(image)
    params = info.json["parameters"]
    assert params["Prompt"] == "a red circle" and params["Negative prompt"] == "blurry"
    assert (params["Steps"], params["Seed"], params["Size-1"], params["Size-2"]) == ("5", "42", "64", "64")


def test_png_info_of_a_picture_without_parameters(api):
    import base64

    import requests

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    reply = requests.post(f"{api}/sdapi/v1/png-info", json={"image": base64.b64encode(buffer.getvalue()).decode()},
                          timeout=30)
    assert reply.status_code == 200 and reply.json() == {"info": "", "items": {}, "parameters": {}}


@pytest.fixture
def two_checkpoints(data_dir, tiny_files):
    shutil.copy(tiny_files["other"], data_dir / "models" / "Stable-diffusion" / "other.safetensors")


def test_options_switch_checkpoint_by_name_and_by_title(webui, manager, two_checkpoints):
    assert webui.util_get_current_model().startswith("tiny.safetensors [")
    titles = webui.util_get_model_names()
    assert titles == sorted(m["title"] for m in webui.get_sd_models())
    webui.set_options({"sd_model_checkpoint": "other.safetensors"})
    assert webui.util_get_current_model() == manager.current.title and manager.current.info.name == "other.safetensors"
    other = webui.txt2img(**SMALL).info
    assert other["sd_model_name"] == "other"
    tiny_title = next(t for t in webui.util_get_model_names() if t.startswith("tiny"))
    webui.set_options({"sd_model_checkpoint": tiny_title})
    assert webui.util_get_current_model() == tiny_title
    assert webui.txt2img(**SMALL).info["sd_model_name"] == "tiny"


def test_lists_samplers_schedulers_models_loras(webui, data_dir, manager):
    from test_lora_generation import kohya_lora, write

    write(data_dir / "models" / "Lora", "style", kohya_lora(manager.current, seed=1),
          metadata={"ss_output_name": "my style"})
    samplers = webui.get_samplers()
    assert samplers[0] == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}}
    assert "Euler a" in [s["name"] for s in samplers]
    schedulers = {s["name"]: s for s in webui.get_schedulers()}
    assert schedulers["karras"] == {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0,
                                    "need_inner_model": False}
    [model] = webui.get_sd_models()
    assert (model["model_name"], model["filename"]) == ("tiny", str(data_dir / "models" / "Stable-diffusion" /
                                                                      "tiny.safetensors"))
    assert model["sha256"].startswith(model["hash"]) and model["title"] == f"tiny.safetensors [{model['hash']}]"
    [lora] = webui.get_loras()
    assert (lora["name"], lora["alias"]) == ("style", "my style")
    assert lora["metadata"]["ss_output_name"] == "my style"


# ------------------------------------------------------------------------------------- progress, interrupt, skip


def _in_background(fn, **kwargs):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", fn(**kwargs)))
    thread.start()
    return thread, out


def _wait_for(webui, condition, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        progress = webui.get_progress()
        if condition(progress):
            return progress
        time.sleep(0.02)
    raise AssertionError("condition not reached; last progress: " + str(progress))


def test_progress_during_a_running_job_then_idle(webui, slow_steps):
    thread, out = _in_background(webui.txt2img, **{**SMALL, "steps": 10, "n_iter": 2})
    seen = _wait_for(webui, lambda p: p["state"]["job_no"] == 1 and p["state"]["sampling_step"] >= 3)
    assert seen["state"]["job_count"] == 2 and seen["state"]["sampling_steps"] == 10
    assert 0.5 < seen["progress"] < 1 and seen["eta_relative"] > 0
    preview = Image.open(io.BytesIO(__import__("base64").b64decode(seen["current_image"])))
    assert preview.size == (8, 8)  # the cheap latent preview, one pixel per latent cell
    thread.join(60)
    assert len(out["result"].images) == 2
    idle = webui.get_progress()
    assert (idle["progress"], idle["state"]["job_count"], idle["current_image"]) == (0, 0, None)


def test_interrupt_keeps_finished_images(webui, slow_steps):
    thread, out = _in_background(webui.txt2img, **{**SMALL, "steps": 10, "n_iter": 3})
    _wait_for(webui, lambda p: p["state"]["job_no"] == 1 and p["state"]["sampling_step"] >= 2)
    webui.interrupt()
    thread.join(60)
    result = out["result"]
    assert len(result.images) == 1 and result.info["all_seeds"] == [42] and result.info["interrupted"]
    assert webui.txt2img(**SMALL).info["interrupted"] is False  # the next job is not interrupted


def test_skip_drops_the_current_batch_only(webui, slow_steps):
    thread, out = _in_background(webui.txt2img, **{**SMALL, "steps": 10, "n_iter": 3})
    _wait_for(webui, lambda p: p["state"]["job_no"] == 0 and p["state"]["sampling_step"] >= 2)
    webui.skip()
    thread.join(60)
    result = out["result"]
    assert result.info["all_seeds"] == [43, 44] and not result.info["interrupted"]
    alone = webui.txt2img(**{**SMALL, "steps": 10, "seed": 43})
    assert np.array_equal(px(result.images[0]), px(alone.image))


def test_hires_fix_through_the_api_equals_the_cli(webui, data_dir, tmp_path):
    result = webui.txt2img(**{**SMALL, "steps": 4}, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent (bicubic)",
                           denoising_strength=0.55, hr_second_pass_steps=3)
    image = result.image
    assert image.size == (96, 96)
    text = png_parameters(image)
    assert "Size: 64x64" in text and "Denoising strength: 0.55" in text
    assert "Hires upscale: 1.5, Hires steps: 3, Hires upscaler: Latent (bicubic)" in text
    cli, cli_text = cli_picture(data_dir, tmp_path, "--prompt", "a red circle", "--negative-prompt", "blurry",
                                "--width", "64", "--height", "64", "--steps", "4", "--seed", "42", "--sampler",
                                "DPM++ 2M", "--cfg-scale", "6.5", "--enable-hr", "--hr-scale", "1.5",
                                "--hr-upscaler", "Latent (bicubic)", "--denoising-strength", "0.55",
                                "--hr-second-pass-steps", "3")
    assert np.array_equal(px(image), cli) and parse_infotext(cli_text) == parse_infotext(text)
    # webuiapi sends every hires field even with hires off: nothing of it may show
    plain = webui.txt2img(**SMALL).info["infotexts"][0]
    assert "Hires" not in plain and "Denoising strength" not in plain
