"""The calls popular clients make, replayed in their order with their payloads (reference:
a1111-api-scripts-controlnet.md §3): Open WebUI and SillyTavern."""
import base64
import io
import json
import shutil
import threading
import time

import requests
from PIL import Image



def test_open_webui_flow(api, data_dir, tiny_files, manager):
    """GET options, POST the whole dict back with a new checkpoint, GET sd-models, txt2img with only
    prompt/size/steps (+ batch_size and negative_prompt)."""
    shutil.copy(tiny_files["other"], data_dir / "models" / "Stable-diffusion" / "other.safetensors")
    options = requests.get(f"{api}/sdapi/v1/options", timeout=30).json()
    assert options["sd_model_checkpoint"].startswith("tiny.safetensors [")
    models = requests.get(f"{api}/sdapi/v1/sd-models", timeout=30).json()
    assert {m["model_name"] for m in models} == {"tiny", "other"}
    reply = requests.post(f"{api}/sdapi/v1/options", json={**options, "sd_model_checkpoint": "other"}, timeout=60)
    assert reply.status_code == 200, reply.text
    assert manager.current.info.name == "other.safetensors"
    after = requests.get(f"{api}/sdapi/v1/options", timeout=30).json()
    assert after["sd_model_checkpoint"] == manager.current.title
    assert {k: v for k, v in after.items() if k not in ("sd_model_checkpoint", "sd_checkpoint_hash")} == \
        {k: v for k, v in options.items() if k not in ("sd_model_checkpoint", "sd_checkpoint_hash")}
    reply = requests.post(f"{api}/sdapi/v1/txt2img", json={
        "prompt": "a blue square", "negative_prompt": "", "batch_size": 2, "width": 64, "height": 64, "steps": 3},
        timeout=120)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert len(body["images"]) == 2
    info = json.loads(body["info"])
    assert info["sd_model_name"] == "other" and len(set(info["all_seeds"])) == 2
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert image.size == (64, 64) and "Model: other" in image.info["parameters"]


def test_sillytavern_flow(api, data_dir, tiny_files, manager, slow_steps):
    """POST options {sd_model_checkpoint}, poll progress until idle, the lists it reads, txt2img, and an
    interrupt when the user cancels (the client disconnects)."""
    shutil.copy(tiny_files["other"], data_dir / "models" / "Stable-diffusion" / "other.safetensors")
    titles = [m["title"] for m in requests.get(f"{api}/sdapi/v1/sd-models", timeout=30).json()]
    other = next(t for t in titles if t.startswith("other"))
    assert requests.post(f"{api}/sdapi/v1/options", json={"sd_model_checkpoint": other}, timeout=60).ok
    deadline = time.time() + 30
    while True:
        progress = requests.get(f"{api}/sdapi/v1/progress", timeout=30).json()
        if progress["progress"] == 0 and progress["state"]["job_count"] == 0:
            break
        assert time.time() < deadline
        time.sleep(0.1)
    for path in ("upscalers", "latent-upscale-modes", "sd-vae", "samplers", "schedulers", "sd-models"):
        assert requests.get(f"{api}/sdapi/v1/{path}", timeout=30).ok, path
    assert {"Latent", "Latent (nearest-exact)"} <= {m["name"] for m in
                                                     requests.get(f"{api}/sdapi/v1/latent-upscale-modes").json()}
    payload = {"prompt": "a cat", "negative_prompt": "", "sampler_name": "Euler a", "scheduler": "Karras",
               "steps": 4, "cfg_scale": 7, "width": 64, "height": 64, "restore_faces": False, "enable_hr": False,
               "hr_upscaler": "Latent", "hr_scale": 2, "denoising_strength": 0.7, "seed": 5, "clip_skip": 1,
               "override_settings": {"CLIP_stop_at_last_layers": 1}, "override_settings_restore_afterwards": True,
               "send_images": True, "save_images": False}
    reply = requests.post(f"{api}/sdapi/v1/txt2img", json=payload, timeout=120)
    assert reply.status_code == 200, reply.text
    info = json.loads(reply.json()["info"])
    assert info["sd_model_name"] == "other" and "Denoising strength" not in info["infotexts"][0]

    # the user cancels a long job: SillyTavern calls interrupt when its request is aborted
    out = {}
    job = threading.Thread(target=lambda: out.setdefault("reply", requests.post(
        f"{api}/sdapi/v1/txt2img", json={**payload, "steps": 30, "n_iter": 5}, timeout=120)))
    job.start()
    while requests.get(f"{api}/sdapi/v1/progress", timeout=30).json()["state"]["sampling_step"] < 2:
        time.sleep(0.02)
    assert requests.post(f"{api}/sdapi/v1/interrupt", timeout=30).json() == {}
    job.join(60)
    assert out["reply"].status_code == 200
    assert json.loads(out["reply"].json()["info"])["interrupted"] is True
