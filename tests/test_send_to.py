"""Send to img2img / inpaint: a txt2img result's image and parameters land in the img2img tab."""

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from webui.ui.send_to import fields_from_infotext, open_result


@pytest.fixture
def client(served):
    return Client(served, verbose=False)


def test_fields_from_infotext():
    text = ("a cat <lora:x:1>\nNegative prompt: ugly\nSteps: 12, Sampler: Euler a, Schedule type: Automatic, "
            "CFG scale: 5.5, Seed: 77, Size: 64x96, Model: tiny, Version: gouache-0.1.0")
    assert fields_from_infotext(text) == dict(
        prompt="a cat <lora:x:1>", negative_prompt="ugly", sampler_name="Euler a", scheduler="Automatic",
        steps=12, cfg_scale=5.5, seed=77, width=64, height=96)


def test_open_result_only_from_outputs(tmp_path):
    outdir = tmp_path / "outputs"
    outdir.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(outdir / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    assert open_result(str(outdir / "a.png"), outdir).getpixel((0, 0)) == (1, 2, 3)
    from webui.engine.errors import UserError
    with pytest.raises(UserError, match="not a generated image"):
        open_result(str(tmp_path / "secret.png"), outdir)
    with pytest.raises(UserError, match="generate an image first"):
        open_result("", outdir)


@pytest.mark.parametrize("kind", ["img2img", "inpaint"])
def test_send_txt2img_result_to_img2img(client, data_dir, kind):
    gallery, info = client.predict(
        checkpoint="tiny.safetensors", prompt="a red ball", negative_prompt="dull", sampler_name="Euler a",
        scheduler="Automatic", steps=3, width=64, height=64, n_iter=1, batch_size=1, cfg_scale=6, seed=42,
        api_name="/txt2img")
    path = gallery[0]["image"]
    saved = sorted((data_dir / "outputs" / "txt2img-images").rglob("*.png"))[-1]
    out = client.predict(str(saved), info, api_name=f"/send_to_{kind}")
    # [top tabs, sub-tabs, mode, prompt, negative, sampler, scheduler, steps, cfg, seed, width, height, image]
    mode, prompt, negative, sampler, scheduler, steps, cfg, seed, width, height, image = out[-11:]
    assert mode == ("img2img" if kind == "img2img" else "Inpaint")
    assert (prompt, negative, sampler, scheduler, steps, cfg, seed, width, height) == (
        "a red ball", "dull", "Euler a", "Automatic", 3, 6, 42, 64, 64)
    sent = image if isinstance(image, str) else (image.get("background") or image.get("composite"))
    assert np.array_equal(np.asarray(Image.open(sent).convert("RGB")), np.asarray(Image.open(path).convert("RGB")))
