"""The img2img tab: A1111's five input sub-tabs (img2img, Sketch, Inpaint, Inpaint sketch, Inpaint upload), its
fields and defaults, and one `img2img` endpoint the Generate button and API clients share.

The editors' values become an (init image, mask) pair in `editor_to_init_mask`, a pure function; the pixel work
after that (normalising, resizing, mask blur, compositing) is the engine's (img_ops.py, masks.py, img2img.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from ..engine import samplers
from ..engine.errors import UserError
from ..engine.imaging.ops import RESIZE_MODES, flatten, scale_to_size
from ..engine.imaging.open import check_decoded, open_limited
from ..engine.jobs.img2img import MAX_INIT_PIXELS
from ..engine.manager import PipelineManager
from ..engine.imaging.masks import mask_to_l
from ..engine.params import INPAINT_AREAS, MASK_MODES, MASKED_CONTENT, GenerationParams
from ..scripts.jobs import run_job
from . import live, lora_browser, scripts_panel
from .common import (
    follow_native_size,
    label_of,
    radio_for,
    seed_controls,
    size_sliders,
    slider_for,
    user_errors_as_gradio,
)
from .image_inputs import limit_editor, limit_image

# A1111's sub-tabs in A1111's order (the index is A1111's `mode`); "Batch" is not built.
MODES = ["img2img", "Sketch", "Inpaint", "Inpaint sketch", "Inpaint upload"]
IMG2IMG, SKETCH, INPAINT, INPAINT_SKETCH, INPAINT_UPLOAD = MODES
INPAINT_MODES = (INPAINT, INPAINT_SKETCH, INPAINT_UPLOAD)
TAB_IDS = {IMG2IMG: "img2img_img2img_tab", SKETCH: "img2img_sketch_tab", INPAINT: "img2img_inpaint_tab",
           INPAINT_SKETCH: "img2img_inpaint_sketch_tab", INPAINT_UPLOAD: "img2img_inpaint_upload_tab"}
SIZE_MODES = ["Resize to", "Resize by"]


# --- editor values → (init image, mask) ----------------------------------------------------------------


def _pil(image, what: str = "Image") -> Image.Image | None:
    """A PIL image from what gradio hands over (PIL, numpy array or file path), None stays None. A file is
    size-checked on its header before it is decoded (the components check uploads the same way, before gradio
    decodes them); an image already in memory is checked too, so it goes no further."""
    if image is None:
        return None
    if isinstance(image, (Image.Image, np.ndarray)):
        check_decoded(image, MAX_INIT_PIXELS, what)
        return image if isinstance(image, Image.Image) else Image.fromarray(image)
    if isinstance(image, dict) and image.get("path"):  # a FileData-like dict
        image = image["path"]
    if isinstance(image, (str, Path, bytes)):
        return open_limited(image, MAX_INIT_PIXELS, what)
    raise UserError(f"Cannot read an image from a {type(image).__name__}")


def _rgba(image: Image.Image, size: tuple[int, int] | None = None) -> Image.Image:
    """RGBA (8-bit first, so a 16-bit image is scaled rather than clipped), stretched to `size` if given."""
    image = flatten(image).convert("RGBA") if image.mode in ("I", "I;16", "I;16B", "I;16L", "F") \
        else image.convert("RGBA")
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), resample=Image.Resampling.NEAREST)
    return image


def editor_composite(value: dict | None) -> Image.Image | None:
    """The editor's flattened picture: its "composite" when the browser sent one, else the background with
    the layers drawn over it (API callers may send only background + layers)."""
    if not value:
        return None
    composite = _pil(value.get("composite"), "Composite image")
    if composite is not None:
        return composite
    background = _pil(value.get("background"), "Background image")
    layers = [_pil(layer, f"Layer {number}")
              for number, layer in enumerate(value.get("layers") or [], 1) if layer is not None]
    if background is None and not layers:
        return None
    out = _rgba(background) if background is not None else Image.new("RGBA", layers[0].size, (0, 0, 0, 0))
    for layer in layers:
        out.alpha_composite(_rgba(layer, out.size))
    return out


def layers_mask(value: dict, size: tuple[int, int]) -> Image.Image:
    """Inpaint: the union of what was drawn on the layers, "L" at `size`, white = regenerate. A layer with
    transparency counts where its alpha is over half (A1111's create_binary_mask with mask_round; the brush
    colour does not matter); a fully opaque layer is taken as a greyscale mask (an API client's upload)."""
    out = Image.new("L", size, 0)
    for number, layer in enumerate(value.get("layers") or [], 1):
        layer = _pil(layer, f"Layer {number}")
        if layer is None:
            continue
        mask = mask_to_l(layer)
        if mask.size != tuple(size):
            mask = mask.resize(tuple(size), resample=Image.Resampling.NEAREST)
        out = Image.fromarray(np.maximum(np.asarray(out), np.asarray(mask)), "L")
    return out


def sketch_mask(original: Image.Image, sketched: Image.Image) -> Image.Image:
    """Inpaint sketch: 255 where the sketch differs from the original (A1111:
    `np.any(image != orig, axis=-1)`). Compared after flattening onto white, so pixels that are transparent in
    both count as equal whatever colour the canvas left under them, plus where the alpha changed."""
    size = sketched.size
    original, sketched = _rgba(original, size), _rgba(sketched, size)
    flat_o, flat_s = np.asarray(flatten(original)), np.asarray(flatten(sketched))
    alpha_o, alpha_s = np.asarray(original.getchannel("A")), np.asarray(sketched.getchannel("A"))
    changed = np.any(flat_o != flat_s, axis=-1) | (alpha_o != alpha_s)
    return Image.fromarray(changed.astype(np.uint8) * 255, "L")


def editor_to_init_mask(mode: str, value: dict | None, mask_alpha: float = 0.0,
                        mask_blur: float = 0) -> tuple[Image.Image, Image.Image | None]:
    """A gradio ImageEditor value ({"background", "layers", "composite"}, images as PIL / numpy / paths) →
    (init image, mask or None) for one sub-tab, as A1111's img2img() builds them:

    Sketch: the composite (what is on the canvas) is the init image; no mask.
    Inpaint: the background is the init image; the drawn layers are the mask (layers_mask).
    Inpaint sketch: the mask is where the composite differs from the background, dimmed by "Mask
    transparency" (0–100); the init image is the sketch (blurred by mask blur) over the background through
    that blurred mask, as A1111 does before the mask reaches the engine (which blurs it again for the overlay).

    Raises UserError when the editor holds no image."""
    value = value or {}
    if mode == SKETCH:
        image = editor_composite(value)
        if image is None:
            raise UserError("Sketch: no image; upload one (or draw) in the Sketch tab first")
        return image, None
    background = _pil(value.get("background"), "Background image")
    if mode == INPAINT:
        if background is None:
            raise UserError("Inpaint: no image; upload one in the Inpaint tab, then paint the mask over it")
        return background, layers_mask(value, background.size)
    if mode == INPAINT_SKETCH:
        sketched = editor_composite(value)
        if background is None or sketched is None:
            raise UserError("Inpaint sketch: no image; upload one in the Inpaint sketch tab, then paint over it")
        original = _rgba(background, sketched.size)
        sketched = _rgba(sketched)
        mask = sketch_mask(original, sketched)
        mask = ImageEnhance.Brightness(mask).enhance(1 - float(mask_alpha or 0) / 100)
        blur = ImageFilter.GaussianBlur(float(mask_blur or 0))
        init = Image.composite(sketched.filter(blur), original, mask.filter(blur))
        return init, mask
    raise UserError(f"Unknown editor mode {mode!r}; expected one of {SKETCH}, {INPAINT}, {INPAINT_SKETCH}")


def mode_name(mode: str | int) -> str:
    """A sub-tab name from its name (case-insensitive) or A1111's index (0–4)."""
    if isinstance(mode, (int, float)) and not isinstance(mode, bool) and int(mode) == mode \
            and 0 <= int(mode) < len(MODES):
        return MODES[int(mode)]
    if isinstance(mode, str):
        text = mode.strip()
        if text.isdigit() and int(text) < len(MODES):
            return MODES[int(text)]
        for name in MODES:
            if name.lower() == text.lower():
                return name
    raise UserError(f"Unknown img2img mode {mode!r}; expected one of {', '.join(MODES)} (or 0-4)")


def _choice(value, choices, what: str) -> int:
    """The index of a radio value (its label, case-insensitive, or the index itself)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and int(value) == value \
            and 0 <= int(value) < len(choices):
        return int(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        lowered = [c.lower() for c in choices]
        if value.strip().lower() in lowered:
            return lowered.index(value.strip().lower())
        if value.strip().isdigit() and int(value) < len(choices):
            return int(value)
    raise UserError(f"Unknown {what} {value!r}; expected one of {', '.join(choices)}")


def init_and_mask(mode: str, init_image=None, mask=None, sketch=None, inpaint=None, inpaint_sketch=None,
                  inpaint_image=None, mask_alpha: float = 0.0,
                  mask_blur: float = 0) -> tuple[Image.Image, Image.Image | None]:
    """(init image, mask) for a request, from whichever inputs its mode uses:
    img2img: init_image. Sketch / Inpaint / Inpaint sketch: that tab's editor value.
    Inpaint upload: inpaint_image (the sub-tab's own upload; init_image when not given, so an API client
    can send `init_image` + `mask` alone) and mask."""
    mode = mode_name(mode)
    if mode == IMG2IMG:
        if init_image is None:
            raise UserError("img2img: no init image; upload one in the img2img tab first")
        return _pil(init_image, "Init image"), None
    if mode == INPAINT_UPLOAD:
        image = _pil(inpaint_image if inpaint_image is not None else init_image, "Image to inpaint")
        if image is None:
            raise UserError("Inpaint upload: no image; upload the image to inpaint first")
        if mask is None:
            raise UserError("Inpaint upload: no mask; upload a mask (white = regenerate)")
        return image, _pil(mask, "Mask")
    editor = {SKETCH: sketch, INPAINT: inpaint, INPAINT_SKETCH: inpaint_sketch}[mode]
    return editor_to_init_mask(mode, editor, mask_alpha, mask_blur)


def resize_label(size: tuple[int, int] | None, scale: float) -> str:
    """A1111's "Resize by" note: the size the scale gives for the current image."""
    if not size:
        return "resize: no image selected"
    w, h = scale_to_size(int(size[0]), int(size[1]), float(scale))
    return f"resize: from {size[0]}x{size[1]} to {w}x{h}"


# --- the tab --------------------------------------------------------------------------------------------


@dataclass
class Img2ImgTab:
    """The components other tabs wire "send to img2img / inpaint" buttons to. To switch sub-tab from a handler,
    output `switch_to(mode)` to `[tabs, mode]` (the mode radio is what the Generate button reads; selecting a
    Tab programmatically does not fire its select event)."""
    tabs: gr.Tabs
    tab_ids: dict[str, str]
    mode: gr.Radio  # hidden; the selected sub-tab's name (MODES)
    init_image: gr.Image  # img2img sub-tab
    sketch: gr.ImageEditor
    inpaint: gr.ImageEditor  # set it to an image: the background (no mask drawn yet)
    inpaint_sketch: gr.ImageEditor
    inpaint_image: gr.Image  # Inpaint upload: image
    inpaint_mask: gr.Image  # Inpaint upload: mask
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    sampler: gr.Dropdown
    scheduler: gr.Dropdown
    steps: gr.Slider
    cfg_scale: gr.Slider
    seed: gr.Number
    width: gr.Slider
    height: gr.Slider
    denoising_strength: gr.Slider
    gallery: gr.Gallery
    info: gr.Textbox
    extra: dict = field(default_factory=dict)
    script_fields: list = field(default_factory=list)  # scripts' (component, infotext key or fn), for pasting

    def switch_to(self, mode: str | int) -> tuple:
        """Updates for [tabs, mode]: select a sub-tab and make it the Generate mode."""
        name = mode_name(mode)
        return gr.Tabs(selected=self.tab_ids[name]), name


def _editor(label: str, elem_id: str, brush: gr.Brush | None = None) -> gr.ImageEditor:
    # type="pil", RGBA so the layers keep their alpha; png so a value set from Python is not made lossy (webp);
    # limited: every part's size is checked on its header before gradio decodes it
    return limit_editor(gr.ImageEditor(label=label, type="pil", image_mode="RGBA", format="png", layers=False,
                                       brush=brush, sources=("upload", "clipboard"), elem_id=elem_id, height=480))


def build(manager: PipelineManager, outdir: Path, checkpoint: gr.Dropdown | None = None,
          scripts=None) -> Img2ImgTab:
    """Build the tab's contents inside the current gr.Tab; `scripts`: the ScriptSystem whose img2img scripts
    it shows."""
    # One namespace for the panel builders and the wiring, so each helper takes only what it builds or reads.
    ui = SimpleNamespace(last=gr.State({"infotexts": [], "seeds": []}), scripts=scripts)
    outdir = Path(outdir)
    _prompt_panel(ui, manager)
    with gr.Row():
        with gr.Column():
            _input_tabs(ui)
            _sampling_controls(ui, manager)
            _inpaint_controls(ui)
            ui.script_inputs = scripts_panel.build(scripts.img2img if scripts else None, "img2img")
        _output_panel(ui)
    _wire_generate(ui, manager, outdir, checkpoint)
    follow_native_size(manager, checkpoint, ui.width, ui.height)
    _wire_mode_switching(ui)
    _wire_resize_note(ui)
    _wire_tokens_and_gallery(ui, manager)

    return Img2ImgTab(
        tabs=ui.tabs, tab_ids=dict(TAB_IDS), mode=ui.mode, init_image=ui.init_image, sketch=ui.sketch,
        inpaint=ui.inpaint, inpaint_sketch=ui.inpaint_sketch, inpaint_image=ui.inpaint_image,
        inpaint_mask=ui.inpaint_mask, prompt=ui.prompt, negative_prompt=ui.negative, sampler=ui.sampler,
        scheduler=ui.scheduler, steps=ui.steps, cfg_scale=ui.cfg_scale, seed=ui.seeds.seed, width=ui.width,
        height=ui.height, denoising_strength=ui.strength, gallery=ui.gallery, info=ui.info,
        extra={"resize_mode": ui.resize_mode, "scale": ui.scale, "size_mode": ui.size_mode,
               "mask_blur": ui.mask_blur, "mask_mode": ui.mask_mode, "masked_content": ui.masked_content,
               "inpaint_area": ui.inpaint_area, "padding": ui.padding, "mask_alpha": ui.mask_alpha,
               "subseed": ui.seeds.subseed, "subseed_strength": ui.seeds.subseed_strength,
               "generate": ui.generate},
        script_fields=scripts_panel.infotext_fields(ui.scripts.img2img if ui.scripts else None))


def _prompt_panel(ui: SimpleNamespace, manager: PipelineManager) -> None:
    """Prompt and negative prompt with their token counters and the LoRA browser; Generate and Interrupt."""
    with gr.Row():
        with gr.Column(scale=3):
            ui.prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt", elem_id="img2img_prompt")
            ui.prompt_tokens = gr.Markdown("0/75", elem_classes="token-counter")
            ui.negative = gr.Textbox(label="Negative prompt", lines=2, placeholder="Negative prompt",
                                     elem_id="img2img_neg_prompt")
            ui.negative_tokens = gr.Markdown("0/75", elem_classes="token-counter")
            lora_browser.build(manager, ui.prompt, api=False)
        with gr.Column(scale=1, min_width=160):
            ui.generate = gr.Button("Generate", variant="primary", elem_id="img2img_generate")
            with gr.Row():
                ui.interrupt = gr.Button("Interrupt", elem_id="img2img_interrupt")
                ui.skip = gr.Button("Skip", elem_id="img2img_skip")


def _input_tabs(ui: SimpleNamespace) -> None:
    """The five input sub-tabs, the hidden mode radio and Inpaint sketch's mask transparency."""
    # Hidden radios hold the selected sub-tabs; unlike gr.State they are endpoint parameters.
    ui.mode = gr.Radio(MODES, value=IMG2IMG, label="Mode", visible=False)
    with gr.Tabs(elem_id="img2img_mode_tabs") as ui.tabs:
        with gr.Tab("img2img", id=TAB_IDS[IMG2IMG]) as ui.tab_img2img:
            ui.init_image = limit_image(gr.Image(label="Image for img2img", type="pil", image_mode=None,
                                                 format="png", sources=("upload", "clipboard"),
                                                 elem_id="img2img_image", height=480), "Init image")
        with gr.Tab("Sketch", id=TAB_IDS[SKETCH]) as ui.tab_sketch:
            ui.sketch = _editor("Image for img2img (sketch over it)", "img2img_sketch")
        with gr.Tab("Inpaint", id=TAB_IDS[INPAINT]) as ui.tab_inpaint:
            ui.inpaint = _editor("Image for inpainting with mask (paint the area to regenerate)",
                                 "img2img_inpaint",
                                 gr.Brush(colors=["#ffffff", "#000000", "rgb(204, 50, 50)"],
                                          default_color="#ffffff", color_mode="defaults"))
        with gr.Tab("Inpaint sketch", id=TAB_IDS[INPAINT_SKETCH]) as ui.tab_inpaint_sketch:
            ui.inpaint_sketch = _editor("Color sketch inpainting", "img2img_inpaint_sketch")
        with gr.Tab("Inpaint upload", id=TAB_IDS[INPAINT_UPLOAD]) as ui.tab_inpaint_upload:
            ui.inpaint_image = limit_image(gr.Image(label="Image", type="pil", image_mode=None, format="png",
                                                    sources=("upload", "clipboard"),
                                                    elem_id="img2img_inpaint_image"), "Image to inpaint")
            ui.inpaint_mask = limit_image(gr.Image(label="Mask (white = regenerate)", type="pil", image_mode=None,
                                                   format="png", sources=("upload", "clipboard"),
                                                   elem_id="img2img_inpaint_mask"), "Mask")
    ui.mask_alpha = gr.Slider(0, 100, value=0, step=1, label="Mask transparency", visible=False)


def _sampling_controls(ui: SimpleNamespace, manager: PipelineManager) -> None:
    """Resize mode, sampler, steps, size ("Resize to" / "Resize by"), batch, CFG, denoising strength, seeds."""
    d = GenerationParams()
    ui.resize_mode = gr.Radio(RESIZE_MODES, value=RESIZE_MODES[0], label=label_of("resize_mode"))
    with gr.Row():
        ui.sampler = gr.Dropdown(samplers.sampler_names(), value=d.sampler_name, label=label_of("sampler_name"))
        ui.scheduler = gr.Dropdown(samplers.schedule_labels(), value=d.scheduler, label=label_of("scheduler"))
    ui.steps = slider_for("steps")
    ui.size_mode = gr.Radio(SIZE_MODES, value=SIZE_MODES[0], label="Size", visible=False)
    with gr.Tabs():
        with gr.Tab("Resize to") as ui.tab_resize_to, gr.Row():
            ui.width, ui.height = size_sliders(manager)
        with gr.Tab("Resize by") as ui.tab_resize_by:
            ui.scale = gr.Slider(0.05, 4.0, value=1.0, step=0.05, label="Scale")
            ui.scale_note = gr.Markdown(resize_label(None, 1.0))
    with gr.Row():
        ui.n_iter = slider_for("n_iter")
        ui.batch_size = slider_for("batch_size")
    ui.cfg_scale = slider_for("cfg_scale", minimum=1)  # A1111's slider starts at 1; the API accepts 0
    ui.strength = slider_for("denoising_strength")
    ui.seeds = seed_controls(ui.last)


def _inpaint_controls(ui: SimpleNamespace) -> None:
    """Mask blur, mode, fill, area and padding: shown for the inpaint sub-tabs only."""
    with gr.Column(visible=False) as ui.inpaint_controls:
        ui.mask_blur = slider_for("mask_blur")
        ui.mask_mode = radio_for("inpainting_mask_invert")
        ui.masked_content = radio_for("inpainting_fill")
        with gr.Row():
            ui.inpaint_area = radio_for("inpaint_full_res")
            ui.padding = slider_for("inpaint_full_res_padding")


def _output_panel(ui: SimpleNamespace) -> None:
    """The gallery and generation info, and the per-mode image sizes the "Resize by" note reads."""
    with gr.Column():
        ui.gallery = gr.Gallery(label="Output", format="png", columns=2, object_fit="contain", height="auto",
                                elem_id="img2img_gallery")
        ui.info = gr.Textbox(label="Generation info", lines=4, interactive=False)
        ui.sizes = gr.State({})  # mode → (w, h) of its image, for the "Resize by" note


def _img2img_handler(manager: PipelineManager, outdir: Path, scripts=None):
    """The Generate button's and the `/img2img` endpoint's function."""
    @user_errors_as_gradio
    def img2img(mode, init_image, mask, prompt, negative_prompt, sampler_name, scheduler, steps, width, height,
                n_iter, batch_size, cfg_scale, seed, denoising_strength, resize_mode, mask_blur, mask_mode,
                masked_content, inpaint_area, inpaint_full_res_padding, sketch=None, inpaint=None,
                inpaint_sketch=None, inpaint_image=None, mask_alpha=0, size_mode="Resize to", scale=1.0,
                subseed=-1, subseed_strength=0.0, seed_resize_from_w=0, seed_resize_from_h=0, checkpoint=None,
                progress=gr.Progress(), *script_values):  # noqa: B008  (gradio's way to ask for a progress tracker)
        mode = mode_name(mode)
        inpainting = mode in INPAINT_MODES
        blur = int(mask_blur)
        image, mask = init_and_mask(mode, init_image, mask, sketch, inpaint, inpaint_sketch, inpaint_image,
                                    mask_alpha, blur)
        if _choice(size_mode, SIZE_MODES, "size mode") == 1:
            width, height = scale_to_size(image.width, image.height, float(scale))
        request = GenerationParams(
            prompt=prompt or "", negative_prompt=negative_prompt or "", sampler_name=sampler_name,
            scheduler=scheduler, steps=int(steps), width=int(width), height=int(height), n_iter=int(n_iter),
            batch_size=int(batch_size), cfg_scale=float(cfg_scale), seed=int(seed), subseed=int(subseed),
            subseed_strength=float(subseed_strength), seed_resize_from_w=int(seed_resize_from_w),
            seed_resize_from_h=int(seed_resize_from_h), model=checkpoint or None,
            denoising_strength=float(denoising_strength),
            resize_mode=_choice(resize_mode, RESIZE_MODES, "resize mode"))
        if inpainting:
            request = request.replace(
                mask_blur=blur, inpainting_mask_invert=bool(_choice(mask_mode, MASK_MODES, "mask mode")),
                inpainting_fill=_choice(masked_content, MASKED_CONTENT, "masked content"),
                inpaint_full_res=bool(_choice(inpaint_area, INPAINT_AREAS, "inpaint area")),
                inpaint_full_res_padding=int(inpaint_full_res_padding))
        args = scripts_panel.script_args(script_values)
        processed = yield from live.run_with_previews(
            lambda task: run_job(scripts, manager, request, outdir, task, args, image, mask if inpainting else None,
                                 img2img=True,
                                 on_progress=lambda done, total: progress((done, total), desc="Sampling")),
            manager, (request.width, request.height), lambda preview: ([preview], gr.update(), gr.update()))
        texts = processed.infotexts
        note = "\n\nInterrupted." if processed.interrupted else ""
        note += "".join(f"\n\nWarning: {w}" for w in processed.warnings)
        state = {"infotexts": texts, "seeds": [p.seed for p in processed.params]}
        yield scripts_panel.result_outputs(processed)[0], (texts[0] if texts else "") + note, state

    return img2img


def _wire_generate(ui: SimpleNamespace, manager: PipelineManager, outdir: Path,
                   checkpoint: gr.Dropdown | None) -> None:
    """Generate (the `/img2img` endpoint: the input order is its parameter order) and Interrupt."""
    inputs = [ui.mode, ui.init_image, ui.inpaint_mask, ui.prompt, ui.negative, ui.sampler, ui.scheduler, ui.steps,
              ui.width, ui.height, ui.n_iter, ui.batch_size, ui.cfg_scale, ui.seeds.seed, ui.strength,
              ui.resize_mode, ui.mask_blur, ui.mask_mode, ui.masked_content, ui.inpaint_area, ui.padding,
              ui.sketch, ui.inpaint, ui.inpaint_sketch, ui.inpaint_image, ui.mask_alpha, ui.size_mode, ui.scale,
              *ui.seeds.inputs]
    # the checkpoint always holds its place: the script values follow it
    inputs.append(checkpoint if checkpoint is not None else gr.State(None))
    inputs += ui.script_inputs
    ui.generate.click(_img2img_handler(manager, outdir, ui.scripts), inputs=inputs, outputs=[ui.gallery, ui.info, ui.last],
                      api_name="img2img")
    ui.interrupt.click(manager.interrupt, api_name=False, queue=False)
    ui.skip.click(manager.skip, api_name=False, queue=False)


def _wire_mode_switching(ui: SimpleNamespace) -> None:
    """Sub-tab selection → the mode radio; the mode → which controls show."""
    for name, tab in ((IMG2IMG, ui.tab_img2img), (SKETCH, ui.tab_sketch), (INPAINT, ui.tab_inpaint),
                      (INPAINT_SKETCH, ui.tab_inpaint_sketch), (INPAINT_UPLOAD, ui.tab_inpaint_upload)):
        tab.select(lambda name=name: name, outputs=ui.mode, queue=False, api_name=False, show_progress="hidden")
    for name, tab in zip(SIZE_MODES, (ui.tab_resize_to, ui.tab_resize_by)):
        tab.select(lambda name=name: name, outputs=ui.size_mode, queue=False, api_name=False,
                   show_progress="hidden")

    def show_for_mode(mode, sizes, scale):
        name = mode_name(mode)
        return (gr.update(visible=name in INPAINT_MODES), gr.update(visible=name == INPAINT_SKETCH),
                resize_label(sizes.get(name), scale))

    ui.mode.change(show_for_mode, inputs=[ui.mode, ui.sizes, ui.scale],
                   outputs=[ui.inpaint_controls, ui.mask_alpha, ui.scale_note],
                   queue=False, api_name=False, show_progress="hidden")


def _wire_resize_note(ui: SimpleNamespace) -> None:
    """The "Resize by" note: remember each sub-tab's image size when an image arrives (editors: on upload, so a
    stroke does not send the whole canvas to the server)."""
    def remember(name, getter):
        def fn(sizes, mode, scale, value):
            image = getter(value)
            sizes = {**sizes, name: image.size} if image is not None else {
                k: v for k, v in sizes.items() if k != name}
            return sizes, resize_label(sizes.get(mode_name(mode)), scale)
        return fn

    def background(value):
        image = _pil((value or {}).get("background"))
        return image if image is not None else editor_composite(value)

    for name, component, getter, events in (
            (IMG2IMG, ui.init_image, _pil, ("change",)), (INPAINT_UPLOAD, ui.inpaint_image, _pil, ("change",)),
            (SKETCH, ui.sketch, background, ("upload", "clear")),
            (INPAINT, ui.inpaint, background, ("upload", "clear")),
            (INPAINT_SKETCH, ui.inpaint_sketch, background, ("upload", "clear"))):
        for event in events:
            getattr(component, event)(remember(name, getter), inputs=[ui.sizes, ui.mode, ui.scale, component],
                                      outputs=[ui.sizes, ui.scale_note], queue=False, api_name=False,
                                      show_progress="hidden")
    ui.scale.change(lambda sizes, mode, s: resize_label(sizes.get(mode_name(mode)), s),
                    inputs=[ui.sizes, ui.mode, ui.scale], outputs=ui.scale_note, queue=False, api_name=False,
                    show_progress="hidden")


def _wire_tokens_and_gallery(ui: SimpleNamespace, manager: PipelineManager) -> None:
    """The prompts' token counters and the gallery selection's generation info; none of them is an endpoint."""
    def count_tokens(text, steps):
        used, target = manager.token_count(text or "", steps)
        return f"{used}/{target}"

    for box, counter in ((ui.prompt, ui.prompt_tokens), (ui.negative, ui.negative_tokens)):
        box.change(count_tokens, inputs=[box, ui.steps], outputs=counter, queue=False, show_progress="hidden",
                   api_name=False)

    def show_info(state, evt: gr.SelectData):
        texts = state["infotexts"]
        return texts[evt.index] if 0 <= evt.index < len(texts) else ""

    ui.gallery.select(show_info, inputs=ui.last, outputs=ui.info, api_name=False)
