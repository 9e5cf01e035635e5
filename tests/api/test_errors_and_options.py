"""What a client gets for a mistake (A1111's error body, the right status, never a traceback, the server alive),
and options: every key GET gives can be POSTed back, a bad value stores nothing, changes reach config.json."""
import base64
import io
import json
import logging
import threading
import time

import pytest
import requests
from PIL import Image

from .conftest import start_api

GOOD = {"prompt": "x", "width": 64, "height": 64, "steps": 2, "seed": 1}


def post(api, path, body, status):
    reply = requests.post(f"{api}/sdapi/v1/{path}", json=body, timeout=120)
    assert reply.status_code == status, reply.text
    assert "Traceback" not in reply.text
    data = reply.json()
    assert set(data) == {"error", "detail", "body", "errors"}
    return data


@pytest.mark.parametrize("path, body, status, error, detail", [
    ("txt2img", {**GOOD, "width": 65}, 422, "InvalidParams", "width must be a multiple of 8, got 65"),
    ("txt2img", {**GOOD, "steps": 500}, 422, "InvalidParams", "steps must be between 1 and 150, got 500"),
    ("txt2img", {**GOOD, "cfg_scale": "lots"}, 422, "RequestValidationError", "cfg_scale: Input should be a valid number"),
    ("txt2img", {**GOOD, "sampler_name": "Nope"}, 400, "UnknownSampler", "unknown sampler 'Nope'"),
    ("txt2img", {**GOOD, "override_settings": {"sd_model_checkpoint": "missing"}}, 404, "CheckpointError",
     "checkpoint not found: 'missing'"),
    ("txt2img", {**GOOD, "override_settings": {"CLIP_stop_at_last_layers": 40}}, 422, "InvalidParams",
     "override_settings: CLIP_stop_at_last_layers: clip skip must be between 1 and 12, got 40"),
    ("txt2img", {**GOOD, "script_name": "X/Y/Z plot"}, 422, "_Unprocessable", "Script 'X/Y/Z plot' not found"),
    ("txt2img", {**GOOD, "alwayson_scripts": {"ADetailer": {"args": [True]}}}, 422, "_Unprocessable",
     "always on script ADetailer not found"),
    ("txt2img", {**GOOD, "enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"}, 400, "UnknownUpscaler",
     "could not find upscaler named 'R-ESRGAN 4x+'"),
    ("txt2img", {**GOOD, "enable_hr": True, "hr_scale": 9}, 422, "InvalidParams",
     "hires upscale must be between 1.0 and 4.0, got 9.0"),
    ("img2img", GOOD, 422, "InvalidParams", "img2img needs init_images"),
    ("img2img", {**GOOD, "init_images": ["not base64 at all!"]}, 400, "InvalidImage", "Cannot read the init image"),
    ("img2img", {**GOOD, "init_images": ["data:image/png;base64,AAAA"]}, 400, "InvalidImage",
     "Cannot read the init image"),
    ("png-info", {"image": ""}, 400, "InvalidImage", "PNG Info image is empty"),
    ("interrogate", {"image": ""}, 501, "NotAvailable", "interrogate (CLIP / DeepBooru captions) is not"),
])
def test_mistakes_get_a1111_error_bodies_and_the_server_lives_on(api, path, body, status, error, detail):
    data = post(api, path, body, status)
    assert data["error"] == error and data["detail"].startswith(detail), data
    assert requests.post(f"{api}/sdapi/v1/txt2img", json=GOOD, timeout=120).status_code == 200


def test_validation_errors_echo_the_body_without_megabytes(api):
    big = "A" * 100_000
    data = post(api, "txt2img", {**GOOD, "steps": "many", "prompt": big}, 422)
    assert data["body"]["steps"] == "many" and len(data["body"]["prompt"]) < 300
    assert "steps" in data["errors"]


def test_empty_alwayson_args_switch_an_extension_off_and_are_accepted(api):
    """webuiapi sends {"ControlNet": {"args": []}} when it thinks ControlNet is installed."""
    body = {**GOOD, "alwayson_scripts": {"ControlNet": {"args": []}}, "restore_faces": False, "tiling": False}
    assert requests.post(f"{api}/sdapi/v1/txt2img", json=body, timeout=120).status_code == 200


def test_a_bug_is_a_500_with_one_line_and_no_traceback(api, manager, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line of internals")
    monkeypatch.setattr(manager, "txt2img", broken)
    data = post(api, "txt2img", GOOD, 500)
    assert data["detail"] == "boom" and "second line" not in json.dumps(data)


def test_a_full_queue_answers_503_with_retry_after(api, manager, slow_steps):
    manager.update_settings(queue_limit=1)
    job = threading.Thread(target=requests.post, args=(f"{api}/sdapi/v1/txt2img",),
                           kwargs={"json": {**GOOD, "steps": 20}, "timeout": 120})
    job.start()
    while len(manager.queue) < 1:
        time.sleep(0.01)
    reply = requests.post(f"{api}/sdapi/v1/txt2img", json=GOOD, timeout=120)
    assert reply.status_code == 503 and int(reply.headers["Retry-After"]) >= 1
    assert "the job queue is full" in reply.json()["detail"]
    job.join(60)
    assert requests.post(f"{api}/sdapi/v1/txt2img", json=GOOD, timeout=120).status_code == 200


# ------------------------------------------------------------------------------------------------- options


@pytest.fixture
def saved(data_dir):
    """A manager that keeps its settings in data_dir/config.json, as the launcher's does, served."""
    from webui.engine.manager import PipelineManager

    manager = PipelineManager(data_dir / "models" / "Stable-diffusion", data_dir, device="cpu",
                              settings_path=data_dir / "config.json")
    with start_api(manager, data_dir) as server:
        yield manager, server.url, data_dir / "config.json"


def test_options_use_a1111_names_and_changes_reach_config_json(saved):
    manager, url, config = saved
    options = requests.get(f"{url}/sdapi/v1/options", timeout=30).json()
    for key in ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers", "eta_noise_seed_delta",
                "samples_format", "sd_checkpoints_limit", "randn_source", "eta_ancestral", "queue_limit"):
        assert key in options, key
    assert options["samples_format"] == "png" and options["CLIP_stop_at_last_layers"] == 1
    assert requests.post(f"{url}/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2,
                                                            "eta_noise_seed_delta": 31337}, timeout=30).ok
    stored = json.loads(config.read_text())
    assert (stored["CLIP_stop_at_last_layers"], stored["eta_noise_seed_delta"]) == (2, 31337)
    assert not list(config.parent.glob(".config-*"))  # written through a temporary file, which is gone
    # the next start reads them back
    from webui.engine.manager import PipelineManager

    again = PipelineManager(manager.ckpt_dir, config.parent, device="cpu", settings_path=config)
    assert (again.settings.CLIP_stop_at_last_layers, again.settings.eta_noise_seed_delta) == (2, 31337)
    # and a job uses them: the infotext says so
    info = requests.post(f"{url}/sdapi/v1/txt2img", json=GOOD, timeout=120).json()["info"]
    assert "Clip skip: 2" in json.loads(info)["infotexts"][0]


def test_posting_back_the_whole_get_dict_works(saved):
    manager, url, config = saved
    options = requests.get(f"{url}/sdapi/v1/options", timeout=30).json()
    before = manager.settings
    assert requests.post(f"{url}/sdapi/v1/options", json=options, timeout=60).status_code == 200
    assert manager.settings == before


@pytest.mark.parametrize("change, message", [
    ({"CLIP_stop_at_last_layers": 99}, "CLIP_stop_at_last_layers: clip skip must be between 1 and 12, got 99"),
    ({"CLIP_stop_at_last_layers": "two"}, "CLIP_stop_at_last_layers must be a whole number, got 'two'"),
    ({"eta_ancestral": True}, "eta_ancestral must be a number, got True"),
    ({"randn_source": "NV"}, "randn_source: RNG source must be one of CPU, GPU; got 'NV'"),
    ({"sd_model_checkpoint": 5}, "sd_model_checkpoint must be a checkpoint title or name, got 5"),
])
def test_a_bad_option_is_422_and_stores_nothing(saved, change, message):
    manager, url, config = saved
    before, file_before = manager.settings, config.read_text() if config.exists() else None
    reply = requests.post(f"{url}/sdapi/v1/options", json={"eta_noise_seed_delta": 7, **change}, timeout=30)
    assert reply.status_code == 422 and reply.json()["detail"] == message
    assert manager.settings == before
    assert (config.read_text() if config.exists() else None) == file_before


def test_an_unknown_checkpoint_option_stores_nothing(saved):
    manager, url, config = saved
    reply = requests.post(f"{url}/sdapi/v1/options", json={"sd_model_checkpoint": "nope", "CLIP_stop_at_last_layers": 2},
                          timeout=30)
    assert reply.status_code == 404 and "checkpoint not found: 'nope'" in reply.json()["detail"]
    assert manager.settings.CLIP_stop_at_last_layers == 1


def test_unknown_option_keys_are_ignored_with_a_warning(saved, caplog):
    manager, url, _ = saved
    with caplog.at_level(logging.WARNING, logger="webui.api"):
        reply = requests.post(f"{url}/sdapi/v1/options", json={"forge_preset": "sd", "sd_hypernetwork": "None",
                                                                 "CLIP_stop_at_last_layers": 3}, timeout=30)
    assert reply.status_code == 200 and manager.settings.CLIP_stop_at_last_layers == 3
    assert "forge_preset, sd_hypernetwork" in caplog.text


def test_config_json_keeps_foreign_keys_and_survives_bad_values(data_dir, caplog):
    from webui.engine.manager import PipelineManager

    config = data_dir / "config.json"
    config.write_text(json.dumps({"CLIP_stop_at_last_layers": 99, "eta_ddim": 0.5, "quicksettings_list": ["x"]}))
    with caplog.at_level(logging.WARNING):
        manager = PipelineManager(data_dir / "models" / "Stable-diffusion", data_dir, device="cpu",
                                  settings_path=config)
    assert manager.settings.CLIP_stop_at_last_layers == 1 and manager.settings.eta_ddim == 0.5
    assert "clip skip must be between 1 and 12" in caplog.text
    manager.update_settings(eta_ddim=0.25)
    stored = json.loads(config.read_text())
    assert stored["quicksettings_list"] == ["x"] and stored["eta_ddim"] == 0.25
    config.write_text("{ not json")
    with caplog.at_level(logging.WARNING):
        broken = PipelineManager(data_dir / "models" / "Stable-diffusion", data_dir, device="cpu",
                                 settings_path=config)
    assert broken.settings.eta_ddim == 0.0 and "ignoring" in caplog.text
    # set aside, not overwritten by the next save
    assert (data_dir / "config.json.corrupt-1").read_text() == "{ not json" and not config.exists()
    broken.update_settings(eta_ddim=0.5)
    assert (data_dir / "config.json.corrupt-1").read_text() == "{ not json"


def test_selected_checkpoint_is_remembered_in_config_json(saved, tiny_files):
    import shutil

    manager, url, config = saved
    shutil.copy(tiny_files["other"], manager.ckpt_dir / "other.safetensors")
    assert requests.post(f"{url}/sdapi/v1/options", json={"sd_model_checkpoint": "other"}, timeout=60).ok
    assert json.loads(config.read_text())["sd_model_checkpoint"] == "other.safetensors"
    from webui.engine.manager import PipelineManager

    again = PipelineManager(manager.ckpt_dir, config.parent, device="cpu", settings_path=config)
    assert again.ensure_model(None).info.name == "other.safetensors"


def test_png_info_of_a_data_url(api):
    buffer = io.BytesIO()
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("parameters", "a cat\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 8x8")
    meta.add_text("Software", "elsewhere")
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=meta)
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    data = requests.post(f"{api}/sdapi/v1/png-info", json={"image": url}, timeout=30).json()
    assert data["items"] == {"Software": "elsewhere"} and data["parameters"]["Sampler"] == "Euler"
