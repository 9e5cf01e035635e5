"""The Extras tab: upscale a picture, several, or a folder's (A1111's Single image / Batch Process / Batch from
directory), Scale by or Scale to (with crop), Upscaler 1 and 2 with visibility; results saved under
outputs/extras-images/ (or the batch's output directory) with the source's infotext."""
from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from ..engine.errors import UserError
from ..engine.imaging import upscalers
from ..engine.imaging.open import open_limited
from ..engine.infotext import infotext_of_image
from ..engine.jobs.extras import EXTRAS_MAX_SIDE, RESIZE_MODES, SCALE_BY, ExtrasParams, FolderSources
from ..engine.manager import PipelineManager
from .common import slider_for, user_errors_as_gradio


def _source(path) -> tuple:
    path = getattr(path, "name", path)  # gr.File hands over paths (or, in some versions, file objects)
    with open_limited(Path(path), EXTRAS_MAX_SIDE * EXTRAS_MAX_SIDE, "Extras image") as image:
        image.load()
        return image.copy(), infotext_of_image(image)


def _constant(value):
    return lambda: value


def build(manager: PipelineManager, outdir: Path):
    with gr.Row():
        with gr.Column():
            # the open tab's pictures, as A1111's extras_mode; a client that never opened a tab (the API) gets the
            # first tab that has something in it
            tab = gr.State(None)
            with gr.Tabs():
                with gr.Tab("Single image", id="single") as single_tab:
                    single = gr.Image(type="filepath", label="Source", elem_id="extras_image")
                with gr.Tab("Batch Process", id="batch") as batch_tab:
                    batch = gr.File(file_count="multiple", file_types=["image"], type="filepath", label="Batch Process")
                with gr.Tab("Batch from directory", id="batch_from_directory") as folder_tab:
                    input_dir = gr.Textbox(label="Input directory", elem_id="extras_batch_input_dir",
                                           placeholder="A directory on the same machine where the server is running.")
                    output_dir = gr.Textbox(label="Output directory", elem_id="extras_batch_output_dir",
                                            placeholder="Leave blank to save images to the default path.")
            for index, each in enumerate((single_tab, batch_tab, folder_tab)):
                each.select(_constant(index), outputs=tab, api_name=False, queue=False)
            mode = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[SCALE_BY], type="index", label="Resize mode")
            with gr.Row():
                scale = slider_for("upscaling_resize", ExtrasParams, label="Resize")
                width = slider_for("upscaling_resize_w", ExtrasParams)
                height = slider_for("upscaling_resize_h", ExtrasParams)
                crop = gr.Checkbox(True, label="Crop to fit")
            with gr.Row():
                choices = upscalers.names(manager.upscaler_models)
                upscaler_1 = gr.Dropdown(choices, value=upscalers.NONE, label="Upscaler 1")
                upscaler_2 = gr.Dropdown(choices, value=upscalers.NONE, label="Upscaler 2")
                visibility = slider_for("extras_upscaler_2_visibility", ExtrasParams)
            run = gr.Button("Generate", variant="primary", elem_id="extras_generate")
        with gr.Column():
            gallery = gr.Gallery(label="Result", format="png", columns=2, object_fit="contain", height="auto")
            info = gr.HTML()

    @user_errors_as_gradio
    def upscale(single_path, batch_paths, folder, folder_out, resize_mode, by, w, h, crop_, first, second,
                second_visibility, open_tab):
        batch_paths = [p for p in batch_paths or [] if p]
        if open_tab is None:
            open_tab = 0 if single_path else 1 if batch_paths else 2 if (folder or "").strip() else 0
        params = ExtrasParams(resize_mode=int(resize_mode), upscaling_resize=float(by), upscaling_resize_w=int(w),
                              upscaling_resize_h=int(h), upscaling_crop=bool(crop_), upscaler_1=first,
                              upscaler_2=second, extras_upscaler_2_visibility=float(second_visibility))
        if open_tab == 2:
            params.validate()  # before the folder is listed: the first mistake is the one reported
            target = Path(folder_out.strip()).expanduser() if (folder_out or "").strip() else None
            processed = manager.extras(FolderSources(folder), params, outdir, output_dir=target)
        else:
            paths = [single_path] if open_tab == 0 and single_path else batch_paths if open_tab == 1 else []
            if not paths:
                raise UserError("nothing to upscale: add a picture first")
            processed = manager.extras([_source(p) for p in paths], params, outdir)
        text = processed.infotexts[0] if processed.infotexts else ""
        note = "".join(f"<p>Warning: {html.escape(w)}</p>" for w in processed.warnings)
        # a folder chosen by hand may be where gradio will not serve files from: send those pictures themselves
        pictures = [str(p) for p in processed.paths] if open_tab != 2 or not (folder_out or "").strip() else \
            processed.images
        return pictures, f"<p>{html.escape(text)}</p>{note}"

    run.click(upscale, inputs=[single, batch, input_dir, output_dir, mode, scale, width, height, crop, upscaler_1,
                               upscaler_2, visibility, tab], outputs=[gallery, info], api_name="extras")
