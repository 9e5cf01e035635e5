"""The PNG Info tab: drop a picture (PNG `parameters` chunk, JPEG / WebP EXIF UserComment, as A1111 and model sites
write them) and see its generation parameters, every key including the ones this version does not know; "Send to
txt2img / img2img / inpaint" fill the fields they name."""
from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from ..engine.errors import UserError
from ..engine.imaging.open import open_limited
from ..engine.infotext import PNG_INFO_MAX_PIXELS, infotext_fields, parse_infotext, read_png_infotext
from ..engine.jobs.img2img import MAX_INIT_PIXELS
from . import img2img, scripts_panel, send_to
from .common import user_errors_as_gradio


def read(path: str | None) -> tuple[str, str]:
    """(the infotext or "", an HTML table of its fields) for a dropped file."""
    if not path:
        return "", ""
    try:
        text = read_png_infotext(path)
    except UserError as e:
        return "", f"<p>{html.escape(str(e))}</p>"
    except Exception as e:  # noqa: BLE001 - not a picture PIL can open: say so, never a traceback
        return "", f"<p>Cannot read this file as a picture: {html.escape(str(e).splitlines()[0] if str(e) else '')}</p>"
    if not text:
        return "", "<p>This picture carries no generation parameters.</p>"
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in infotext_fields(text).items())
    return text, f"<table class='png-info'>{rows}</table>"


def build(top_tabs: gr.Tabs, txt2img_paste, img2img_tab: img2img.Img2ImgTab):
    """`txt2img_paste`: txt2img.Paste (its outputs and values)."""
    with gr.Row():
        with gr.Column():
            source = gr.File(label="Source", file_types=["image"], type="filepath", elem_id="pnginfo_image")
        with gr.Column():
            parameters = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="pnginfo_parameters")
            fields = gr.HTML()
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img")
                to_img2img = gr.Button("Send to img2img")
                to_inpaint = gr.Button("Send to inpaint")
    source.change(read, inputs=source, outputs=[parameters, fields], api_name="png_info")

    def send_txt2img(text):
        if not text:
            raise gr.Error("Nothing to send: drop a picture with generation parameters first")
        return [gr.Tabs(selected="txt2img"), *txt2img_paste.values(text)]

    to_txt2img.click(send_txt2img, inputs=parameters, outputs=[top_tabs, *txt2img_paste.outputs],
                     api_name="png_info_to_txt2img")
    for button, mode in ((to_img2img, img2img.IMG2IMG), (to_inpaint, img2img.INPAINT)):
        _wire_send_img2img(button, mode, source, parameters, top_tabs, img2img_tab)


def _wire_send_img2img(button, mode, source, parameters, top_tabs, target: img2img.Img2ImgTab):
    image_component = target.init_image if mode == img2img.IMG2IMG else target.inpaint
    outputs = [top_tabs, target.tabs, target.mode, target.prompt, target.negative_prompt, target.sampler,
               target.scheduler, target.steps, target.cfg_scale, target.seed, target.width, target.height,
               image_component, *(component for component, _ in target.script_fields)]

    @user_errors_as_gradio
    def send(path, text, mode=mode):
        if not path:
            raise UserError("nothing to send: drop a picture first")
        with open_limited(Path(path), min(MAX_INIT_PIXELS, PNG_INFO_MAX_PIXELS)) as im:
            image = im.convert("RGB")
        f = send_to.fields_from_infotext(text or "")
        parsed = parse_infotext(text or "")
        scripts = scripts_panel.pasted_values(target.script_fields, {**parsed.extra, "Prompt": parsed.prompt})
        return (gr.Tabs(selected="img2img"), *target.switch_to(mode), f["prompt"], f["negative_prompt"],
                f["sampler_name"], f["scheduler"], f["steps"], f["cfg_scale"], f["seed"], f["width"], f["height"],
                image, *scripts)

    button.click(send, inputs=[source, parameters], outputs=outputs, api_name=False)
