"""The Extras tab: upscale a picture or several (A1111's Single image / Batch process), Scale by or Scale to (with
crop), Upscaler 1 and 2 with visibility; results saved under outputs/extras-images/ with the source's infotext."""
from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from ..engine.errors import UserError
from ..engine.imaging import upscalers
from ..engine.imaging.open import open_limited
from ..engine.infotext import infotext_of_image
from ..engine.jobs.extras import EXTRAS_MAX_SIDE, RESIZE_MODES, SCALE_BY, ExtrasParams
from ..engine.manager import PipelineManager
from .common import slider_for, user_errors_as_gradio


def _source(path) -> tuple:
    path = getattr(path, "name", path)  # gr.File hands over paths (or, in some versions, file objects)
    with open_limited(Path(path), EXTRAS_MAX_SIDE * EXTRAS_MAX_SIDE, "Extras image") as image:
        image.load()
        return image.copy(), infotext_of_image(image)


def build(manager: PipelineManager, outdir: Path):
    with gr.Row():
        with gr.Column():
            # a single picture when one is given, else the batch (A1111's Single image / Batch Process tabs)
            with gr.Tabs():
                with gr.Tab("Single image", id="single"):
                    single = gr.Image(type="filepath", label="Source", elem_id="extras_image")
                with gr.Tab("Batch Process", id="batch"):
                    batch = gr.File(file_count="multiple", file_types=["image"], type="filepath", label="Batch Process")
            mode = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[SCALE_BY], type="index", label="Resize mode")
            with gr.Row():
                scale = slider_for("upscaling_resize", ExtrasParams, label="Resize")
                width = slider_for("upscaling_resize_w", ExtrasParams)
                height = slider_for("upscaling_resize_h", ExtrasParams)
                crop = gr.Checkbox(True, label="Crop to fit")
            with gr.Row():
                upscaler_1 = gr.Dropdown(upscalers.names(), value=upscalers.NONE, label="Upscaler 1")
                upscaler_2 = gr.Dropdown(upscalers.names(), value=upscalers.NONE, label="Upscaler 2")
                visibility = slider_for("extras_upscaler_2_visibility", ExtrasParams)
            run = gr.Button("Generate", variant="primary", elem_id="extras_generate")
        with gr.Column():
            gallery = gr.Gallery(label="Result", format="png", columns=2, object_fit="contain", height="auto")
            info = gr.HTML()

    @user_errors_as_gradio
    def upscale(single_path, batch_paths, resize_mode, by, w, h, crop_, first, second, second_visibility):
        paths = [single_path] if single_path else [p for p in batch_paths or [] if p]
        if not paths:
            raise UserError("nothing to upscale: add a picture first")
        params = ExtrasParams(resize_mode=int(resize_mode), upscaling_resize=float(by), upscaling_resize_w=int(w),
                              upscaling_resize_h=int(h), upscaling_crop=bool(crop_), upscaler_1=first,
                              upscaler_2=second, extras_upscaler_2_visibility=float(second_visibility))
        processed = manager.extras([_source(p) for p in paths], params, outdir)
        text = processed.infotexts[0] if processed.infotexts else ""
        return [str(p) for p in processed.paths], f"<p>{html.escape(text)}</p>"

    run.click(upscale, inputs=[single, batch, mode, scale, width, height, crop, upscaler_1, upscaler_2,
                               visibility], outputs=[gallery, info], api_name="extras")
