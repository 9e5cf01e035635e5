"""Scripts in the UI: the Script dropdown runs X/Y/Z plot from the txt2img tab (as a browser's Generate does,
over gradio's HTTP endpoint), always-on extensions show and work on both tabs, the Extensions tab saves
enable/disable."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import serve_app, small
from webui.scripts import callbacks
from webui.scripts.extensions import load_scripts

REPO_EXTENSIONS = Path(__file__).resolve().parents[1] / "extensions"


@pytest.fixture
def app_with_scripts(manager, data_dir):
    from webui.ui.app import build_app

    callbacks.clear()
    shutil.copytree(REPO_EXTENSIONS / "attention-boost", data_dir / "extensions" / "attention-boost")
    system = load_scripts(data_dir / "extensions")
    called = []
    callbacks.on_before_ui(lambda: called.append("before_ui"))
    callbacks.on_ui_settings(lambda: called.append("ui_settings"))
    demo = build_app(manager, data_dir / "outputs", "tiny.safetensors", system)
    assert called == ["before_ui", "ui_settings"]
    yield system, serve_app(demo, data_dir)
    demo.close()
    callbacks.clear()


def test_xyz_plot_from_the_txt2img_tab(app_with_scripts, manager):
    from gradio_client import Client

    system, url = app_with_scripts
    client = Client(url, verbose=False)
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/txt2img"]
    names = [p["label"] for p in info["parameters"]]
    assert "Script" in names and "X type" in names and "Enable" in names
    kwargs = {}
    firsts = {}
    for param in info["parameters"]:
        firsts.setdefault(param["label"], param["parameter_name"])
    kwargs[firsts["Script"]] = "X/Y/Z plot"
    kwargs[firsts["X type"]] = "Steps"
    kwargs[firsts["X values"]] = "1-2"  # the text box; the dropdown of the same label comes after it
    positional = ["tiny.safetensors", "a cat", "ugly", "Euler", "Automatic", 2, 64, 64, 1, 1, 7, 77]
    for value, param in zip(positional, info["parameters"]):
        kwargs[param["parameter_name"]] = value
    missing = [p for p in info["parameters"] if not p["parameter_has_default"] and p["parameter_name"] not in kwargs]
    assert {p["label"] for p in missing} <= {"Control image (brush: mask)"}, "only pictures have no default"
    kwargs.update({p["parameter_name"]: None for p in missing})
    gallery, text = client.predict(**kwargs, api_name="/txt2img")
    assert len(gallery) == 1, "the grid alone (sub images off)"
    grid = Image.open(gallery[0]["image"])
    assert grid.width == 2 * 64 and grid.height > 64, "two cells, a legend row above (no Y labels: no left margin)"
    assert "Script: X/Y/Z plot, X Type: Steps, X Values: 1-2" in text
    one = manager.txt2img(small(steps=1, seed=77, sampler_name="Euler", cfg_scale=7.0, prompt="a cat",
                                negative_prompt="ugly"), None)
    cells = np.asarray(grid.convert("RGB"))[-64:, -128:-64]
    assert np.array_equal(cells, np.asarray(one.images[0]))


def test_extensions_tab_saves_disabled_extensions(app_with_scripts, manager, data_dir):
    from gradio_client import Client

    _, url = app_with_scripts
    manager.settings_path = data_dir / "config.json"  # as the launched UI's manager: every change saved
    status = Client(url, verbose=False).predict([], api_name="/extensions_apply")
    assert "1 disabled" in status
    assert manager.settings.disabled_extensions == ["attention-boost"]
    assert json.loads((data_dir / "config.json").read_text())["disabled_extensions"] == ["attention-boost"]
    system = load_scripts(data_dir / "extensions", set(manager.settings.disabled_extensions))
    assert [s.display_title for s in system.txt2img.alwayson] == ["ControlNet"]  # the built-in one stays


def test_pasting_an_infotext_restores_controlnet_units(app_with_scripts):
    """↙ / PNG Info: a `ControlNet 0` entry fills unit 0's controls (all but the picture) and enables it; the units
    it does not name are disabled; the model stays as it is when no such file is here."""
    from gradio_client import Client

    _, url = app_with_scripts
    client = Client(url, verbose=False)
    text = ('a cat\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64, ControlNet 0: "Module: canny, '
            'Model: elsewhere [0123abcd], Weight: 0.8, Resize Mode: Just Resize, Processor Res: 256, Threshold A: 50.0, '
            'Threshold B: 120.0, Guidance Start: 0.1, Guidance End: 0.9, Pixel Perfect: True, Control Mode: '
            'ControlNet is more important"')
    values = client.predict(text, api_name="/paste_prompt")
    start = values.index("canny") - 1
    keep = {"__type__": "update"}
    assert list(values[start:start + 14]) == [True, "canny", keep, 0.8, "Just Resize", 256, 50.0, 120.0, 0.1, 0.9,
                                              True, "ControlNet is more important", keep, keep]
    assert values[start + 14] is False and values[start + 28] is False  # units 1 and 2: not in the infotext


def test_controlnet_infotext_parses_back_to_the_unit():
    from webui.engine.control import residuals
    from webui.engine.control.units import ControlUnit

    unit = ControlUnit(module="canny", weight=0.75, resize_mode="Resize and Fill", processor_res=384,
                       guidance_start=0.2, pixel_perfect=True, control_mode="My prompt is more important").checked()
    key, value = residuals.infotext(0, residuals.PreparedUnit(unit, None, "my, model [12345678]", None))
    assert key == "ControlNet 0"
    assert residuals.parse_infotext(value) == {
        "module": "canny", "model": "my, model [12345678]", "weight": 0.75, "resize_mode": "Resize and Fill",
        "processor_res": 384, "threshold_a": 100.0, "threshold_b": 200.0, "guidance_start": 0.2,
        "guidance_end": 1.0, "pixel_perfect": True, "control_mode": "My prompt is more important"}
