"""Many clients at once: one FIFO queue, each job with its own seeds, checkpoint, LoRAs and override_settings, and
the UI still served (its job waits its turn in the same queue)."""
import base64
import io
import json
import shutil
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
from PIL import Image

from test_lora_generation import kohya_lora, write


def _requests() -> list[dict]:
    """20 different jobs: seeds, both checkpoints (and the selected one), a LoRA at two weights, and settings
    overrides that change the picture (clip skip, ENSD with an ancestral sampler, eta)."""
    out = []
    for i in range(20):
        body = {"prompt": "a red circle", "negative_prompt": "blurry", "width": 64, "height": 64, "steps": 4,
                "seed": 100 + i, "sampler_name": "Euler a" if i % 2 else "DPM++ 2M", "cfg_scale": 7}
        overrides = {}
        if i % 3 == 1:
            overrides["sd_model_checkpoint"] = "other"
        elif i % 3 == 2:
            overrides["sd_model_checkpoint"] = "tiny.safetensors"
        if i % 4 == 1:
            body["prompt"] += f" <lora:style:{0.5 + i / 20}>"
        if i % 5 == 2:
            overrides["CLIP_stop_at_last_layers"] = 2
        if i % 5 == 3:
            overrides["eta_noise_seed_delta"] = 31337
        if i % 7 == 4:
            overrides["eta_ancestral"] = 0.5
        if overrides:
            body["override_settings"] = overrides
        out.append(body)
    return out


def _post(api, body):
    reply = requests.post(f"{api}/sdapi/v1/txt2img", json=body, timeout=600)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    image = Image.open(io.BytesIO(base64.b64decode(data["images"][0])))
    return np.asarray(image.convert("RGB")), json.loads(data["info"])["infotexts"][0]


def test_twenty_concurrent_requests_equal_the_same_requests_one_by_one(api, manager, data_dir, tiny_files):
    shutil.copy(tiny_files["other"], data_dir / "models" / "Stable-diffusion" / "other.safetensors")
    write(data_dir / "models" / "Lora", "style", kohya_lora(manager.current, seed=1))
    settings_before = manager.settings
    bodies = _requests()
    with ThreadPoolExecutor(20) as pool:
        together = list(pool.map(lambda body: _post(api, body), bodies))
    assert manager.settings == settings_before  # every override was restored, none leaked
    alone = [_post(api, body) for body in bodies]
    for i, ((image, text), (image_alone, text_alone)) in enumerate(zip(together, alone)):
        assert text == text_alone, i
        assert np.array_equal(image, image_alone), i
    texts = [text for _, text in together]
    assert sum("Model: other" in t for t in texts) == 7 and sum("Lora hashes" in t for t in texts) == 5
    assert sum("Clip skip: 2" in t for t in texts) == 4 and sum("ENSD: 31337" in t for t in texts) == 2  # written only with samplers that use it (Euler a)
    # the pictures really differ by what was asked: no two jobs gave the same picture
    assert len({image.tobytes() for image, _ in together}) == 20


def test_override_settings_kept_when_not_restored(api, manager, data_dir):
    body = {"prompt": "x", "width": 64, "height": 64, "steps": 2, "seed": 1,
            "override_settings": {"CLIP_stop_at_last_layers": 3}, "override_settings_restore_afterwards": False}
    assert requests.post(f"{api}/sdapi/v1/txt2img", json=body, timeout=120).ok
    assert manager.settings.CLIP_stop_at_last_layers == 3


def test_the_queue_is_fifo_and_reports_its_place(manager, api, slow_steps):
    """Jobs run in the order they arrived; /internal/progress tells a waiting task its place."""
    order = []
    original = manager.queue.task

    def recording(task_id=None, job=""):
        context = original(task_id, job)

        class Recorder:
            def __enter__(self):
                state = context.__enter__()
                order.append(state.id)
                return state

            def __exit__(self, *exc):
                return context.__exit__(*exc)
        return Recorder()
    manager.queue.task = recording
    ids = [f"job-{i}" for i in range(4)]
    threads = []
    for task_id in ids:
        body = {"prompt": "x", "width": 64, "height": 64, "steps": 6, "seed": 1, "force_task_id": task_id}
        thread = threading.Thread(target=requests.post, args=(f"{api}/sdapi/v1/txt2img",), kwargs={"json": body})
        thread.start()
        threads.append(thread)
        while manager.queue.find(task_id)[0] is None:  # arrived before the next one is sent
            pass
    places = {task_id: requests.post(f"{api}/internal/progress", json={"id_task": task_id}).json()
              for task_id in ids}
    for thread in threads:
        thread.join(60)
    assert order == ids
    assert places["job-3"]["queued"] and places["job-3"]["queue_position"] >= 1
    done = requests.post(f"{api}/internal/progress", json={"id_task": "job-0"}).json()
    assert done["completed"] and done["progress"] == 1


def test_the_ui_works_while_the_api_queue_is_busy(manager, data_dir, slow_steps):
    """The API on the UI's own server (--api): a UI Generate pressed while API jobs wait is served in turn."""
    from gradio_client import Client

    from webui.api.routes import ApiConfig
    from webui.api.server import attach
    from webui.ui.app import build_app

    demo = build_app(manager, data_dir / "outputs", "tiny.safetensors")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app, _, _ = demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        attach(app, manager, ApiConfig(data_dir / "outputs"))
        url = f"http://127.0.0.1:{port}"
        replies = []
        jobs = [threading.Thread(target=lambda i=i: replies.append(requests.post(
            f"{url}/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 8, "seed": i},
            timeout=300))) for i in range(4)]
        for job in jobs:
            job.start()
        while len(manager.queue) < 3:
            pass
        client = Client(url, verbose=False)
        gallery, info = client.predict("tiny.safetensors", "a cat", "", "Euler", "Automatic", 3, 64, 64, 1, 1,
                                          7.0, 9, api_name="/txt2img")
        assert len(gallery) == 1 and "Seed: 9" in info
        for job in jobs:
            job.join(120)
        assert [r.status_code for r in replies] == [200] * 4
    finally:
        demo.close()
