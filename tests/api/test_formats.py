"""The API's pictures follow the samples_format setting and carry their infotext there."""
import base64
import io

import requests
from PIL import Image


def test_api_images_follow_samples_format(api, manager):
    manager.update_settings(samples_format="webp")
    reply = requests.post(f"{api}/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 2,
                                                           "seed": 3}, timeout=120).json()
    image = Image.open(io.BytesIO(base64.b64decode(reply["images"][0])))
    assert image.format == "WEBP"
    info = requests.post(f"{api}/sdapi/v1/png-info", json={"image": reply["images"][0]}, timeout=30).json()
    assert "Seed: 3" in info["info"] and info["parameters"]["Seed"] == "3"


def _png(text=None, size=(40, 24)) -> str:
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    if text:
        meta.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode()


def test_extra_single_image_with_webuiapi(webui):
    source = Image.open(io.BytesIO(base64.b64decode(_png("a dog\nSteps: 3, Sampler: Euler, Seed: 9, Size: 40x24"))))
    result = webui.extra_single_image(source, upscaler_1="Lanczos", upscaling_resize=2)
    assert result.image.size == (80, 48)
    assert result.image.info["parameters"].startswith("a dog\nSteps: 3")
    assert result.image.info["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    assert "Postprocess upscaler: Lanczos" in result.info


def test_extra_batch_images(api):
    body = {"upscaler_1": "Nearest", "resize_mode": 1, "upscaling_resize_w": 64, "upscaling_resize_h": 64,
            "imageList": [{"data": _png(), "name": "a.png"}, {"data": "data:image/png;base64," + _png(size=(8, 8)),
                                                                "name": "b.png"}]}
    reply = requests.post(f"{api}/sdapi/v1/extra-batch-images", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    sizes = [Image.open(io.BytesIO(base64.b64decode(x))).size for x in reply.json()["images"]]
    assert sizes == [(64, 64), (64, 64)]


def test_extras_mistakes(api):
    for body, status, detail in (
            ({"image": _png(), "upscaler_1": "R-ESRGAN 4x+"}, 400, "could not find upscaler named 'R-ESRGAN 4x+'"),
            ({"image": _png(), "upscaler_1": "Lanczos", "gfpgan_visibility": 0.5}, 501, "face restoration"),
            ({"image": "", "upscaler_1": "Lanczos"}, 400, "Extras image is empty"),
            ({"image": _png(), "upscaler_1": "Lanczos", "upscaling_resize": 50}, 422,
             "upscale factor must be between 1.0 and 8.0")):
        reply = requests.post(f"{api}/sdapi/v1/extra-single-image", json=body, timeout=60)
        assert reply.status_code == status and reply.json()["detail"].startswith(detail), reply.text


def test_request_styles_are_applied(api, data_dir):
    import json

    (data_dir / "styles.csv").write_text('name,prompt,negative_prompt\nSharp,"sharp focus, 8k",blurry\n')
    reply = requests.post(f"{api}/sdapi/v1/txt2img", json={"prompt": "a cat", "styles": ["Sharp"], "width": 64,
                                                           "height": 64, "steps": 2}, timeout=120).json()
    assert json.loads(reply["info"])["infotexts"][0].startswith("a cat, sharp focus, 8k\nNegative prompt: blurry\n")
    assert reply["parameters"]["styles"] == ["Sharp"]


def test_unload_reload_and_refresh_routes(api, manager, data_dir):
    assert requests.post(f"{api}/sdapi/v1/unload-checkpoint", timeout=30).json() is None
    assert manager.current is None
    assert requests.post(f"{api}/sdapi/v1/reload-checkpoint", timeout=60).json() is None
    assert manager.current.info.name == "tiny.safetensors"
    for name in ("refresh-checkpoints", "refresh-vae", "refresh-embeddings", "refresh-loras"):
        assert requests.post(f"{api}/sdapi/v1/{name}", timeout=30).status_code == 200, name
