"""Inputs are limited before they cost memory: an image's pixel count is read from its header and refused over
the limit (4096x4096) before anything decodes it, whichever input it arrives through; a request body over the
`upload_limit_mb` setting is refused with 413.

"Not decoded" is checked by watching PIL: every `ImageFile.load` (the decode of an opened file) is recorded, and no
image over the limit may appear there. Without the check, gradio's image components decode the upload in their
preprocess, before the handler runs."""
from __future__ import annotations

import base64
import io
import socket

import httpx
import pytest
from PIL import Image, ImageFile

from webui.engine.errors import UserError
from webui.engine.imaging.open import open_limited
from webui.engine.jobs.img2img import MAX_INIT_PIXELS

LIMIT_TEXT = "over the limit of 16,777,216 pixels (4096x4096)"
BIG = (12000, 12000)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A 12000x12000 PNG of a few kilobytes (1-bit, all black): 144 million pixels once decoded."""
    path = tmp_path_factory.mktemp("bomb") / "big.png"
    Image.new("1", BIG).save(path)
    assert path.stat().st_size < 200_000
    return path


@pytest.fixture
def decoded(monkeypatch):
    """The sizes of every image file PIL decodes from now on (in this process: the test server's too)."""
    sizes = []
    load = ImageFile.ImageFile.load

    def recording_load(self):
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return sizes


def assert_none_over_the_limit(sizes):
    assert all(w * h <= MAX_INIT_PIXELS for w, h in sizes), sizes


# --- the helper -----------------------------------------------------------------------------------------


def test_open_limited_refuses_from_the_header_whatever_the_source(bomb, decoded):
    data = bomb.read_bytes()
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    for source in (bomb, str(bomb), data, url, io.BytesIO(data)):
        with pytest.raises(UserError, match=f"Mask is 12000x12000 .*{LIMIT_TEXT.replace('(', '.').replace(')', '.')}"):
            open_limited(source, MAX_INIT_PIXELS, "Mask")
    assert decoded == []


def test_open_limited_returns_a_small_image_lazily_and_names_garbage(tmp_path, decoded):
    Image.new("RGB", (64, 32), "red").save(tmp_path / "small.png")
    image = open_limited(tmp_path / "small.png", MAX_INIT_PIXELS)
    assert image.size == (64, 32) and decoded == []  # opened, not decoded: the caller decodes
    assert image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(UserError, match="Cannot read the image"):
        open_limited(b"not an image at all", MAX_INIT_PIXELS)


def test_ui_conversion_checks_files_before_decoding(bomb, decoded):
    from webui.ui.img2img import INPAINT, editor_to_init_mask, init_and_mask

    small = Image.new("RGBA", (64, 64))
    with pytest.raises(UserError, match="Layer 1 is 12000x12000"):
        editor_to_init_mask(INPAINT, {"background": small, "layers": [str(bomb)], "composite": None})
    with pytest.raises(UserError, match="Init image is 12000x12000"):
        init_and_mask("img2img", init_image={"path": str(bomb)})
    assert_none_over_the_limit(decoded)


# --- over HTTP: each image input of the img2img tab ---------------------------------------------------

BASE = {"prompt": "a red ball", "negative_prompt": "", "sampler_name": "Euler", "scheduler": "Automatic",
        "steps": 2, "width": 64, "height": 64, "n_iter": 1, "batch_size": 1, "cfg_scale": 7, "seed": 1,
        "denoising_strength": 0.75, "resize_mode": "Just resize", "mask_blur": 4, "mask_mode": "Inpaint masked",
        "masked_content": "original", "inpaint_area": "Whole picture", "inpaint_full_res_padding": 32,
        "init_image": None, "mask": None}


def _inputs(small, big):
    """(what the message names, the /img2img arguments that send the big image through that input)."""
    return [
        ("Init image", dict(mode="img2img", init_image=big)),
        ("Background image", dict(mode="Inpaint", inpaint={"background": big, "layers": [small], "composite": None})),
        ("Layer 1", dict(mode="Inpaint", inpaint={"background": small, "layers": [big], "composite": None})),
        ("Composite image", dict(mode="Sketch", sketch={"background": small, "layers": [], "composite": big})),
        ("Mask", dict(mode="Inpaint upload", init_image=small, mask=big)),
        ("Image to inpaint", dict(mode="Inpaint upload", inpaint_image=big, mask=small)),
    ]


def test_every_image_input_refuses_a_pixel_bomb_before_decoding_it(served, data_dir, bomb, decoded):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    Image.new("RGBA", (64, 64), (255, 255, 255, 255)).save(data_dir / "small.png")
    client = Client(served, verbose=False)
    for what, args in _inputs(handle_file(str(data_dir / "small.png")), handle_file(str(bomb))):
        decoded.clear()
        with pytest.raises(AppError) as refused:
            client.predict(**{**BASE, **args}, api_name="/img2img")
        assert f"{what} is 12000x12000" in str(refused.value) and LIMIT_TEXT in str(refused.value)
        assert all(w * h <= MAX_INIT_PIXELS for w, h in decoded), (what, decoded)
    gallery, _ = client.predict(**{**BASE, "mode": "img2img", "init_image": handle_file(str(data_dir / "small.png"))},
                                api_name="/img2img")
    assert len(gallery) == 1  # the app still works


def test_a_data_url_sent_to_an_image_input_is_checked_before_decoding(bomb, decoded):
    import gradio as gr
    from gradio.data_classes import ImageData

    from webui.ui.image_inputs import limit_image

    url = "data:image/png;base64," + base64.b64encode(bomb.read_bytes()).decode()
    with pytest.raises(gr.Error, match="Init image is 12000x12000"):
        limit_image(gr.Image(type="pil", image_mode=None, render=False), "Init image").preprocess(ImageData(url=url))
    assert_none_over_the_limit(decoded)


def test_editor_parts_the_browser_sent_as_blobs_are_checked_before_decoding(bomb, decoded):
    """The page may send the editor's parts beforehand as raw bytes (accept_blobs) and then only their id."""
    import gradio as gr
    from gradio.components.image_editor import EditorData, EditorDataBlobs

    from webui.ui.image_inputs import limit_editor

    small = io.BytesIO()
    Image.new("RGBA", (64, 64)).save(small, "PNG")
    editor = limit_editor(gr.ImageEditor(type="pil", image_mode="RGBA", render=False))
    editor.blob_storage["sent"] = EditorDataBlobs(background=small.getvalue(), layers=[bomb.read_bytes()],
                                                  composite=None)
    with pytest.raises(gr.Error, match="Layer 1 is 12000x12000"):
        editor.preprocess(EditorData(id="sent"))
    assert "sent" not in editor.blob_storage  # not kept for a retry
    assert_none_over_the_limit(decoded)


# --- request size -------------------------------------------------------------------------------------


def test_the_upload_limit_is_a_bounded_setting(manager):
    assert manager.settings.upload_limit_mb == 50
    with pytest.raises(UserError, match="upload size limit"):
        manager.update_settings(upload_limit_mb=0)
    assert manager.settings.upload_limit_mb == 50


@pytest.fixture
def limited(manager, data_dir):
    """The app as `webui` launches it, with upload_limit_mb = 1."""
    from webui.ui.app import build_app, serve_options

    manager.update_settings(upload_limit_mb=1)
    demo = build_app(manager, data_dir / "outputs", "tiny.safetensors")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        **serve_options(demo, manager, data_dir / "outputs"))
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def upload(url, size: int, chunked: bool = False) -> httpx.Response:
    files = {"files": ("x.png", b"\0" * size, "image/png")}
    request = httpx.Request("POST", url + "gradio_api/upload", files=files)
    body = request.read()
    headers = {"content-type": request.headers["content-type"]}
    content = (body[i:i + 65536] for i in range(0, len(body), 65536)) if chunked else body
    return httpx.post(url + "gradio_api/upload", content=content, headers=headers, timeout=60)


def test_a_body_over_the_upload_limit_is_refused_with_413(limited):
    assert httpx.get(limited + "config", timeout=30).json()["max_file_size"] == 1024 * 1024  # the page checks it
    assert upload(limited, 500_000).status_code == 200
    for chunked in (False, True):  # with a Content-Length, and streamed without one
        refused = upload(limited, 2_000_000, chunked)
        assert refused.status_code == 413
        assert "upload size limit of 1 MB" in refused.text
    assert upload(limited, 500_000).status_code == 200  # and the server goes on


def test_png_info_reads_text_before_the_pixels_and_refuses_a_bomb_whose_text_is_after_them(tmp_path, decoded):
    from PIL import PngImagePlugin

    from webui.engine.infotext import read_png_infotext

    # text before the pixel data (how every writer, this one included, stores it): read from the header alone
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20")
    early = tmp_path / "early.png"
    Image.new("1", BIG).save(early, pnginfo=info)
    assert read_png_infotext(early) == "a cat\nSteps: 20"
    # no text before the pixels: finding one after them would decode 144 million pixels
    late = tmp_path / "late.png"
    Image.new("1", BIG).save(late)
    with pytest.raises(UserError, match="PNG Info image is 12000x12000 .*over the limit"):
        read_png_infotext(late)
    assert_none_over_the_limit(decoded)
