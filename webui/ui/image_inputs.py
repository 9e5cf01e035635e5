"""gradio image inputs that check an upload's pixel count on its header before gradio decodes it.

gr.Image (type="pil") and gr.ImageEditor (any type) decode and convert every upload in `preprocess`, before the
handler runs: a small PNG declaring 12000x12000 pixels would be decoded to gigabytes there. `limit_image` and
`limit_editor` put a check in front of that component's preprocess: each file is opened lazily first
(engine/imaging/open.py) and an oversized one is stopped with the limit in the message.

They wrap the instance's method instead of subclassing: gradio writes a `.pyi` stub next to the source of every
component subclass it sees defined."""
from __future__ import annotations

import gradio as gr

from ..engine.errors import UserError
from ..engine.imaging.open import open_limited
from ..engine.jobs.img2img import MAX_INIT_PIXELS


def check_upload(data, max_pixels: int, what: str) -> None:
    """data: a FileData/ImageData (path or data: URL) or the raw bytes the image editor sends. gr.Error when it
    is over the limit or no image at all."""
    if data is None:
        return
    if isinstance(data, (bytes, bytearray, memoryview)):
        source = bytes(data)
    else:
        path, url = getattr(data, "path", None), getattr(data, "url", None)
        source = url if isinstance(url, str) and url.startswith("data:") else path
        if source is None:
            return  # gradio reports a missing file itself
    try:
        open_limited(source, max_pixels, what).close()
    except UserError as e:
        raise gr.Error(str(e)) from e


def limit_image(image: gr.Image, what: str, max_pixels: int = MAX_INIT_PIXELS) -> gr.Image:
    """`image`, its uploads checked before it decodes them; `what` names it in the message ("Mask")."""
    decode = image.preprocess

    def preprocess(payload):
        check_upload(payload, max_pixels, what)
        return decode(payload)

    image.preprocess = preprocess
    return image


def limit_editor(editor: gr.ImageEditor, max_pixels: int = MAX_INIT_PIXELS) -> gr.ImageEditor:
    """`editor`, its background, layers and composite checked before it decodes them."""
    decode = editor.preprocess

    def preprocess(payload):
        if payload is None:
            return None
        # the page may have sent the parts beforehand (accept_blobs): then they are bytes kept under an id
        parts = editor.blob_storage.get(payload.id) if payload.id is not None else payload
        if parts is not None:
            try:
                check_upload(parts.background, max_pixels, "Background image")
                for number, layer in enumerate(parts.layers or (), 1):
                    check_upload(layer, max_pixels, f"Layer {number}")
                check_upload(parts.composite, max_pixels, "Composite image")
            except gr.Error:
                if payload.id is not None:
                    editor.blob_storage.pop(payload.id, None)  # not kept for a retry: it would fail the same
                raise
        return decode(payload)

    editor.preprocess = preprocess
    return editor
