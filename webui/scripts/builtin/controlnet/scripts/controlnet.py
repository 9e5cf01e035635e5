"""ControlNet as the sd-webui-controlnet extension presents it: an always-on script with one tab per unit, the
API's `alwayson_scripts: {"controlnet": {"args": [unit, …]}}` (the extension's field names; `args: []` turns it
off) and its /controlnet/* routes. The work is the engine's (webui/engine/control): this file maps the UI and
the API onto units and registers them on the job."""
from __future__ import annotations

from webui.engine.control import files, preprocess, residuals
from webui.engine.control.units import CONTROL_MODES, HR_OPTIONS, RESIZE_MODES, ControlUnit
from webui.engine.errors import UserError
from webui.scripts import callbacks, script_api as scripts, shared

TITLE = "ControlNet"
UNITS = 3  # the extension's default "Multi-ControlNet: ControlNet unit number" (setting control_net_unit_count)
# one unit's controls, in the order they are the script's arguments
UNIT_FIELDS = ("enabled", "image", "module", "model", "weight", "resize_mode", "processor_res", "threshold_a",
               "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode", "hr_option",
               "cfg_resolution_weighting")


def unit_count() -> int:
    """Units per tab: the setting when the app's manager is known (read when the UI is built)."""
    manager = shared.manager
    return int(manager.settings.control_net_unit_count) if manager is not None else UNITS


def annotators_dir():
    return files.annotators_dir(shared.manager.controlnet_dir) if shared.manager is not None else None


def module_names() -> list[str]:
    return preprocess.modules(annotators_dir())


def unavailable_note() -> str:
    from webui.engine.control import annotators

    missing = annotators.missing(annotators_dir())
    return ("Preprocessors not available (their annotator file is not here): "
            + "; ".join(f"**{m}**: {what}" for m, what in missing.items())) if missing else ""


def model_titles() -> list[str]:
    folder = shared.manager.controlnet_dir if shared.manager is not None else None
    return ["None", *(f.title for f in files.list_files(folder))] if folder else ["None"]


def _image(value):
    """A unit's picture from the UI (PIL) or the API (base64, or the extension's {"image": …, "mask": …})."""
    from webui.engine.imaging.open import open_base64
    from webui.engine.jobs.img2img import MAX_INIT_PIXELS

    if isinstance(value, dict):
        value = value.get("image")
    if value is None or hasattr(value, "convert"):
        return value
    return open_base64(value, MAX_INIT_PIXELS, "ControlNet image")


def editor_picture(value):
    """The unit's canvas (a gradio ImageEditor value: the uploaded picture as background, the brush strokes as
    layers) → (picture, mask or None). The picture keeps real transparency (an inpaint unit's mask, as the
    extension reads it) and drops an alpha channel that is opaque everywhere; strokes are the mask, white where
    drawn (the img2img inpaint rule). A plain picture (tests, scripts) passes through."""
    if not isinstance(value, dict) or "background" not in value:
        return _image(value), None
    from PIL import Image

    from webui.ui.img2img import layers_mask

    picture = value.get("background")
    if picture is None:
        return None, None
    if not hasattr(picture, "convert"):
        picture = Image.fromarray(picture) if hasattr(picture, "shape") else Image.open(picture)
    if picture.mode in ("RGBA", "LA") and picture.getchannel("A").getextrema()[0] == 255:
        picture = picture.convert("RGB")
    mask = layers_mask(value, picture.size)
    return picture, (mask if mask.getextrema()[1] > 0 else None)


def units_from_args(args) -> list[ControlUnit]:
    """The API's unit dicts (the slots after them keep the UI's defaults, as A1111 fills a script's arguments),
    or the UI's flat values (UNIT_FIELDS per unit)."""
    if not args:
        return []
    given = [a for a in args if isinstance(a, dict) and "background" not in a]  # not a unit canvas's value
    if given:
        units = []
        for data in given:
            unit = ControlUnit.from_dict(data)
            picture = unit.image
            unit.image = _image(picture)
            if unit.mask is None and isinstance(picture, dict) and picture.get("mask") is not None:
                unit.mask = picture["mask"]
            if unit.mask is not None:
                unit.mask = _image(unit.mask)
            units.append(unit)
        return units
    if len(args) % len(UNIT_FIELDS):
        raise UserError(f"ControlNet takes {len(UNIT_FIELDS)} values per unit, got {len(args)}")
    units = []
    for start in range(0, len(args), len(UNIT_FIELDS)):
        values = dict(zip(UNIT_FIELDS, args[start:start + len(UNIT_FIELDS)]))
        if values["enabled"]:
            values["image"], values["mask"] = editor_picture(values["image"])
            units.append(ControlUnit(**values).checked())
    return units


class Script(scripts.Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr

        controls = []
        self.infotext_fields = []
        tab = "img2img" if is_img2img else "txt2img"
        with gr.Accordion(TITLE, open=False, elem_id=f"{tab}_controlnet"):
            with gr.Tabs():
                for index in range(unit_count()):
                    with gr.Tab(f"ControlNet Unit {index}"):
                        unit = self._unit_ui(gr, f"{tab}_controlnet_{index}")
                    controls += unit
                    self.infotext_fields += pasted_fields(index, dict(zip(UNIT_FIELDS, unit)))
            note = unavailable_note()
            if note:
                gr.Markdown(note)
        return controls

    def _unit_ui(self, gr, prefix):
        from webui.ui.image_inputs import limit_editor

        enabled = gr.Checkbox(label="Enable", value=False, elem_id=f"{prefix}_enable")
        with gr.Row():
            # a canvas as the extension's: upload the picture, paint a mask with the brush (inpaint units)
            image = limit_editor(gr.ImageEditor(
                label="Control image (brush: mask)", type="pil", image_mode="RGBA", format="png", layers=False,
                sources=("upload", "clipboard"), brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                elem_id=f"{prefix}_image"))
            shown = gr.Image(label="Preprocessor preview", type="pil", interactive=False)
        with gr.Row():
            module = gr.Dropdown(module_names(), value="none", label="Preprocessor")
            model = gr.Dropdown(model_titles(), value="None", label="Model", elem_id=f"{prefix}_model")
            refresh = gr.Button("🔄", size="sm")
            preview = gr.Button("💥 Preview", size="sm")
        weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Control Weight")
        with gr.Row():
            start = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Starting Control Step")
            end = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Ending Control Step")
        with gr.Row():
            resolution = gr.Slider(64, 2048, value=512, step=1, label="Preprocessor Resolution")
            # fractional steps: MLSD's thresholds are 0.1-scale, canny's are grey levels
            threshold_a = gr.Slider(-1, 255, value=-1, step=0.01, label="Threshold A (-1: the preprocessor's)")
            threshold_b = gr.Slider(-1, 255, value=-1, step=0.01, label="Threshold B (-1: the preprocessor's)")
        pixel_perfect = gr.Checkbox(label="Pixel Perfect", value=False)
        control_mode = gr.Radio(list(CONTROL_MODES), value=CONTROL_MODES[0], label="Control Mode")
        resize_mode = gr.Radio(list(RESIZE_MODES), value="Crop and Resize", label="Resize Mode")
        hr_option = gr.Radio(list(HR_OPTIONS), value="Both", label="Hires-Fix Option")
        cfg_weighting = gr.Checkbox(label="CFG resolution weighting (layer weight 64/h on the prompt's branch)",
                                    value=False)
        refresh.click(lambda: gr.update(choices=model_titles()), outputs=model, api_name=False)
        preview.click(_preview, inputs=[image, module, resolution, threshold_a, threshold_b], outputs=shown,
                      api_name=False)
        return [enabled, image, module, model, weight, resize_mode, resolution, threshold_a, threshold_b, start, end,
                pixel_perfect, control_mode, hr_option, cfg_weighting]

    def process(self, p, *args):
        units = [u for u in units_from_args(args) if u.enabled]
        if not units:
            return
        for unit in units:  # the extension's img2img: a unit without its own picture uses the init image (and mask)
            if unit.image is None and p.is_img2img and p.init_images:
                unit.image = p.init_images[0]
                if unit.mask is None:
                    unit.mask = p.image_mask
        folder = p.manager.controlnet_dir
        seed = p.all_seeds[0] if getattr(p, "all_seeds", None) else 0
        settings = p.manager.settings
        p.controlnet_maps = []
        p.extra_generation_params.update(residuals.register(
            p.patches, units, folder, p.width, p.height, seed, settings.control_net_model_cache_size,
            p.controlnet_maps))

    def postprocess(self, p, processed, *args):
        """The extension's results: the detected maps after the pictures (not saved, no infotext), unless
        "Do not append detectmap to output" is set."""
        maps = getattr(p, "controlnet_maps", None)
        if maps and not p.manager.settings.control_net_no_detectmap:
            processed.images.extend(maps)


def pasted_fields(index: int, components: dict) -> list:
    """PNG Info / ↙ for unit `index`: (component, fn(pasted fields) → value) pairs that restore everything its
    `ControlNet N` entry names except the picture; a pasted infotext without that entry disables the unit."""
    import gradio as gr

    key = f"ControlNet {index}"

    def unit_fields(pasted: dict) -> dict:
        try:
            return residuals.parse_infotext(str(pasted[key])) if key in pasted else {}
        except UserError:
            return {}

    def model_title(name):
        try:
            return files.find(name, shared.manager.controlnet_dir).title
        except (UserError, AttributeError, TypeError):
            return gr.update()  # not here: the unit keeps its model

    def field(name):
        def value(pasted: dict):
            fields = unit_fields(pasted)
            if name not in fields:
                return gr.update()
            return model_title(fields[name]) if name == "model" else fields[name]
        return value

    pairs = [(components["enabled"], lambda pasted: key in pasted)]
    for name in UNIT_FIELDS:
        if name not in ("enabled", "image") and name in components:
            pairs.append((components[name], field(name)))
    return pairs


def _preview(image, module, resolution, a, b):
    image = editor_picture(image)[0]
    if image is None:
        raise UserError("upload a control image first")
    return preprocess.run(module, image, int(resolution), float(a), float(b), annotators_dir=annotators_dir())


def add_routes(demo, app):
    from fastapi import Body

    from webui.api.responses import b64_image

    @app.get("/controlnet/version")
    def version():
        return {"version": 2}

    @app.get("/controlnet/model_list")
    def model_list():
        return {"model_list": model_titles()[1:]}

    @app.get("/controlnet/module_list")
    def module_list(alias_names: bool = False):
        names = module_names()
        detail = {name: {"model_free": name == "none", "sliders": []} for name in names}
        return {"module_list": names, "module_detail": detail}

    @app.get("/controlnet/control_types")
    def control_types():
        models = model_titles()[1:]
        return {"control_types": {"All": {"module_list": module_names(), "model_list": models,
                                          "default_option": "none", "default_model": "None"},
                                  "Canny": {"module_list": ["canny", "invert"],
                                            "model_list": [m for m in models if "canny" in m.lower()],
                                            "default_option": "canny", "default_model": "None"}}}

    @app.get("/controlnet/settings")
    def settings():
        return {"control_net_unit_count": unit_count()}

    @app.post("/controlnet/detect")
    def detect(body: dict = Body(...)):
        from fastapi import HTTPException

        try:
            module = body.get("controlnet_module", "none")
            maps = [preprocess.run(module, _image(image), int(body.get("controlnet_processor_res", 512)),
                                   float(body.get("controlnet_threshold_a", -1)),
                                   float(body.get("controlnet_threshold_b", -1)), annotators_dir=annotators_dir())
                    for image in body.get("controlnet_input_images", [])]
        except UserError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        return {"images": [b64_image(m) for m in maps], "info": "Success"}


callbacks.on_app_started(add_routes)
