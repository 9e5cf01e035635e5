"""ControlNet through the built-in extension: A1111's client (webuiapi's ControlNetUnit) against the API, the
/controlnet/* routes, and the UI's unit controls, with the extension's argument shapes."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from conftest import small
from test_controlnet import controlnets, hint  # noqa: F401  (the tiny ControlNet files fixture)
from webui.scripts import callbacks
from webui.scripts.extensions import load_scripts
from webui.scripts.jobs import run_job


@pytest.fixture
def system(manager):
    callbacks.clear()
    system = load_scripts(None)
    system.connect(manager)
    yield system
    callbacks.clear()


def b64(picture) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_webuiapi_controlnet_unit_and_the_routes(manager, data_dir, controlnets, system):  # noqa: F811
    import requests
    import webuiapi

    from api.conftest import LiveServer
    from webui.api.routes import ApiConfig
    from webui.api.server import standalone_app

    app = standalone_app(manager, ApiConfig(data_dir / "outputs", scripts=system))
    callbacks.run("app_started", None, app)
    with LiveServer(app) as server:
        client = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
        models = requests.get(f"{server.url}/controlnet/model_list", timeout=30).json()["model_list"]
        assert [m.split(" [")[0] for m in models] == ["cn-diff", "cn-diffusers", "cn-ldm", "cn-prefixed",
                                                    "cn-zero"]
        unit = webuiapi.ControlNetUnit(image=hint(), module="none", model="cn-diffusers", weight=1.0)
        result = client.txt2img(prompt="a cat", negative_prompt="ugly", steps=3, seed=5, width=64, height=64,
                                sampler_name="Euler", cfg_scale=7, controlnet_units=[unit],
                                alwayson_scripts={})  # webuiapi's default dict is shared between calls
        assert 'ControlNet 0: "Module: none, Model: cn-diffusers [' in result.info["infotexts"][0]
        # the extension's results: the detected map after the picture, without parameters
        assert len(result.images) == 2 and len(result.info["infotexts"]) == 1
        assert np.array_equal(np.asarray(result.images[1].convert("RGB")), np.asarray(hint()))
        plain = client.txt2img(prompt="a cat", negative_prompt="ugly", steps=3, seed=5, width=64, height=64,
                               sampler_name="Euler", cfg_scale=7, alwayson_scripts={})
        assert not np.array_equal(np.asarray(result.image.convert("RGB")), np.asarray(plain.image.convert("RGB")))
        single = manager.txt2img(small(steps=3, seed=5, sampler_name="Euler"), None)
        assert np.array_equal(np.asarray(plain.image.convert("RGB")), np.asarray(single.images[0]))
        detect = requests.post(f"{server.url}/controlnet/detect", timeout=60, json={
            "controlnet_module": "canny", "controlnet_input_images": [b64(hint())],
            "controlnet_processor_res": 64}).json()
        detected = np.asarray(Image.open(io.BytesIO(base64.b64decode(detect["images"][0]))).convert("RGB"))
        from webui.engine.control import preprocess
        assert np.array_equal(detected, np.asarray(preprocess.run("canny", hint(), 64)))
        assert detected.max() == 255 and detected.min() == 0  # the rectangle's edges
        assert requests.get(f"{server.url}/controlnet/version", timeout=30).json() == {"version": 2}
        bad = requests.post(f"{server.url}/sdapi/v1/txt2img", timeout=60, json={
            "prompt": "x", "steps": 2, "width": 64, "height": 64,
            "alwayson_scripts": {"ControlNet": {"args": [{"image": b64(hint()), "model": "missing"}]}}})
        assert bad.status_code == 400 and "ControlNet model 'missing' not found" in bad.text


def test_ui_values_drive_the_same_units(manager, controlnets, system):  # noqa: F811
    from webui.engine.control.units import ControlUnit
    runner = system.txt2img
    script = runner.find_alwayson("ControlNet")
    module = __import__("sys").modules[type(script).__module__]
    fields = dict(enabled=True, image=hint(), module="none", model="cn-ldm", weight=1.0, resize_mode="Crop and Resize",
                  processor_res=512, threshold_a=-1, threshold_b=-1, guidance_start=0.0, guidance_end=1.0,
                  pixel_perfect=False, control_mode="Balanced", hr_option="Both", cfg_resolution_weighting=False)
    args = runner.build_args(None, None, {"ControlNet": {"args": [fields[k] for k in module.UNIT_FIELDS]}})
    from_ui = run_job(system, manager, small(steps=3, seed=5, sampler_name="Euler"), None, args=args)
    args = runner.build_args(None, None, {"ControlNet": {"args": [{**fields, "model": "cn-diffusers"}]}})
    from_api = run_job(system, manager, small(steps=3, seed=5, sampler_name="Euler"), None, args=args)
    assert np.array_equal(np.asarray(from_ui.images[0]), np.asarray(from_api.images[0]))
    assert len(from_api.images) == 2 and np.array_equal(np.asarray(from_api.images[1]), np.asarray(hint()))
    manager.update_settings(control_net_no_detectmap=True)
    alone = run_job(system, manager, small(steps=3, seed=5, sampler_name="Euler"), None, args=args)
    assert len(alone.images) == 1
    assert ControlUnit(**{**fields, "image": None}).checked().enabled


def test_the_unit_canvas_gives_the_picture_and_the_brushed_mask(system):
    """The unit's ImageEditor: the upload is the picture (an opaque alpha dropped, real transparency kept), brush
    strokes are the mask (white where drawn); no strokes → no mask; the CFG weighting checkbox reaches the unit."""
    from PIL import Image

    script = system.txt2img.find_alwayson("ControlNet")
    module = __import__("sys").modules[type(script).__module__]
    picture = Image.new("RGBA", (64, 64), (200, 10, 10, 255))
    stroke = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    stroke.paste((255, 255, 255, 255), (0, 0, 16, 64))
    shown, mask = module.editor_picture({"background": picture, "layers": [stroke], "composite": None})
    assert shown.mode == "RGB" and shown.getpixel((5, 5)) == (200, 10, 10)
    assert mask.getpixel((5, 5)) == 255 and mask.getpixel((40, 5)) == 0
    clear = picture.copy()
    clear.putpixel((1, 1), (0, 0, 0, 0))
    shown, mask = module.editor_picture({"background": clear, "layers": [], "composite": None})
    assert shown.mode == "RGBA" and mask is None
    values = dict(enabled=True, image={"background": picture, "layers": [stroke], "composite": None},
                  module="inpaint", model="None", weight=1.0, resize_mode="Crop and Resize", processor_res=512,
                  threshold_a=-1, threshold_b=-1, guidance_start=0.0, guidance_end=1.0, pixel_perfect=False,
                  control_mode="Balanced", hr_option="Both", cfg_resolution_weighting=True)
    (unit,) = module.units_from_args([values[k] for k in module.UNIT_FIELDS])
    assert unit.cfg_resolution_weighting and unit.mask.getpixel((5, 5)) == 255
    assert module._preview({"background": picture, "layers": [], "composite": None}, "invert", 64, -1, -1).size == (64, 64)
