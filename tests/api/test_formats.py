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
