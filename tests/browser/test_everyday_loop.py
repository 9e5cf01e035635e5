"""The everyday loop in a real browser: type a prompt and Generate; hires fix on gives the larger picture; that PNG
dropped on PNG Info and sent to txt2img regenerates identical pixels; live previews show while a job samples."""
import time

import numpy as np
from PIL import Image


def set_number(page, label: str, value) -> None:
    field = page.get_by_label(f"number input for {label}").first
    field.fill(str(value))
    field.press("Enter")


def prepare_small_job(page, prompt: str, steps: int = 4, seed: int = 11) -> None:
    page.locator("#txt2img_prompt textarea").fill(prompt)
    set_number(page, "Width", 64)
    set_number(page, "Height", 64)
    set_number(page, "Sampling steps", steps)
    seed_box = page.get_by_label("Seed", exact=True).first
    seed_box.fill(str(seed))
    seed_box.press("Enter")


def generate_and_wait(page, count_before: int, outputs) -> tuple[str, Image.Image]:
    """Press Generate; wait for the generation info; return it and the newest saved picture."""
    page.click("#txt2img_generate")
    deadline = time.time() + 120
    while time.time() < deadline:
        saved = sorted(outputs.rglob("*.png"))
        info = page.locator("#txt2img_info textarea").input_value()
        if len(saved) > count_before and "Steps:" in info and page.locator("#txt2img_gallery img").count():
            return info, Image.open(saved[-1])
        time.sleep(0.2)
    raise AssertionError("no picture appeared")


def test_type_generate_see_the_picture_and_its_infotext(page, data_dir):
    outputs = data_dir / "outputs" / "txt2img-images"
    prepare_small_job(page, "a red ball in the browser")
    info, saved = generate_and_wait(page, 0, outputs)
    assert info.startswith("a red ball in the browser\nSteps: 4, Sampler: DPM++ 2M")
    assert "Seed: 11, Size: 64x64" in info
    shown = page.locator("#txt2img_gallery img").first
    assert shown.evaluate("img => img.naturalWidth") == 64
    assert saved.info["parameters"] == info


def test_hires_fix_on_gives_the_larger_picture(page, data_dir):
    outputs = data_dir / "outputs" / "txt2img-images"
    prepare_small_job(page, "a hires ball")
    page.locator("#txt2img_hires").get_by_text("Hires. fix").first.click()
    page.locator("#txt2img_enable_hr input[type=checkbox]").check()
    info, saved = generate_and_wait(page, 0, outputs)
    assert saved.size == (128, 128) and "Hires upscale: 2" in info and "Size: 64x64" in info
    assert page.locator("#txt2img_gallery img").first.evaluate("img => img.naturalWidth") == 128


def test_png_info_send_to_txt2img_regenerates_identical_pixels(page, data_dir):
    outputs = data_dir / "outputs" / "txt2img-images"
    prepare_small_job(page, "a ball to paste back", seed=23)
    page.locator("#txt2img_hires").get_by_text("Hires. fix").first.click()
    page.locator("#txt2img_enable_hr input[type=checkbox]").check()
    first_info, first = generate_and_wait(page, 0, outputs)
    first_path = sorted(outputs.rglob("*.png"))[-1]
    page.reload()  # a fresh page: every field back at its default
    page.wait_for_selector("#txt2img_generate")
    page.get_by_role("tab", name="PNG Info").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(first_path))
    page.wait_for_function("() => document.querySelector('#pnginfo_parameters textarea').value.includes('Steps:')")
    assert page.locator("#pnginfo_parameters textarea").input_value() == first_info
    page.click("#pnginfo_send_txt2img")
    page.wait_for_function(
        "() => document.querySelector('#txt2img_prompt textarea').value === 'a ball to paste back'")
    info, again = generate_and_wait(page, 1, outputs)
    assert info == first_info
    assert np.array_equal(np.asarray(again), np.asarray(first))


def test_live_previews_show_while_the_job_samples(page, data_dir, monkeypatch, manager, slow_steps):
    from webui.ui import live

    monkeypatch.setattr(live, "POLL_SECONDS", 0.05)
    slow_steps(0.15)
    manager.update_settings(show_progress_every_n_steps=2)
    prepare_small_job(page, "a slowly drawn ball", steps=16)
    page.click("#txt2img_generate")
    # a picture is in the gallery before the job has saved anything: the preview
    page.wait_for_selector("#txt2img_gallery img", timeout=60_000)
    assert not list((data_dir / "outputs" / "txt2img-images").rglob("*.png"))
    page.wait_for_function("() => document.querySelector('#txt2img_info textarea').value.includes('Steps: 16')")


def test_the_status_line_follows_the_model_a_job_loads(page, data_dir):
    page.get_by_role("button", name="Unload", exact=True).click()
    page.wait_for_function("() => document.querySelector('#model_status').innerText.includes('No model loaded')")
    prepare_small_job(page, "a ball after unloading")
    generate_and_wait(page, 0, data_dir / "outputs" / "txt2img-images")
    page.wait_for_function("() => document.querySelector('#model_status').innerText.includes('Active: tiny')",
                           timeout=10_000)


def test_inpaint_with_a_mask_drawn_with_the_mouse(page, data_dir, tmp_path):
    """Upload a picture to the Inpaint editor, paint a stroke with the brush, Generate: the picture changes under
    the stroke and stays the same far from it (composited onto the original)."""
    source = tmp_path / "flat.png"
    Image.new("RGB", (512, 512), (30, 120, 200)).save(source)  # large: the brush covers a narrow band of it
    page.get_by_role("tab", name="img2img").click()
    page.get_by_role("tab", name="Inpaint", exact=True).click()
    editor = page.locator("#img2img_inpaint")
    with page.expect_file_chooser() as chooser:  # the editor's own Upload tool, as a person clicks it
        editor.get_by_role("button", name="Upload", exact=True).click()
    chooser.value.set_files(str(source))
    canvas = editor.locator("canvas").last
    page.wait_for_timeout(2000)  # the editor draws the uploaded background
    editor.get_by_role("button", name="Brush", exact=True).click()
    box = canvas.bounding_box()
    left, top, width, height = box["x"], box["y"], box["width"], box["height"]
    # a vertical stroke down the middle of the picture
    page.mouse.move(left + width * 0.5, top + height * 0.2)
    page.mouse.down()
    for i in range(1, 21):
        page.mouse.move(left + width * 0.5, top + height * (0.2 + 0.03 * i))
    page.mouse.up()
    page.locator("#img2img_prompt textarea").fill("a painted stroke")
    for label, value in (("Width", 64), ("Height", 64), ("Sampling steps", 4)):
        field = page.get_by_label(f"number input for {label}").nth(1)  # the img2img tab's (txt2img's come first)
        field.fill(str(value))
        field.press("Enter")
    page.click("#img2img_generate")
    outputs = data_dir / "outputs" / "img2img-images"
    deadline = time.time() + 120
    while not list(outputs.rglob("*.png")) and time.time() < deadline:
        time.sleep(0.2)
    [saved] = list(outputs.rglob("*.png"))
    result = np.asarray(Image.open(saved).convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(source).resize((64, 64), Image.Resampling.LANCZOS), dtype=np.int16)
    diff = np.abs(result - original).sum(axis=-1)
    assert diff[:, 28:36].mean() > 10  # repainted under the stroke
    assert diff[:, :8].max() == 0 and diff[:, -8:].max() == 0  # untouched far from it
    assert "Mask blur: 4" in Image.open(saved).info["parameters"]
