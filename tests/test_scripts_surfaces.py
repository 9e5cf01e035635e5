"""Scripts through every surface: the HTTP API (script_name / script_args as A1111's client sends them), the
CLI (--script, --script-args), img2img, and the callbacks for loaded models and pasted infotext."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import small
from webui.scripts import callbacks
from webui.scripts.extensions import load_scripts
from webui.scripts.jobs import run_job

# A1111 1.10's X/Y/Z script_args: x type (an index into the tab's axis list), values, dropdown values, y…, z…,
# draw legend, include sub images, include sub grids, keep -1 for seeds, vary seeds x/y/z, margin, csv mode
STEPS, CFG = 4, 6


def xyz(x_type, x_values, y_type=0, y_values="", include_lone_images=False):
    return [x_type, x_values, [], y_type, y_values, [], 0, "", [], True, include_lone_images, False, False,
            False, False, False, 0, False]


@pytest.fixture
def system():
    callbacks.clear()
    yield load_scripts(None)
    callbacks.clear()


def test_xyz_through_a1111_s_client(manager, data_dir, system):
    import webuiapi

    from api.conftest import start_api

    with start_api(manager, data_dir, scripts=system) as server:
        client = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
        result = client.txt2img(prompt="a cat", negative_prompt="ugly", steps=2, width=64, height=64, seed=9,
                                sampler_name="Euler", cfg_scale=7, script_name="X/Y/Z plot",
                                script_args=xyz(STEPS, "1, 2", CFG, "3, 9", include_lone_images=True))
        assert len(result.images) == 5 and result.info["index_of_first_image"] == 1
        grid = result.images[0]
        assert grid.width > 2 * 64 and grid.height > 2 * 64
        cells = result.images[1:]
        for image, (steps, cfg) in zip(cells, [(1, 3.0), (2, 3.0), (1, 9.0), (2, 9.0)]):
            single = manager.txt2img(small(steps=steps, cfg_scale=cfg, seed=9, sampler_name="Euler"), None)
            assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(single.images[0]))
        assert "Script: X/Y/Z plot" in result.info["infotexts"][0]
        import requests
        bad = requests.post(f"{server.url}/sdapi/v1/txt2img", timeout=60,
                            json={"prompt": "x", "steps": 2, "width": 64, "height": 64, "script_name": "X/Y/Z plot",
                                  "script_args": xyz(STEPS, "1, zz")})
        assert bad.status_code == 400 and "'zz' is not a whole number" in bad.text  # a user mistake, as others


def test_cli_script_and_args(data_dir, capsys):
    from webui.cli import main

    code = main(["txt2img", "--data-dir", str(data_dir), "--prompt", "a cat", "--steps", "2", "--width", "64",
                 "--height", "64", "--seed", "4", "--sampler", "Euler", "--script", "X/Y/Z plot",
                 "--script-args", json.dumps(xyz("Steps", "1-2"))])
    out = capsys.readouterr().out.split()
    assert code == 0
    grids = [p for p in out if "txt2img-grids" in p]
    assert len(grids) == 1 and len([p for p in out if "txt2img-images" in p]) == 2
    assert "X Type: Steps, X Values: 1-2" in Image.open(grids[0]).info["parameters"]


@pytest.mark.parametrize("argv, message", [
    (["--script", "Nope"], "Script 'Nope' not found"),
    (["--script", "X/Y/Z plot", "--script-args", "[1,"], "--script-args is not JSON"),
    (["--script-args", "[]"], "--script-args needs --script NAME"),
])
def test_cli_script_mistakes(data_dir, capsys, argv, message):
    from webui.cli import main

    code = main(["txt2img", "--data-dir", str(data_dir), "--prompt", "x", "--steps", "1", "--width", "64",
                 "--height", "64", *argv])
    assert code != 0 and message in capsys.readouterr().err


def test_xyz_on_img2img_denoising_axis(manager, system):
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    runner = system.img2img
    options = [o.label for o in __import__("sys").modules[type(runner.find("X/Y/Z plot")).__module__]
               .axis_options(True)]
    args = runner.build_args("X/Y/Z plot", xyz(options.index("Denoising"), "0.3, 0.8"), None)
    request = small(steps=4, seed=3, sampler_name="Euler")
    result = run_job(system, manager, request, None, args=args, init=init, img2img=True)
    assert [p.denoising_strength for p in result.params] == [0.3, 0.8]
    single = manager.img2img(request.replace(denoising_strength=0.8), init)
    assert np.array_equal(np.asarray(result.cells[1]), np.asarray(single.images[0]))


def test_model_loaded_and_infotext_pasted_callbacks(manager, system):
    loaded, pasted = [], []
    callbacks.on_model_loaded(lambda model: loaded.append(type(model).__name__))
    callbacks.on_infotext_pasted(lambda text, params: pasted.append(params.get("Prompt")))
    system.connect(manager)
    manager.unload()
    manager.cache.clear()
    manager.txt2img(small(steps=1), None)
    assert loaded == ["Components"]
    from webui.ui.txt2img import Paste
    paste = Paste.__new__(Paste)
    paste.manager, paste.script_fields = manager, []
    paste.values("a dog\nSteps: 3, Sampler: Euler, Seed: 1, Size: 64x64")
    assert pasted == ["a dog"]

