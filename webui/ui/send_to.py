"""A1111's "Send to img2img" / "Send to inpaint": a txt2img result's image and its generation parameters (read back
from its infotext, as A1111's paste does, seed and size included) move into the img2img tab."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
from PIL import Image

from ..engine.errors import UserError
from ..engine.imaging.open import open_limited
from ..engine.infotext import parse_infotext
from ..engine.jobs.img2img import MAX_INIT_PIXELS
from . import img2img
from .common import user_errors_as_gradio

TARGETS = {"img2img": img2img.IMG2IMG, "inpaint": img2img.INPAINT}


def fields_from_infotext(text: str) -> dict:
    """The img2img fields a pasted infotext sets (A1111 sends seed and size: its send_seed / send_size options)."""
    p = parse_infotext(text)
    return dict(prompt=p.prompt, negative_prompt=p.negative_prompt, sampler_name=p.sampler_name,
                scheduler=p.scheduler, steps=p.steps, cfg_scale=p.cfg_scale, seed=p.seed, width=p.width,
                height=p.height)


def open_result(path: str, outdir: Path) -> Image.Image:
    """A saved result, only from the outputs folder (the path comes from the browser)."""
    if not path:
        raise UserError("nothing to send: generate an image first")
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(Path(outdir).resolve()) or not resolved.is_file():
        raise UserError(f"not a generated image: {path}")
    with open_limited(resolved, MAX_INIT_PIXELS) as im:  # any file can be dropped in there: header first
        return im.convert("RGB")


def wire(top_tabs: gr.Tabs, source: dict, target: img2img.Img2ImgTab, outdir: Path, tab_id: str = "img2img"):
    """source: {"path": hidden Textbox with the selected result's file, "infotext": its infotext, "img2img":
    button, "inpaint": button}."""
    outputs = [top_tabs, target.tabs, target.mode, target.prompt, target.negative_prompt, target.sampler,
               target.scheduler, target.steps, target.cfg_scale, target.seed, target.width, target.height]

    for kind, mode in TARGETS.items():
        image_component = target.init_image if mode == img2img.IMG2IMG else target.inpaint

        @user_errors_as_gradio
        def send(path, infotext, mode=mode):
            image = open_result(path, outdir)
            f = fields_from_infotext(infotext or "")
            return (gr.Tabs(selected=tab_id), *target.switch_to(mode), f["prompt"], f["negative_prompt"],
                    f["sampler_name"], f["scheduler"], f["steps"], f["cfg_scale"], f["seed"], f["width"],
                    f["height"], image)

        source[kind].click(send, inputs=[source["path"], source["infotext"]], outputs=outputs + [image_component],
                           api_name=f"send_to_{kind}")
