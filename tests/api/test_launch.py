"""The real launcher, as a user starts it: `webui --api` (UI + API on one server) and `webui --nowebui`."""
import os
import subprocess
import sys
import time

import pytest
import requests

from .conftest import free_port


@pytest.fixture
def launched_cli(data_dir):
    processes = []

    def start(*flags):
        port = free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        process = subprocess.Popen([sys.executable, "-m", "webui.cli", "--data-dir", str(data_dir), "--port",
                                    str(port), *flags], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                if requests.get(f"{url}/sdapi/v1/progress", timeout=5).status_code in (200, 401):
                    return url
            except requests.ConnectionError:
                time.sleep(0.3)
        raise AssertionError("the server did not come up")
    yield start
    for process in processes:
        process.terminate()
        process.wait(30)


def test_webui_api_serves_ui_api_and_docs_on_one_port(launched_cli):
    url = launched_cli("--api", "--api-auth", "u:p")
    assert requests.get(url, timeout=30).status_code == 200  # the UI page
    assert requests.get(f"{url}/sdapi/v1/options", timeout=30).status_code == 401
    reply = requests.post(f"{url}/sdapi/v1/txt2img", auth=("u", "p"), timeout=120,
                          json={"prompt": "x", "width": 64, "height": 64, "steps": 2})
    assert reply.status_code == 200 and len(reply.json()["images"]) == 1
    assert requests.get(f"{url}/docs", timeout=30).status_code == 200
    assert "/sdapi/v1/txt2img" in requests.get(f"{url}/openapi.json", timeout=30).json()["paths"]


def test_nowebui_serves_only_the_api(launched_cli):
    url = launched_cli("--nowebui")
    assert requests.get(f"{url}/sdapi/v1/sd-models", timeout=30).json()[0]["model_name"] == "tiny"
    assert requests.get(url, timeout=30).status_code == 404
