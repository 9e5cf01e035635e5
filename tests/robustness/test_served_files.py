"""Files reach the browser only from where they belong (README, "Which files the server serves").

The app is launched as `webui` launches it (ui/app.py serve_options) and asked over HTTP for what it must refuse:
symlinks in the outputs folder that lead out of it (a file, a folder), a LoRA preview symlinked out of the LoRA
folder, and a listed preview replaced by such a symlink afterwards (gradio 6 on its own serves that one: it allows
the target of any file registered with set_static_paths). Every refusal is checked on status and body: the
secret's text never comes back."""
from __future__ import annotations

import socket
from urllib.parse import quote

import httpx
import pytest
import torch
from safetensors.torch import save_file

from webui.engine.lora.library import LoraLibrary
from webui.engine.models.checkpoints import HashCache

SECRET = "TOP SECRET: not for the browser"


def lora_file(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(1, 1)}, str(path))


def test_a_preview_symlinked_out_of_the_lora_folder_is_not_offered(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not for the browser")
    lora_dir = tmp_path / "models" / "Lora"
    for name in ("x", "y"):
        lora_file(lora_dir / f"{name}.safetensors")
    (lora_dir / "x.png").symlink_to(secret)
    (lora_dir / "y.png").write_bytes(b"\x89PNG a real preview")
    library = LoraLibrary(lora_dir, HashCache(tmp_path / "cache.json"))
    previews = {info.name: info.preview for info in library.list()}
    assert previews["x"] is None
    assert previews["y"] == lora_dir / "y.png"


# --- over HTTP ------------------------------------------------------------------------------------------


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "elsewhere" / "secret.png"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


@pytest.fixture
def app(manager, data_dir):
    """(url, outputs folder, LoRA folder): the whole app, launched with the options `webui` uses."""
    from webui.ui.app import build_app, serve_options

    outputs = data_dir / "outputs"
    (outputs / "txt2img-images").mkdir(parents=True)
    demo = build_app(manager, outputs, "tiny.safetensors")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        **serve_options(demo, manager, outputs))
    yield f"http://127.0.0.1:{port}/", outputs, manager.loras.root
    demo.close()


def fetch(url: str, path) -> httpx.Response:
    return httpx.get(url + "gradio_api/file=" + quote(str(path), safe="/:"), timeout=30)


def assert_refused(response: httpx.Response):
    assert response.status_code in (403, 404), response.status_code
    assert SECRET not in response.text


def test_outputs_are_served_but_symlinks_leaving_the_folder_are_not(app, secret):
    url, outputs, _ = app
    folder = outputs / "txt2img-images"
    (folder / "00000-1.png").write_text("a real result")
    (folder / "x.png").symlink_to(secret)  # ln -s /etc/passwd outputs/txt2img-images/x.png
    (folder / "linked").symlink_to(secret.parent, target_is_directory=True)  # a symlinked subfolder
    assert fetch(url, folder / "00000-1.png").text == "a real result"
    for path in (folder / "x.png", folder / "linked" / "secret.png", f"{folder}/../../elsewhere/secret.png",
                 secret, "http://127.0.0.1:9/secret.png"):
        assert_refused(fetch(url, path))


def test_a_symlinked_lora_preview_is_refused_by_url(app, secret):
    url, _, lora_dir = app
    lora_file(lora_dir / "x.safetensors")
    (lora_dir / "x.png").symlink_to(secret)
    assert_refused(fetch(url, lora_dir / "x.png"))
    assert_refused(fetch(url, lora_dir / "x.safetensors"))  # the weights next to a preview stay private too


def test_a_listed_preview_replaced_by_a_symlink_is_refused(app, secret):
    from gradio_client import Client

    url, _, lora_dir = app
    lora_file(lora_dir / "y.safetensors")
    preview = lora_dir / "y.png"
    preview.write_text("a real preview")
    listing = Client(url, verbose=False).predict("", api_name="/lora_refresh")
    assert quote(preview.as_posix(), safe="/:") in listing  # offered, so registered with gradio
    assert fetch(url, preview).text == "a real preview"

    preview.unlink()
    preview.symlink_to(secret)
    assert_refused(fetch(url, preview))
    assert_refused(fetch(url, secret))  # gradio alone allows the target of a registered static file
