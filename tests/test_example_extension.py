"""The example extension in extensions/ (attention-boost): its UI, infotext field, model patch and API route,
through the UI, the HTTP API and the CLI, the way a user meets it."""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import small
from webui.engine.infotext import parse_infotext
from webui.scripts import callbacks
from webui.scripts.extensions import load_scripts
from webui.scripts.jobs import run_job

REPO_EXTENSIONS = Path(__file__).resolve().parents[1] / "extensions"
TITLE = "Attention boost"


@pytest.fixture
def system():
    callbacks.clear()
    yield load_scripts(REPO_EXTENSIONS)
    callbacks.clear()


def boosted(system, enabled, factor=1.5):
    return system.txt2img.build_args(None, None, {TITLE: {"args": [enabled, factor]}})


def test_the_example_is_discovered_with_its_css_and_javascript(system):
    ext = next(e for e in system.extensions if e.name == "attention-boost")
    assert not ext.builtin and ext.enabled and not ext.errors
    assert [s.display_title for s in system.txt2img.alwayson] == ["ControlNet", TITLE]  # built-in first
    assert "border-left" in system.css
    assert [p.name for p in system.javascript] == ["attention_boost.js"]


def test_off_by_default_changes_nothing_on_it_patches_and_records(manager, system):
    request = small(steps=3, seed=8)
    plain = np.asarray(manager.txt2img(request, None).images[0])
    off = run_job(system, manager, request, None, args=boosted(system, False))
    assert np.array_equal(np.asarray(off.images[0]), plain)
    assert "Attention boost" not in off.infotexts[0]
    on = run_job(system, manager, request, None, args=boosted(system, True, 1.5))
    assert not np.array_equal(np.asarray(on.images[0]), plain)
    assert parse_infotext(on.infotexts[0]).extra["Attention boost"] == "1.5"
    assert np.array_equal(np.asarray(manager.txt2img(request, None).images[0]), plain), "the next job is clean"


def test_out_of_range_factor_fails_the_job_with_the_extension_s_message(manager, system):
    from webui.engine.errors import UserError

    with pytest.raises(UserError, match="Attention boost.*factor must be between 0.5 and 2.0, got 9"):
        run_job(system, manager, small(steps=3), None, args=boosted(system, True, 9.0))


def test_api_alwayson_scripts_and_the_route_added_on_app_started(manager, data_dir, system):
    import requests

    from api.conftest import LiveServer
    from webui.api.routes import ApiConfig
    from webui.api.server import standalone_app

    app = standalone_app(manager, ApiConfig(data_dir / "outputs", scripts=system))
    callbacks.run("app_started", None, app)
    with LiveServer(app) as server:
        info = requests.get(f"{server.url}/attention-boost/v1/info", timeout=30).json()
        assert info == {"title": TITLE, "infotext_key": "Attention boost", "minimum": 0.5, "maximum": 2.0}
        body = {"prompt": "a cat", "steps": 3, "width": 64, "height": 64, "seed": 8, "sampler_name": "Euler",
                "alwayson_scripts": {"attention boost": {"args": [True, 1.25]}}}
        answer = requests.post(f"{server.url}/sdapi/v1/txt2img", json=body, timeout=120).json()
        image = Image.open(io.BytesIO(base64.b64decode(answer["images"][0])))
        assert "Attention boost: 1.25" in image.info["parameters"]
        names = requests.get(f"{server.url}/sdapi/v1/scripts", timeout=30).json()
        assert "attention boost" in names["txt2img"] and "x/y/z plot" in names["txt2img"]
        infos = requests.get(f"{server.url}/sdapi/v1/script-info", timeout=30).json()
        boost = next(i for i in infos if i["name"] == "attention boost" and not i["is_img2img"])
        assert boost["is_alwayson"] and [a["label"] for a in boost["args"]] == ["Enable", "Cross-attention factor"]
        assert boost["args"][1]["minimum"] == 0.5 and boost["args"][1]["value"] == 1.3


def test_cli_runs_with_the_extension_installed_and_a_disabled_one_is_skipped(data_dir, capsys):
    from webui.cli import main

    shutil.copytree(REPO_EXTENSIONS / "attention-boost", data_dir / "extensions" / "attention-boost")
    code = main(["txt2img", "--data-dir", str(data_dir), "--prompt", "a cat", "--steps", "2", "--width", "64",
                 "--height", "64", "--seed", "3", "--sampler", "Euler"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 1 and out[0].endswith("-3.png")
    import json
    (data_dir / "config.json").write_text(json.dumps({"disabled_extensions": ["attention-boost"]}))
    system = load_scripts(data_dir / "extensions", {"attention-boost"})
    assert TITLE not in [s.display_title for s in system.txt2img.alwayson]
